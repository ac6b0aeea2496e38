"""Turning the C++ sources into a loaded library, once per machine.

Kept apart from the call bindings (ffi.py) because this is the part that can
fail for reasons outside mnistlab (no compiler, a read-only cache, a changed
XLA): `load()` does the whole job at most once per process and answers with
the reason it failed, so the lowering can keep XLA's own route instead.

The library is compiled with the machine's C++ compiler for this very CPU
(-march=native), with warnings on (any compiler output is logged), into the
user cache under a name that hashes everything it depends on. The constants
the Python side pads and sizes buffers by are read back from the library and
must match ffi.py's: a library built from other sources is refused.
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

from mnistlab.paths import cache_dir
from mnistlab.training.fastpath.kernels import ffi

HERE = Path(__file__).parent
SOURCES = sorted(HERE.glob("*.cc"))
HEADERS = sorted(HERE.glob("*.h"))
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra"]
SWITCH = "MNISTLAB_KERNELS"   # 0 / off / no / false: never build or load the kernels

log = logging.getLogger("mnistlab")
_lock = threading.Lock()
_state = {}  # "reason": None once loaded, else why not (set on the first load())


def switched_off(variable):
    """True when the environment variable says 0, off, no or false (unset: on)."""
    return os.environ.get(variable, "1").lower() in ("0", "off", "no", "false")


def cpu_signature():
    """What a -march=native build depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [l for l in text.splitlines() if l.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "\n" + "\n".join(lines)


def library_path():
    text = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    key = hashlib.sha256(text + cpu_signature().encode() + jax.__version__.encode()
                         + " ".join(FLAGS).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"kernels-{key}.so"


def compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def compile_command(cxx, source, obj):
    # XLA's headers are a system include: their warnings are not ours to fix.
    return [cxx, *FLAGS, "-c", "-isystem", jax.ffi.include_dir(), str(source), "-o", str(obj)]


def build(target):
    """Compile the sources into one library, `target`, atomically (concurrent processes may race here);
    returns the compiler's warnings (its stderr), empty for a clean build.

    Each source compiles in its own process, all at once (~4 s each, on separate cores), then one link."""
    cxx = compiler()
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=target.name + ".", suffix=".part", dir=target.parent) as work:
        objects = [Path(work) / (source.stem + ".o") for source in SOURCES]
        compiles = [subprocess.Popen(compile_command(cxx, source, obj),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    for source, obj in zip(SOURCES, objects)]
        errors = [proc.communicate(timeout=300)[1] for proc in compiles]
        for proc, err in zip(compiles, errors):
            raise_if_failed(cxx, proc.returncode, err)
        library = Path(work) / target.name
        link = subprocess.run([cxx, *FLAGS, *map(str, objects), "-o", str(library)],
                              capture_output=True, text=True, timeout=300)
        raise_if_failed(cxx, link.returncode, link.stderr)
        os.replace(library, target)
    return "".join(errors + [link.stderr]).strip()


def raise_if_failed(cxx, returncode, stderr):
    if returncode:
        raise RuntimeError(f"{cxx} failed: {(stderr.strip().splitlines() or ['?'])[-1]}")


def constants_of(lib):
    """The constants the library was built with (exports.cc), as ffi.py names them."""
    for name in ("mnistlab_lanes", "mnistlab_sparse_chunk", "mnistlab_max_pool", "mnistlab_kernel_size_count",
                 "mnistlab_kernel_size"):
        getattr(lib, name).restype = ctypes.c_int64
    lib.mnistlab_kernel_size.argtypes = [ctypes.c_int64]
    sizes = {lib.mnistlab_kernel_size(i) for i in range(lib.mnistlab_kernel_size_count())}
    return {"LANES": lib.mnistlab_lanes(), "CHUNK": lib.mnistlab_sparse_chunk(), "MAX_POOL": lib.mnistlab_max_pool(),
            "KERNEL_SIZES": {(k, k) for k in sizes}}


def mismatches(constants):
    """The constants on which the library and ffi.py disagree, as 'NAME: library X, Python Y'."""
    return [f"{name}: library {value}, Python {getattr(ffi, name)}" for name, value in constants.items()
            if value != getattr(ffi, name)]


def open_library(path):
    """Load the library at `path`, check its constants and register its handlers with XLA."""
    lib = ctypes.cdll.LoadLibrary(str(path))
    try:
        wrong = mismatches(constants_of(lib))
    except AttributeError as e:
        raise RuntimeError(f"{path.name} exports no constants ({e})") from None
    if wrong:
        raise RuntimeError(f"{path.name} was built with other constants than ffi.py's: {'; '.join(wrong)}")
    for name in ffi.TARGETS:
        jax.ffi.register_ffi_target(f"mnistlab_{name}", jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")


def load():
    """None once the kernels are compiled, loaded and registered (the first call does that), else the
    reason they are not."""
    with _lock:
        if "reason" not in _state:
            _state["reason"] = _load()
        return _state["reason"]


def _load():
    if switched_off(SWITCH):
        return f"{SWITCH}=0"
    try:
        path = library_path()
        if not path.exists():
            warnings = build(path)
            if warnings:
                log.warning("mnistlab: the C++ compiler warned building the CPU kernels:\n%s", warnings)
        open_library(path)
        return None
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("mnistlab: note: the CPU kernels are not available (%s); convolutions and the first "
                    "dense layer run through XLA instead, slower (%s=0 silences this)", e, SWITCH)
        return str(e)
