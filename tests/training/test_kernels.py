"""The hand-written CPU kernels (convolution + pooling; batch norm over images; a dense layer's products over a sparse
input): the same functions as XLA's route, independent of the thread count, built without warnings and with the
constants Python assumes, and a clean fallback.

In CI (the CI environment variable set) the kernel tests fail, not skip, when the kernels cannot be built:
a build that breaks must not pass by running none of them.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistlab.models import build_model
from mnistlab.training.fastpath.kernels import build, ffi
from mnistlab.training.fastpath.layers import NormOp
from mnistlab.training.fastpath.layouts import LAYOUTS
from mnistlab.training.fastpath.lowering import Call, lower
from mnistlab.training.fastpath.ops import (
    conv_chwn,
    conv_direct,
    conv_pool,
    max_pool,
    pad_chwn,
    sparse_dense,
    spatial_padding,
)

IN_CI = bool(os.environ.get("CI"))
WHY_NOT = build.load("conv") or build.load("dense")
needs_kernels = pytest.mark.skipif(WHY_NOT is not None and not IN_CI, reason=f"kernels not built: {WHY_NOT}")
needs_compiler = pytest.mark.skipif(build.compiler() is None and not IN_CI, reason="no C++ compiler")


@pytest.fixture(autouse=True)
def kernels_even_where_they_do_not_pay_off(monkeypatch):
    """These tests are about the kernels themselves: they run on every CPU the kernels build on."""
    monkeypatch.setenv(build.SWITCH, "always")


def test_in_ci_the_kernels_are_built():
    if not IN_CI:
        pytest.skip("CI is not set: without a compiler the kernel tests skip")
    assert WHY_NOT is None, f"the CPU kernels did not build in CI: {WHY_NOT}"


def xla_conv_pool(x, kernel, pool, padding="valid"):
    """What the lowering computes without the kernels: im2col convolution, then pooling."""
    return max_pool(conv_chwn(x, kernel, (1, 1), padding), (pool, pool), (pool, pool), (1, 2))


CASES = [  # (channels, height, width, batch, kernel size, filters, pool, padding)
    (1, 28, 28, 64, 5, 10, 2, "valid"),  # the notebook CNN's first layer
    (10, 12, 12, 24, 5, 20, 2, "valid"),  # several input channels; a batch that is no multiple of 16
    (3, 9, 11, 5, 3, 17, 3, "valid"),  # 3x3 kernel, 3x3 pooling, odd sizes (cropped windows)
    (2, 10, 10, 16, 3, 33, 2, "same"),  # 'same' padding, more filters than one block of 16
    (1, 12, 12, 130, 5, 10, 2, "valid"),  # a batch past 64 (the direct convolution's tile) and no multiple of 16
    (4, 9, 9, 100, 3, 6, 2, "same"),  # another batch past 64
    (3, 9, 12, 16, 5, 7, 2, "same"),  # 'same' padding of 2 around a wider-than-high input (the crop's axes)
]


@pytest.mark.slow
@needs_kernels
@pytest.mark.parametrize("c,h,w,n,k,o,pool,padding", CASES)
def test_kernels_compute_what_xla_computes(c, h, w, n, k, o, pool, padding):
    rng = np.random.default_rng(c * 100 + k)
    x = jnp.asarray(rng.random((c, h, w, n), dtype=np.float32))
    kernel = jnp.asarray(rng.normal(size=(k, k, c, o)).astype(np.float32) * 0.3)

    def ours(x, kernel):
        return conv_pool(pad_chwn(x, kernel.shape, (1, 1), padding), kernel, pool)

    np.testing.assert_allclose(ours(x, kernel), xla_conv_pool(x, kernel, pool, padding), rtol=1e-5, atol=1e-5)
    weights = jnp.asarray(rng.normal(size=ours(x, kernel).shape).astype(np.float32))
    got = jax.grad(lambda x, w: jnp.sum(weights * ours(x, w)), (0, 1))(x, kernel)
    expected = jax.grad(lambda x, w: jnp.sum(weights * xla_conv_pool(x, w, pool, padding)), (0, 1))(x, kernel)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_kernels
@pytest.mark.parametrize(
    "c,h,w,n,k,o,pool,padding,winograd",
    [(*case, False) for case in CASES] + [(*case, True) for case in CASES if case[4] == 3 and case[0] >= 2],
)
def test_the_direct_convolution_computes_what_xla_computes(c, h, w, n, k, o, pool, padding, winograd, monkeypatch):
    """conv_direct (kernels/conv.cc, and winograd.cc's for 3x3 kernels over 2 channels or more):
    values and both gradients against the im2col route; tiles at the edges of the filters, the
    channels and the batch (a batch that is no multiple of 16 is padded)."""
    monkeypatch.setattr(ffi, "WINOGRAD", winograd)
    rng = np.random.default_rng(c * 10 + k)
    x = jnp.asarray(rng.random((c, h, w, n), dtype=np.float32))
    kernel = jnp.asarray(rng.normal(size=(k, k, c, o)).astype(np.float32) * 0.3)

    def ours(x, kernel):
        return conv_direct(x, kernel, spatial_padding(x.shape, kernel.shape, (1, 1), padding))

    def xla(x, kernel):
        return conv_chwn(x, kernel, (1, 1), padding)

    np.testing.assert_allclose(ours(x, kernel), xla(x, kernel), rtol=1e-5, atol=1e-5)
    weights = jnp.asarray(rng.normal(size=xla(x, kernel).shape).astype(np.float32))
    got = jax.grad(lambda x, w: jnp.sum(weights * ours(x, w)), (0, 1))(x, kernel)
    expected = jax.grad(lambda x, w: jnp.sum(weights * xla(x, w)), (0, 1))(x, kernel)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


WINOGRAD_CASES = [  # (channels, padded height, width, batch, filters, top, left, unpadded height, width)
    (16, 30, 30, 64, 16, 1, 1, 28, 28),  # the best preset's first stage (batches of 64)
    (16, 16, 16, 128, 32, 1, 1, 14, 14),
    (32, 16, 16, 128, 32, 1, 1, 14, 14),
    (2, 3, 3, 16, 7, 0, 0, 3, 3),  # one output, one block of filters and a part of another
    (3, 7, 6, 16, 5, 0, 0, 7, 6),  # odd output height: a last row of blocks half outside
    (5, 9, 12, 32, 13, 2, 1, 5, 7),  # odd width, a crop off the centre (padding 2 and 1), filters past two blocks
    (4, 5, 5, 48, 3, 1, 2, 3, 2),  # three vectors of 16 samples: a last block of one with AVX-512
]


@needs_kernels
@pytest.mark.parametrize("c,h,w,n,o,top,left,xh,xw", WINOGRAD_CASES)
def test_winograd_computes_what_the_direct_kernels_compute(c, h, w, n, o, top, left, xh, xw):
    """winograd.cc's forward pass and input gradient against conv.cc's: F(2x2, 3x3) sums in another
    order (and through its transforms), so the values agree to float32's rounding, not bit for bit."""
    rng = np.random.default_rng(c * 100 + o)
    x = jnp.asarray(rng.standard_normal((c, h, w, n), dtype=np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, c, o), dtype=np.float32))
    dy = jnp.asarray(rng.standard_normal((o, h - 2, w - 2, n), dtype=np.float32))

    def both(name, shape, *args, **attrs):
        call = lambda target: jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32))  # noqa: E731
        return [np.asarray(call(f"mnistlab_{name}{kind}")(*args, **attrs)) for kind in ("", "Winograd")]

    for direct, winograd in (
        both("ConvForward", (o, h - 2, w - 2, n), x, kernel),
        both("ConvInputGrad", (c, xh, xw, n), dy, kernel, top=np.int64(top), left=np.int64(left)),
    ):
        assert np.abs(direct).max() > 1  # sums of 9 x channels products of standard normal values
        np.testing.assert_allclose(winograd, direct, rtol=0, atol=2e-6 * np.abs(direct).max())
    assert ffi.winograd(kernel.shape, c) and not ffi.winograd((3, 3, 1, o), 1) and not ffi.winograd((5, 5, c, o), c)


