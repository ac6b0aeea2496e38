"""Hand-written CPU kernels for what XLA's CPU backend runs slowly:
- a convolution followed by max pooling, in the fast path's (C, H, W, N) layout (conv_pool.cc);
- a convolution and its two gradients, in that layout (conv.cc);
- a dense layer's two products over an input that is mostly zeros, such as pixels (sparse_dense.cc).

The C++ sources are compiled on first use with the machine's C++ compiler, for
this very CPU (-march=native), into the user cache, and registered with XLA as
FFI custom calls. Without a compiler, or with MNISTLAB_KERNELS=0, `available()`
is False and the lowering keeps XLA's own route, which computes the same
function (lowering.conv_pool, lowering.conv_direct and lowering.sparse_dense
wrap these calls with their gradients; tests/test_kernels.py checks the two
routes against each other).
"""
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mnistlab.backend import switched_off

SOURCES = sorted(Path(__file__).parent.glob("*.cc"))
HEADERS = sorted(Path(__file__).parent.glob("*.h"))
TARGETS = ("ConvPoolForward", "ConvPoolKernelGrad", "ConvForward", "ConvKernelGrad", "ConvInputGrad",
           "SparseDenseForward", "SparseDenseKernelGrad")
KERNEL_SIZES = {(3, 3), (5, 5)}   # the kernel gradients are built for these (conv_pool.cc, conv.cc)
LANES = 16                        # the batch axis is cut into vectors of 16
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]

_lock = threading.Lock()
_state = {}  # "ok": bool once tried; "why": the reason when not


