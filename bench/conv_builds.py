"""A/B of two builds of the convolution kernels (kernels/conv.cc): a git revision's and the working tree's.

Each source is compiled as build.py compiles it, to a library of its own whose handlers are renamed,
so both are loaded in one process; their calls (forward, kernel gradient, input gradient) at the
best preset's convnet shapes (batch 128) are timed alternately, the order rotated each round, and
the medians printed. The revision's source is built twice: the two copies' difference is the
noise floor. Each build's outputs must equal the revision's bit for bit (the sums' order is the
kernels' contract), else it stops.

  .venv/bin/python bench/conv_builds.py --against HEAD~1 --rounds 30
"""

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mnistlab.training.fastpath.kernels import build

SOURCE = "mnistlab/training/fastpath/kernels/conv.cc"
HANDLERS = ("ConvForward", "ConvKernelGrad", "ConvInputGrad")
# (input channels, padded input size, filters) of the best preset's four 3x3 convolutions
LAYERS = {"conv1a": (1, 30, 16), "conv1b": (16, 30, 16), "conv2a": (16, 16, 32), "conv2b": (32, 16, 32)}
BATCH = 128


def compiled(source_text, tag, work):
    """The kernels of `source_text` as JAX functions whose targets are named by `tag`."""
    source = work / f"{tag}.cc"
    source.write_text(source_text)  # its #includes (common.h, conv_shapes.h) resolve in build.HERE (-I)
    library = work / f"{tag}.so"
    renamed = [f"-D{name}={tag}{name}" for name in HANDLERS]
    command = [build.compiler(), *build.FLAGS, "-isystem", str(build.include_dir()), f"-I{build.HERE}", *renamed]
    subprocess.run([*command, str(source), "-o", str(library)], check=True)
    lib = ctypes.cdll.LoadLibrary(str(library))
    for name in HANDLERS:
        jax.ffi.register_ffi_target(f"{tag}_{name}", jax.ffi.pycapsule(getattr(lib, f"{tag}{name}")), platform="cpu")

    def call(name, shape, *args, **attrs):
        return jax.ffi.ffi_call(f"{tag}_{name}", jax.ShapeDtypeStruct(shape, jnp.float32))(*args, **attrs)

    # The input's gradient is that of the unpadded input (the padded one less its 1-pixel frame), as
    # ops.conv_direct asks for it under the same padding
    def input_grad(x, k, dy):
        c, h, w, n = x.shape
        return call("ConvInputGrad", (c, h - 2, w - 2, n), dy, k, top=np.int64(1), left=np.int64(1))

    return {
        "forward": jax.jit(lambda x, k, dy: call("ConvForward", dy.shape, x, k)),
        "kernel grad": jax.jit(lambda x, k, dy: call("ConvKernelGrad", k.shape, x, dy)),
        "input grad": jax.jit(input_grad),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default="HEAD", help="the git revision whose conv.cc is the reference")
    p.add_argument("--rounds", type=int, default=30)
    a = p.parse_args()
    reference = subprocess.run(["git", "show", f"{a.against}:{SOURCE}"], capture_output=True, text=True, check=True)
    sources = {a.against: reference.stdout, f"{a.against} again": reference.stdout, "tree": Path(SOURCE).read_text()}
    with tempfile.TemporaryDirectory() as work:
        builds = {name: compiled(text, f"ab{i}", Path(work)) for i, (name, text) in enumerate(sources.items())}
    rng = np.random.default_rng(0)
    cases = []
    for layer, (c, size, o) in LAYERS.items():
        x = jnp.asarray(rng.standard_normal((c, size, size, BATCH), dtype=np.float32))
        k = jnp.asarray(rng.standard_normal((3, 3, c, o), dtype=np.float32))
        dy = jnp.asarray(rng.standard_normal((o, size - 2, size - 2, BATCH), dtype=np.float32))
        for op in builds[a.against]:
            if not (c == 1 and op == "input grad"):  # a first layer's input gradient is never asked for
                cases.append((layer, op, (x, k, dy)))
    for layer, op, args in cases:
        want = np.asarray(builds[a.against][op](*args))
        for name, kernels in builds.items():
            if not np.array_equal(np.asarray(kernels[op](*args)), want):
                raise SystemExit(f"{name}'s {layer} {op} differs from {a.against}'s")
    times = {(layer, op, name): [] for layer, op, _ in cases for name in builds}
    names = list(builds)
    for r in range(a.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for layer, op, args in cases:
            for name in order:
                kernel = builds[name][op]
                jax.block_until_ready(kernel(*args))
                start = time.perf_counter()
                for _ in range(3):
                    out = kernel(*args)
                jax.block_until_ready(out)
                times[(layer, op, name)].append((time.perf_counter() - start) / 3 * 1e3)
    print(f"median ms per call, {a.rounds} rounds: " + " | ".join(names))
    totals = dict.fromkeys(names, 0.0)
    for layer, op, _ in cases:
        medians = {name: statistics.median(times[(layer, op, name)]) for name in names}
        for name in names:
            totals[name] += medians[name]
        print(f"{layer} {op:12s} " + " ".join(f"{medians[name]:8.3f}" for name in names))
    print(f"{'all':19s} " + " ".join(f"{totals[name]:8.2f}" for name in names))


if __name__ == "__main__":
    main()