@pytest.mark.slow
@needs_kernels
def test_a_tie_sends_the_gradient_to_the_first_maximum():
    x = jnp.zeros((1, 4, 4, 16), jnp.float32)  # every window ties: all outputs are 0
    kernel = jnp.ones((3, 3, 1, 1), jnp.float32)
    pooled = conv_pool(x, kernel, 2)
    assert pooled.shape == (1, 1, 1, 16) and not jnp.any(pooled)
    _, where = ffi.conv_pool_forward(x, kernel, 2)
    assert not jnp.any(where)  # window position 0: the first
    dx = jax.grad(lambda x: jnp.sum(conv_pool(x, kernel, 2)))(x)
    np.testing.assert_array_equal(dx[0, :3, :3, 0], np.ones((3, 3)))  # the 3x3 patch under position 0
    assert float(jnp.sum(dx[..., 0])) == 9.0


@pytest.mark.slow
@needs_kernels
def test_the_cnn_lowering_uses_the_kernels_and_keeps_keras_results():
    model = build_model("cnn")
    lowered, plain = lower(model, "chwn"), lower(model, "nhwc")
    assert lowered.kernels and not plain.kernels and lowered.signature != plain.signature
    x = jnp.asarray(np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32))
    params = [v.value for v in model.trainable_variables]
    np.testing.assert_allclose(lowered.apply(params, x), model(x), atol=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda p: lowered.apply(p, x, True, jax.random.key(0)))(params))
    # conv1 + pooling through conv_pool; conv2 (dropout before its pooling) through conv_direct
    assert jaxpr.count("mnistlab_ConvPoolForward") == 1 and jaxpr.count("mnistlab_ConvForward") == 1