def cpu_signature():
    """What a -march=native build depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [l for l in text.splitlines() if l.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "\n" + "\n".join(lines)


def library_path():
    from mnistlab.data.load import cache_dir

    text = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    key = hashlib.sha256(text + cpu_signature().encode() + jax.__version__.encode()
                         + " ".join(FLAGS).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"kernels-{key}.so"


def build(target):
    """Compile the sources into one library, `target`, atomically (concurrent processes may race here).

    Each source compiles in its own process, all at once (~4 s each, on separate cores), then one link."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=target.name + ".", suffix=".part", dir=target.parent) as work:
        objects = [Path(work) / (source.stem + ".o") for source in SOURCES]
        compiles = [subprocess.Popen([compiler, *FLAGS, "-c", "-I", jax.ffi.include_dir(), str(source), "-o", str(obj)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    for source, obj in zip(SOURCES, objects)]
        errors = [proc.communicate(timeout=300)[1] for proc in compiles]
        for proc, err in zip(compiles, errors):
            raise_if_failed(compiler, proc.returncode, err)
        library = Path(work) / target.name
        link = subprocess.run([compiler, *FLAGS, *map(str, objects), "-o", str(library)],
                              capture_output=True, text=True, timeout=300)
        raise_if_failed(compiler, link.returncode, link.stderr)
        os.replace(library, target)


def raise_if_failed(compiler, returncode, stderr):
    if returncode:
        raise RuntimeError(f"{compiler} failed: {(stderr.strip().splitlines() or ['?'])[-1]}")


def available():
    """True when the kernels are compiled, loaded and registered (on first call: does that)."""
    with _lock:
        if "ok" not in _state:
            _state["ok"], _state["why"] = False, None
            if switched_off("MNISTLAB_KERNELS"):
                _state["why"] = "MNISTLAB_KERNELS=0"
            else:
                try:
                    path = library_path()
                    if not path.exists():
                        build(path)
                    lib = ctypes.cdll.LoadLibrary(str(path))
                    for name in TARGETS:
                        jax.ffi.register_ffi_target(f"mnistlab_{name}", jax.ffi.pycapsule(getattr(lib, name)),
                                                    platform="cpu")
                    _state["ok"] = True
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    _state["why"] = str(e)
                    logging.getLogger("mnistlab").warning(
                        "mnistlab: note: the CPU kernels are not available (%s); convolutions and the first "
                        "dense layer run through XLA instead, slower (MNISTLAB_KERNELS=0 silences this)", e)
        return _state["ok"]


def why_unavailable():
    available()
    return _state["why"]


def usable():
    """Can the compiled program being built call the kernels? (CPU only, and built.)"""
    return jax.default_backend() == "cpu" and available()


def supports(kernel_shape, pool=None, strides=None):
    """Can the kernels compute a stride-1 'valid' convolution with this kernel (conv), followed by
    this pooling (conv_pool) when one is given?"""
    kh, kw = kernel_shape[:2]
    pooled = pool is None or (pool == strides and pool[0] == pool[1] and 1 <= pool[0] <= 15)
    return (kh, kw) in KERNEL_SIZES and pooled and usable()


def pad_batch(x):
    """Pad the last (batch) axis to whole vectors of LANES; zeros contribute nothing."""
    extra = -x.shape[-1] % LANES
    return x if not extra else jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


def forward(x, kernel, pool):
    """max over p x p windows of conv(x, kernel), and each window's argmax (its position as a byte):
    (C, H, W, N), (KH, KW, C, O) -> two (O, PH, PW, N) arrays; N a multiple of LANES."""
    c, h, w, n = x.shape
    kh, kw, _, o = kernel.shape
    shape = (o, (h - kh + 1) // pool, (w - kw + 1) // pool, n)
    call = jax.ffi.ffi_call("mnistlab_ConvPoolForward",
                            (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.uint8)))
    return call(x, kernel, pool=np.int64(pool))


def kernel_grad(x, kernel, dy, where, pool):
    """The kernel's gradient of `forward` given the pooled gradient dy and forward's argmax."""
    call = jax.ffi.ffi_call("mnistlab_ConvPoolKernelGrad", jax.ShapeDtypeStruct(kernel.shape, jnp.float32))
    return call(x, kernel, dy, where, pool=np.int64(pool))


def conv_forward(x, kernel):
    """A stride-1 'valid' convolution: (C, H, W, N), (KH, KW, C, O) -> (O, OH, OW, N); N a multiple of LANES."""
    c, h, w, n = x.shape
    kh, kw, _, o = kernel.shape
    call = jax.ffi.ffi_call("mnistlab_ConvForward", jax.ShapeDtypeStruct((o, h - kh + 1, w - kw + 1, n), jnp.float32))
    return call(x, kernel)


def conv_kernel_grad(x, dy, kernel_shape):
    """The kernel's gradient of conv_forward given the output's gradient dy."""
    return jax.ffi.ffi_call("mnistlab_ConvKernelGrad", jax.ShapeDtypeStruct(kernel_shape, jnp.float32))(x, dy)


def conv_input_grad(dy, kernel, x_shape):
    """The input's gradient of conv_forward given the output's gradient dy."""
    return jax.ffi.ffi_call("mnistlab_ConvInputGrad", jax.ShapeDtypeStruct(x_shape, jnp.float32))(dy, kernel)


CHUNK = 32  # samples per chunk of the sparse products' lists (sparse_dense.cc)


def sparse_dense_forward(x, w):
    """x @ w over the nonzero entries of x: (N, K), (K, M) -> (N, M), and the lists of x's nonzero
    entries that sparse_dense_kernel_grad takes."""
    n, k = x.shape
    pairs, chunks = (k + 1) // 2, -(-n // CHUNK)
    call = jax.ffi.ffi_call("mnistlab_SparseDenseForward", (
        jax.ShapeDtypeStruct((n, w.shape[1]), jnp.float32),
        jax.ShapeDtypeStruct((chunks, pairs + 1), jnp.int32),
        jax.ShapeDtypeStruct((n * pairs,), jnp.int32),
        jax.ShapeDtypeStruct((n * pairs, 2), jnp.float32)))
    y, *lists = call(x, w)
    return y, tuple(lists)


def sparse_dense_kernel_grad(lists, dy, k):
    """x^T @ dy over the nonzero entries of x, given x's lists from sparse_dense_forward: -> (K, M)."""
    call = jax.ffi.ffi_call("mnistlab_SparseDenseKernelGrad", jax.ShapeDtypeStruct((k, dy.shape[1]), jnp.float32))
    return call(*lists, dy)
