"""The hand-written CPU kernels (convolution + pooling; a dense layer's products over a sparse input):
the same functions as XLA's route, and a clean fallback."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistlab.models import build_model
from mnistlab.training import kernels
from mnistlab.training.lowering import conv_chwn, conv_direct, conv_pool, lower, max_pool, pad_chwn, sparse_dense

needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"kernels not built: {kernels.why_unavailable()}")


def xla_conv_pool(x, kernel, pool, padding="valid"):
    """What the lowering computes without the kernels: im2col convolution, then pooling."""
    return max_pool(conv_chwn(x, kernel, (1, 1), padding), (pool, pool), (pool, pool), (1, 2))


CASES = [  # (channels, height, width, batch, kernel size, filters, pool, padding)
    (1, 28, 28, 64, 5, 10, 2, "valid"),    # the notebook CNN's first layer
    (10, 12, 12, 24, 5, 20, 2, "valid"),   # several input channels; a batch that is no multiple of 16
    (3, 9, 11, 5, 3, 17, 3, "valid"),      # 3x3 kernel, 3x3 pooling, odd sizes (cropped windows)
    (2, 10, 10, 16, 3, 33, 2, "same"),     # 'same' padding, more filters than one block of 16
]


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
@pytest.mark.parametrize("c,h,w,n,k,o,pool,padding", CASES)
def test_the_direct_convolution_computes_what_xla_computes(c, h, w, n, k, o, pool, padding):
    """conv_direct (kernels/conv.cc): values and both gradients against the im2col route; tiles at the
    edges of the filters, the channels and the batch (a batch that is no multiple of 16 is padded)."""
    rng = np.random.default_rng(c * 10 + k)
    x = jnp.asarray(rng.random((c, h, w, n), dtype=np.float32))
    kernel = jnp.asarray(rng.normal(size=(k, k, c, o)).astype(np.float32) * 0.3)

    def ours(x, kernel):
        return conv_direct(pad_chwn(x, kernel.shape, (1, 1), padding), kernel)

    def xla(x, kernel):
        return conv_chwn(x, kernel, (1, 1), padding)

    np.testing.assert_allclose(ours(x, kernel), xla(x, kernel), rtol=1e-5, atol=1e-5)
    weights = jnp.asarray(rng.normal(size=xla(x, kernel).shape).astype(np.float32))
    got = jax.grad(lambda x, w: jnp.sum(weights * ours(x, w)), (0, 1))(x, kernel)
    expected = jax.grad(lambda x, w: jnp.sum(weights * xla(x, w)), (0, 1))(x, kernel)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_a_tie_sends_the_gradient_to_the_first_maximum():
    x = jnp.zeros((1, 4, 4, 16), jnp.float32)            # every window ties: all outputs are 0
    kernel = jnp.ones((3, 3, 1, 1), jnp.float32)
    pooled = conv_pool(x, kernel, 2)
    assert pooled.shape == (1, 1, 1, 16) and not jnp.any(pooled)
    _, where = kernels.forward(x, kernel, 2)
    assert not jnp.any(where)                            # window position 0: the first
    dx = jax.grad(lambda x: jnp.sum(conv_pool(x, kernel, 2)))(x)
    np.testing.assert_array_equal(dx[0, :3, :3, 0], np.ones((3, 3)))   # the 3x3 patch under position 0
    assert float(jnp.sum(dx[..., 0])) == 9.0


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


def sparse_input(rng, n, k, zeros=0.8):
    """Pixel-like input: values in [0, 1], most of them exactly 0."""
    return (rng.random((n, k), dtype=np.float32) * (rng.random((n, k)) > zeros)).astype(np.float32)


SPARSE_CASES = [  # (samples, inputs, outputs)
    (64, 784, 400),   # the notebook DNN's first layer, one batch
    (1000, 784, 400), # an evaluation batch: many chunks of samples
    (5, 33, 7),       # an odd number of inputs (a last pair of one), fewer outputs than a vector
    (37, 130, 130),   # outputs past whole vectors and whole blocks; a short last chunk of samples
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
    x[3] = 0.0                                     # a sample with no nonzero input
    x[7] = rng.random(50, dtype=np.float32) + 0.5  # one with no zero
    x[:, 9] = 0.0                                  # an input zero in every sample: its gradient row is 0
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
    assert jaxpr.count("mnistlab_SparseDenseForward") == 1   # the first Dense layer only


def test_without_a_compiler_the_lowering_keeps_xla_s_route(tmp_path):
    """No compiler (or MNISTLAB_KERNELS=0): no kernels, a reason, and the CNN still lowers and trains."""
    script = (
        "import jax.numpy as jnp, numpy as np\n"
        "from mnistlab.models import build_model\n"
        "from mnistlab.training import kernels\n"
        "from mnistlab.training.lowering import lower\n"
        "m = build_model('cnn'); low = lower(m, 'chwn')\n"
        "x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)\n"
        "p = [v.value for v in m.trainable_variables]\n"
        "np.testing.assert_allclose(low.apply(p, jnp.asarray(x)), m(x), atol=1e-6)\n"
        "d = build_model('dnn'); dense = lower(d)\n"
        "np.testing.assert_allclose(dense.apply([v.value for v in d.trainable_variables], x.reshape(3, 784)),\n"
        "                           d(x.reshape(3, 784)), atol=1e-6)\n"
        "print(kernels.available(), low.kernels or dense.kernels, '|', kernels.why_unavailable())\n"
    )
    for extra in ({"CXX": str(tmp_path / "no-such-compiler")}, {"MNISTLAB_KERNELS": "0"}):
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), MNISTLAB_XLA_CACHE="0", **extra)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        flags, why = done.stdout.strip().splitlines()[-1].split(" | ")
        assert flags == "False False"
        assert ("kernels are not available" in done.stderr) == ("CXX" in extra)
        assert ("no-such-compiler" in why) if "CXX" in extra else (why == "MNISTLAB_KERNELS=0")
    assert not list((tmp_path / "cache").rglob("kernels*.so*"))  # nothing half-built left behind


def test_a_changed_source_header_or_compiler_flag_gets_a_new_library(tmp_path, monkeypatch):
    paths = [kernels.library_path()]
    for kind in ("SOURCES", "HEADERS"):
        files = getattr(kernels, kind)
        copy = tmp_path / files[-1].name
        copy.write_bytes(files[-1].read_bytes() + b"\n// changed\n")
        monkeypatch.setattr(kernels, kind, files[:-1] + [copy])
        paths.append(kernels.library_path())
    monkeypatch.setattr(kernels, "FLAGS", kernels.FLAGS + ["-O2"])
    paths.append(kernels.library_path())
    assert len(set(paths)) == 4