NORM_CASES = [  # (channels, height, width, batch, ReLU after, padded rows of weight 0, gamma and beta)
    (16, 28, 28, 64, True, 0, True),  # the best preset's first stage (batches of 64)
    (3, 5, 4, 13, True, 3, True),  # a batch that is no whole number of vectors, a short last batch's padding
    (5, 7, 7, 40, False, 0, True),  # no ReLU after it
    (2, 3, 3, 7, True, 2, True),  # fewer samples than a vector
    (4, 6, 5, 24, True, 0, False),  # scale=False, center=False: no gamma, no beta
]


@needs_kernels
@pytest.mark.parametrize("c,h,w,n,relu,padded,affine", NORM_CASES)
def test_batch_norm_kernels_compute_what_xla_computes(c, h, w, n, relu, padded, affine):
    """ops.batch_norm_chwn (kernels/norm.cc) against NormOp's XLA route: the output, the moving
    statistics and the gradients of the input, gamma and beta, with rows of weight 0 left out."""
    rng = np.random.default_rng(c * 100 + n)
    x = jnp.asarray(rng.normal(size=(c, h, w, n)).astype(np.float32) * 2 + 0.5)
    params = [jnp.asarray(rng.normal(size=c).astype(np.float32)) for _ in range(2 if affine else 0)]
    state = [jnp.zeros(c), jnp.ones(c)]
    weight = jnp.asarray((np.arange(n) < n - padded).astype(np.float32))
    cotangent = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))  # nonzero on padded rows too

    def run(route):
        op = NormOp((0, 1) if affine else (None, None), (0, 1), 0.99, 1e-3, relu=relu, on_images=True, route=route)

        def loss(x, params):
            call = Call(params, state, True, None, weight, LAYOUTS["chwn"])
            y = op.apply(x, call)
            return jnp.sum(y * cotangent), (y, call.state)

        grads, (y, new_state) = jax.grad(loss, (0, 1), has_aux=True)(x, params)
        return y, new_state, grads

    (y, new_state, (dx, dparams)), (y0, state0, (dx0, dparams0)) = run("kernels"), run("xla")
    np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(new_state, state0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, dx0, rtol=1e-4, atol=1e-5)
    for a, b in zip(dparams, dparams0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@needs_kernels
def test_the_convnet_s_batch_norm_runs_on_the_kernels_as_on_xla():
    """Each batch norm of the convnet's convolutions on norm.cc, its ReLU folded in; a training step's
    loss and gradients as on XLA's route."""
    model = build_model("convnet", filters=[4, 8], hidden=[16], dropout=0.0)
    lowered, plain = lower(model, "chwn"), lower(model, "chwn", use_kernels=False)
    norms = [op for op in lowered.ops if isinstance(op, NormOp)]
    assert [(op.route, op.relu) for op in norms] == [("kernels", True)] * 4 + [("xla", True)]
    x = jnp.asarray(np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32))
    params = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]

    def loss(params, lowered):
        probs, _ = lowered.forward(params, x, True, jax.random.key(0), state, jnp.ones(20))
        return -jnp.mean(jnp.log(probs[:, 3]))

    jaxpr = str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, lowered))
    assert jaxpr.count("mnistlab_NormMoments") == 4 and jaxpr.count("mnistlab_NormGrad") == 4
    got, expected = (jax.value_and_grad(loss)(params, low) for low in (lowered, plain))
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    for a, b in zip(got[1], expected[1]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def sparse_input(rng, n, k, zeros=0.8):
    """Pixel-like input: values in [0, 1], most of them exactly 0."""
    return (rng.random((n, k), dtype=np.float32) * (rng.random((n, k)) > zeros)).astype(np.float32)


SPARSE_CASES = [  # (samples, inputs, outputs)
    (64, 784, 400),  # the notebook DNN's first layer, one batch
    (1000, 784, 400),  # an evaluation batch: many chunks of samples
    (5, 33, 7),  # an odd number of inputs (a last pair of one), fewer outputs than a vector
    (37, 130, 130),  # outputs past whole vectors and whole blocks; a short last chunk of samples
    (130, 200, 40),  # a batch past 64: five chunks, the last short
]


@needs_kernels
@pytest.mark.parametrize("n,k,m", SPARSE_CASES)
def test_sparse_dense_computes_what_a_dense_product_computes(n, k, m):
    rng = np.random.default_rng(n + k + m)
    x = jnp.asarray(sparse_input(rng, n, k))
    w = jnp.asarray(rng.normal(size=(k, m)).astype(np.float32))
    weights = jnp.asarray(rng.normal(size=(n, m)).astype(np.float32))
    np.testing.assert_allclose(sparse_dense(x, w), x @ w, rtol=1e-5, atol=1e-5)
    got = jax.grad(lambda x, w: jnp.sum(weights * sparse_dense(x, w)), (0, 1))(x, w)
    expected = jax.grad(lambda x, w: jnp.sum(weights * (x @ w)), (0, 1))(x, w)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_sparse_dense_on_all_zero_all_dense_and_nan_rows():
    rng = np.random.default_rng(1)
    x = sparse_input(rng, 40, 50)
    x[3] = 0.0  # a sample with no nonzero input
    x[7] = rng.random(50, dtype=np.float32) + 0.5  # one with no zero
    x[:, 9] = 0.0  # an input zero in every sample: its gradient row is 0
    x[11, 20] = np.nan
    w = rng.normal(size=(50, 20)).astype(np.float32)
    y = np.asarray(sparse_dense(jnp.asarray(x), jnp.asarray(w)))
    assert not np.any(y[3]) and np.all(np.isnan(y[11]))
    finite = np.arange(40) != 11
    np.testing.assert_allclose(y[finite], x[finite] @ w, rtol=1e-5, atol=1e-5)
    dw = np.asarray(jax.grad(lambda w: jnp.sum(sparse_dense(jnp.asarray(x[finite]), w)))(jnp.asarray(w)))
    assert not np.any(dw[9])
    np.testing.assert_allclose(dw, np.ones((finite.sum(), 20), np.float32).T.dot(x[finite]).T, rtol=1e-5)


@needs_kernels
def test_sparse_dense_results_do_not_depend_on_threads():
    """Each output is one sum in a fixed order: the same bits in every call, on any thread."""
    rng = np.random.default_rng(2)
    x, w = jnp.asarray(sparse_input(rng, 256, 784)), jnp.asarray(rng.normal(size=(784, 400)).astype(np.float32))
    run = jax.jit(jax.value_and_grad(lambda w: jnp.sum(jnp.sin(sparse_dense(x, w)))))
    first = run(w)
    for _ in range(5):
        again = run(w)
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])


@needs_kernels
def test_the_dnn_lowering_sends_its_first_layer_to_the_kernels_and_keeps_keras_results():
    model = build_model("dnn")
    lowered, plain = lower(model), lower(model, use_kernels=False)
    assert lowered.kernels and not plain.kernels and lowered.signature != plain.signature
    x = jnp.asarray(sparse_input(np.random.default_rng(0), 20, 784))
    params = [v.value for v in model.trainable_variables]
    np.testing.assert_allclose(lowered.apply(params, x), model(x), atol=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda p: lowered.apply(p, x))(params))
    assert jaxpr.count("mnistlab_SparseDenseForward") == 1  # the first Dense layer only


@pytest.mark.slow
def test_without_a_compiler_the_lowering_keeps_xla_s_route(tmp_path):
    """No compiler (or MNISTLAB_KERNELS=0): no kernels, a reason, and the CNN still lowers and trains."""
    script = (
        "import jax.numpy as jnp, numpy as np\n"
        "from mnistlab.models import build_model\n"
        "from mnistlab.training.fastpath.kernels import build\n"
        "from mnistlab.training.fastpath.lowering import lower\n"
        "m = build_model('cnn'); low = lower(m, 'chwn')\n"
        "x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)\n"
        "p = [v.value for v in m.trainable_variables]\n"
        "np.testing.assert_allclose(low.apply(p, jnp.asarray(x)), m(x), atol=1e-6)\n"
        "d = build_model('dnn'); dense = lower(d)\n"
        "np.testing.assert_allclose(dense.apply([v.value for v in d.trainable_variables], x.reshape(3, 784)),\n"
        "                           d(x.reshape(3, 784)), atol=1e-6)\n"
        "print(build.load('conv') is None, low.kernels or dense.kernels, '|', build.load('dense'))\n"
    )
    cases = ({"CXX": str(tmp_path / "no-such-compiler")}, {"MNISTLAB_KERNELS": "0"})
    procs = [  # side by side: each spends most of its time compiling, on one core
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), MNISTLAB_XLA_CACHE="0", **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in cases
    ]
    for extra, proc in zip(cases, procs):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        flags, why = stdout.strip().splitlines()[-1].split(" | ")
        assert flags == "False False"
        assert ("kernels are not available" in stderr) == ("CXX" in extra)
        assert ("no-such-compiler" in why) if "CXX" in extra else (why == "MNISTLAB_KERNELS=0")
    assert not list((tmp_path / "cache").rglob("kernels*.so*"))  # nothing half-built left behind


def test_a_changed_source_header_or_compiler_flag_gets_a_new_library(tmp_path, monkeypatch):
    assert build.library_path("conv") != build.library_path("dense")
    assert sorted({p for group in build.GROUPS for p in build.sources(group)}) == build.SOURCES  # each source built
    paths = [build.library_path("conv")]
    sources = build.sources("conv")
    copy = tmp_path / sources[-1].name
    copy.write_bytes(sources[-1].read_bytes() + b"\n// changed\n")
    monkeypatch.setattr(build, "sources", lambda group: sources[:-1] + [copy])
    paths.append(build.library_path("conv"))
    headers = build.HEADERS
    copy = tmp_path / headers[-1].name
    copy.write_bytes(headers[-1].read_bytes() + b"\n// changed\n")
    monkeypatch.setattr(build, "HEADERS", headers[:-1] + [copy])
    paths.append(build.library_path("conv"))
    monkeypatch.setattr(build, "FLAGS", build.FLAGS + ["-O2"])
    paths.append(build.library_path("conv"))
    assert len(set(paths)) == 4


def test_the_build_finds_jaxlib_s_headers_without_importing_jax():
    assert build.include_dir() == Path(jax.ffi.include_dir()) and (build.include_dir() / "xla" / "ffi").is_dir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "sys.path.insert(0, sys.argv[1]); import build\n"  # as `python build.py` imports it
            "build.library_path('conv'), build.compile_command('c++', build.SOURCES[0], 'x.o')\n"
            "print('jax' in sys.modules, 'keras' in sys.modules)",
            str(build.HERE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["False", "False"], done.stderr


@pytest.mark.slow
@needs_compiler
def test_the_sources_compile_without_warnings(tmp_path):
    """With -Wall -Wextra on (XLA's headers aside): a warning is a bug report, not noise. Each source
    alone, as many at once as the build would run (all five at once on two cores starved the tests
    timing budgets beside this one)."""
    cxx = build.compiler()

    def compile_alone(source):
        command = build.compile_command(cxx, source, tmp_path / (source.stem + ".o"))
        return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)

    with ThreadPoolExecutor(build.spare_cores()) as pool:
        for source, run in zip(build.SOURCES, pool.map(compile_alone, build.SOURCES)):
            assert run.returncode == 0 and not run.stderr.strip(), f"{source.name}:\n{run.stderr}"
    assert {"-Wall", "-Wextra"} <= set(build.FLAGS) and "-w" not in build.FLAGS


@needs_kernels
def test_the_library_was_built_with_python_s_constants(monkeypatch):
    import ctypes

    for group in build.GROUPS:
        lib = ctypes.cdll.LoadLibrary(str(build.library_path(group)))
        assert build.constants_of(lib) == {
            "LANES": ffi.LANES,
            "CHUNK": ffi.CHUNK,
            "MAX_POOL": ffi.MAX_POOL,
            "KERNEL_SIZES": ffi.KERNEL_SIZES,
        }
    assert (ffi.LANES, ffi.CHUNK, ffi.KERNEL_SIZES) == (16, 32, {(3, 3), (5, 5)})
    monkeypatch.setattr(ffi, "CHUNK", 64)  # as if Python and the sources had drifted apart
    with pytest.raises(RuntimeError, match="CHUNK: library 32, Python 64"):
        build.open_library(build.library_path("dense"), "dense")


THREADS_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from mnistlab.training.fastpath.kernels import build
from mnistlab.training.fastpath.ops import batch_norm_chwn, conv_direct, conv_pool, sparse_dense
assert build.load("conv") is None and build.load("dense") is None, (build.load("conv"), build.load("dense"))
rng = np.random.default_rng(7)
x = jnp.asarray(rng.random((3, 14, 14, 130), dtype=np.float32))
k = jnp.asarray(rng.normal(size=(5, 5, 3, 12)).astype(np.float32))
k3 = jnp.asarray(rng.normal(size=(3, 3, 3, 12)).astype(np.float32))  # Winograd's (winograd.cc)
same = lambda x, k: conv_direct(x, k, ((1, 1), (1, 1)))
xs = jnp.asarray((rng.random((130, 784)) * (rng.random((130, 784)) > 0.8)).astype(np.float32))
w = jnp.asarray(rng.normal(size=(784, 100)).astype(np.float32))
gamma = jnp.asarray(rng.normal(size=3).astype(np.float32))
weight, beta = (jnp.arange(130) < 120).astype(jnp.float32), jnp.full(3, 0.1)
norm = lambda x, gamma: batch_norm_chwn(x, weight, gamma, beta, 1e-3, True)[0]
out = {}
for name, f, args in (("conv_pool", lambda x, k: conv_pool(x, k, 2), (x, k)), ("conv_direct", conv_direct, (x, k)),
                      ("winograd", same, (x, k3)), ("sparse_dense", sparse_dense, (xs, w)),
                      ("batch_norm", norm, (x, gamma))):
    out[name] = np.asarray(jax.jit(f)(*args))
    for i, g in enumerate(jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), (0, 1)))(*args)):
        out[f"{name}_grad{i}"] = np.asarray(g)
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
@needs_kernels
def test_results_do_not_depend_on_the_thread_count(tmp_path):
    """Each kernel (batch norm's and Winograd's too) and its gradients, batch 130: the same bits on one
    intra-op thread as on the default pool."""
    saved = {}
    for name, flags in (("one", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"), ("many", "")):
        env = dict(
            os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip(), MNISTLAB_XLA_CACHE="0"
        )
        path = tmp_path / f"{name}.npz"
        done = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, str(path)], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        saved[name] = np.load(path)
    assert sorted(saved["one"].files) == sorted(saved["many"].files) and len(saved["one"].files) == 15
    for key in saved["one"].files:
        np.testing.assert_array_equal(saved["one"][key], saved["many"][key], err_msg=key)


def test_compiler_warnings_are_logged(tmp_path, monkeypatch, caplog):
    """A build that compiles with warnings still loads, and the compiler's words reach the log."""
    monkeypatch.setattr(build, "library_path", lambda group: tmp_path / "kernels-x.so")
    monkeypatch.setattr(build, "build", lambda target, files: "conv.cc:1:1: warning: something [-Wsomething]")
    monkeypatch.setattr(build, "open_library", lambda path, group: None)
    monkeypatch.delenv(build.SWITCH, raising=False)
    with caplog.at_level("WARNING", logger="mnistlab"):
        assert build._load("conv") is None
    assert "warning: something" in caplog.text


def test_the_conv_kernels_are_used_only_where_they_beat_xla(monkeypatch, tmp_path):
    """Without AVX2 the kernels would be slower than XLA (build.NEEDS): there the models lower onto
    XLA's route and the build script skips the libraries."""
    monkeypatch.delenv(build.SWITCH)
    monkeypatch.setattr(build.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(build, "cpu_flags", lambda: {"sse2", "sse4_2", "avx"})
    assert not build.pays_off("conv") and not build.pays_off("dense")
    low = lower(build_model("cnn"), "chwn")
    assert not low.kernels and all(getattr(op, "route", "xla") == "xla" for op in low.ops)
    assert not lower(build_model("dnn")).kernels
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "build", lambda *a, **k: pytest.fail("built a library that goes unused"))
    assert build.main(["conv", "dense"]) == 0
    monkeypatch.setenv(build.SWITCH, "always")
    assert build.pays_off("conv")
    monkeypatch.setattr(build, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    monkeypatch.delenv(build.SWITCH)
    assert build.pays_off("conv") and build.pays_off("dense")
