"""Turning the C++ sources into a loaded library, once per machine.

Kept apart from the call bindings (ffi.py) because this is the part that can
fail for reasons outside mnistlab (no compiler, a read-only cache, a changed
XLA): `load()` does the whole job at most once per process and answers with
the reason it failed, so the lowering can keep XLA's own route instead.

Each library is compiled with the machine's C++ compiler for this very CPU
(-march=native), with warnings on (any compiler output is logged), into the
user cache under a name that hashes everything it depends on. There are two
(GROUPS): the convolutions' and the sparse dense products', so a first run
compiles only what its model uses (the notebook DNN: a third of the work). The constants
the Python side pads and sizes buffers by are read back from the library and
must match ffi.py's: a library built from other sources is refused.

The compile is the largest one-time cost of a first run, so:
- nothing here imports JAX until a library is opened, and the file also runs as
  a script (`python build.py`), which the command line starts before it imports
  Keras: the compiler then works on the second core while the first imports
  (mnistlab/cli/speed.py; `adopt()` hands that helper process to `load()`);
- the sources of a library compile in as few compiler processes as there are spare cores,
  several sources included into one unit where cores are few: XLA's FFI header
  and its templates, ~40% of the work, are then compiled once per unit, not
  once per source (one unit: 6.3 s of CPU against 10.4 s for four);
- processes that need the library at once (a search's workers, two runs) build
  it once: the build holds a file lock, and whoever gets it second finds it built.
The process that compiles says so in one line (NOTICE), so a first run's pause
is explained; a warm cache prints nothing.
"""

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not a POSIX system: concurrent builds still end well (os.replace), each paying
    fcntl = None

from mnistlab.paths import cache_dir
from mnistlab.system import available_cpus, switched_off

HERE = Path(__file__).parent
SOURCES = sorted(HERE.glob("*.cc"))
HEADERS = sorted(HERE.glob("*.h"))
# Each library: its kernels' sources, and exports.cc (the constants the loader checks).
GROUPS = {"conv": ("conv.cc", "conv_pool.cc", "norm.cc", "winograd.cc"), "dense": ("sparse_dense.cc",)}
# -Wno-psabi: without AVX-512 (AMD Zen 2, for one) GCC notes that 64-byte vector arguments pass
# differently from an AVX-512 build; the functions taking them are static inline, never called across
# builds, so the note says nothing about this code.
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Wno-psabi"]
SWITCH = "MNISTLAB_KERNELS"  # 0 / off / no / false: never build or load the kernels; always: use them
# even on a CPU where they do not pay off (NEEDS)
# The CPU feature each library needs to beat XLA's route. Its vectors are one register wide (common.h):
# built for AVX2, they beat XLA on a 2-core AMD EPYC, Zen 2 (2026-12-04, bench/ab.py --compare kernels:
# the notebook CNN's step 2.5 ms against 5.9, the DNN's 0.74 against 1.00); vectors the width of
# two registers, as before, ran at half XLA's speed there, which is what SSE alone would see.
NEEDS = {"conv": "avx2", "dense": "avx2"}
# Measured alone, -O3: conv.cc 4.1 s, conv_pool.cc 3.5 s, sparse_dense.cc 3.5 s, exports.cc 0.9 s (XLA's
# header, which one unit compiles once); 2-core AMD EPYC, 2026-12-03.
SECONDS_PER_SOURCE = 3
NOTICE = "mnistlab: compiling the CPU kernels for this machine (one-time, ~{seconds} s; kept in {folder})"

log = logging.getLogger("mnistlab")
_lock = threading.Lock()
# "reason": group -> None once loaded, else why not; "helper": adopt()'s process
_state: dict[str, Any] = {"reason": {}}


def cpu_flags():
    """The CPU's feature flags, as /proc/cpuinfo lists them (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "").split())


def pays_off(group):
    """Do `group`'s kernels beat XLA's route on this CPU (NEEDS)? An x86 CPU without the feature:
    no; one whose flags cannot be read: yes, as before NEEDS was measured."""
    need = NEEDS.get(group)
    if need is None or os.environ.get(SWITCH, "").lower() == "always" or platform.machine() not in ("x86_64", "AMD64"):
        return True
    flags = cpu_flags()
    return not flags or need in flags


def cpu_signature():
    """What a -march=native build depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "\n" + "\n".join(lines)


def include_dir():
    """jaxlib's C++ headers (what jax.ffi.include_dir() answers), found without importing jaxlib."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None:
        raise RuntimeError("jaxlib is not installed")
    root = Path(spec.origin).parent if spec.origin else Path(next(iter(spec.submodule_search_locations or ())))
    return root / "include"


def sources(group):
    """The files one library is compiled from."""
    return sorted([HERE / name for name in GROUPS[group]] + [HERE / "exports.cc"])


def library_path(group):
    text = b"".join(path.read_bytes() for path in sources(group) + HEADERS)
    key = hashlib.sha256(
        text + cpu_signature().encode() + importlib.metadata.version("jaxlib").encode() + " ".join(FLAGS).encode()
    ).hexdigest()[:16]
    return cache_dir() / "kernels" / f"kernels-{group}-{key}.so"


def compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def spare_cores():
    """Cores this process may use, less one for the Python work that runs meanwhile."""
    return max(1, available_cpus() - 1)


def compile_units(files, count=None):
    """`files` split into `count` (default: spare_cores()) groups of about equal size, largest
    first: each group is compiled by one compiler process."""
    count = max(1, min(len(files), count or spare_cores()))
    units = [[] for _ in range(count)]
    for source in sorted(files, key=lambda p: -p.stat().st_size):
        min(units, key=lambda unit: sum(p.stat().st_size for p in unit)).append(source)
    return [sorted(unit) for unit in units]


def compile_command(cxx, source, obj):
    # XLA's headers are a system include: their warnings are not ours to fix.
    return [cxx, *FLAGS, "-c", "-isystem", str(include_dir()), str(source), "-o", str(obj)]


def unit_file(sources, work, i):
    """The file one compiler process compiles: the source itself, or one that includes several
    (each source's own includes resolve beside it; the headers are #pragma once)."""
    if len(sources) == 1:
        return sources[0]
    path = Path(work) / f"unit{i}.cc"
    path.write_text("".join(f'#include "{source}"\n' for source in sources))
    return path


@contextmanager
def build_lock(folder):
    """Held while a library is built into `folder`: concurrent processes wait here, then find it built.
    The system releases it if the holder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a") as handle:
        if fcntl:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl:  # explicitly: a forked child holding a copy of the descriptor must not keep it
                fcntl.flock(handle, fcntl.LOCK_UN)


def build(target, files, announce=True):
    """Compile `files` into one library, `target`, unless another process built it meanwhile;
    returns the compiler's warnings (its stderr), empty for a clean build (or none done).
    announce: log NOTICE when it compiles.

    The units compile in parallel (compile_units), then one link, in a private folder; the library
    appears under its name in one step (os.replace), so no process ever opens half a library."""
    if target.exists():
        return ""
    cxx = compiler()
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX)")
    with build_lock(target.parent):
        if target.exists():  # built by the process that held the lock before us
            return ""
        for stale in target.parent.glob("kernels-*.part") if fcntl else ():  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        units = compile_units(files)
        if announce:
            kernels = max(sum(f.name != "exports.cc" for f in unit) for unit in units)
            log.warning(NOTICE.format(seconds=SECONDS_PER_SOURCE * max(1, kernels), folder=target.parent))
        with tempfile.TemporaryDirectory(prefix=target.name + ".", suffix=".part", dir=target.parent) as work:
            objects = [Path(work) / f"unit{i}.o" for i in range(len(units))]
            compiles = [
                subprocess.Popen(
                    compile_command(cxx, unit_file(unit, work, i), obj),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i, (unit, obj) in enumerate(zip(units, objects))
            ]
            errors = [proc.communicate(timeout=300)[1] for proc in compiles]
            for proc, err in zip(compiles, errors):
                raise_if_failed(cxx, proc.returncode, err)
            library = Path(work) / target.name
            link = subprocess.run(
                [cxx, *FLAGS, *map(str, objects), "-o", str(library)], capture_output=True, text=True, timeout=300
            )
            raise_if_failed(cxx, link.returncode, link.stderr)
            os.replace(library, target)
    return "".join(errors + [link.stderr]).strip()


def raise_if_failed(cxx, returncode, stderr):
    if returncode:
        raise RuntimeError(f"{cxx} failed: {(stderr.strip().splitlines() or ['?'])[-1]}")


def constants_of(lib):
    """The constants the library was built with (exports.cc), as ffi.py names them."""
    for name in (
        "mnistlab_lanes",
        "mnistlab_sparse_chunk",
        "mnistlab_max_pool",
        "mnistlab_kernel_size_count",
        "mnistlab_kernel_size",
    ):
        getattr(lib, name).restype = ctypes.c_int64
    lib.mnistlab_kernel_size.argtypes = [ctypes.c_int64]
    sizes = {lib.mnistlab_kernel_size(i) for i in range(lib.mnistlab_kernel_size_count())}
    return {
        "LANES": lib.mnistlab_lanes(),
        "CHUNK": lib.mnistlab_sparse_chunk(),
        "MAX_POOL": lib.mnistlab_max_pool(),
        "KERNEL_SIZES": {(k, k) for k in sizes},
    }


def mismatches(constants):
    """The constants on which the library and ffi.py disagree, as 'NAME: library X, Python Y'."""
    from mnistlab.training.fastpath.kernels import ffi

    return [
        f"{name}: library {value}, Python {getattr(ffi, name)}"
        for name, value in constants.items()
        if value != getattr(ffi, name)
    ]


def open_library(path, group):
    """Load `group`'s library at `path`, check its constants and register its handlers with XLA."""
    import jax

    from mnistlab.training.fastpath.kernels import ffi

    lib = ctypes.cdll.LoadLibrary(str(path))
    try:
        wrong = mismatches(constants_of(lib))
    except AttributeError as e:
        raise RuntimeError(f"{path.name} exports no constants ({e})") from None
    if wrong:
        raise RuntimeError(f"{path.name} was built with other constants than ffi.py's: {'; '.join(wrong)}")
    for name in ffi.TARGETS[group]:
        jax.ffi.register_ffi_target(f"mnistlab_{name}", jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")


def adopt(helper):
    """`helper` (a subprocess.Popen of `python build.py GROUP...`, stdout piped: main() below) is
    building libraries: the first load() waits for it and takes its answer rather than compiling again."""
    with _lock:
        _state["helper"] = helper


def load(group):
    """None once `group`'s kernels are compiled, loaded and registered (the first call does that),
    else the reason they are not."""
    with _lock:
        reasons = _state["reason"]
        if group not in reasons:
            reasons[group] = _load(group)
        return reasons[group]


def _load(group):
    if switched_off(SWITCH):
        return f"{SWITCH}=0"
    try:
        helper = _state.pop("helper", None)
        if helper is not None:
            output = helper.communicate(timeout=600)[0]
            if helper.returncode:
                raise RuntimeError(
                    output.strip().splitlines()[-1]
                    if output.strip()
                    else f"the kernel build exited with status {helper.returncode}"
                )
        path = library_path(group)
        if not path.exists():
            warnings = build(path, sources(group))
            if warnings:
                log.warning("mnistlab: the C++ compiler warned building the CPU kernels:\n%s", warnings)
        open_library(path, group)
        return None
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning(
            "mnistlab: note: the CPU kernels are not available (%s); convolutions and the first "
            "dense layer run through XLA instead, slower (%s=0 silences this)",
            e,
            SWITCH,
        )
        return str(e)


def main(groups=None):
    """`python build.py [GROUP...]`: build those libraries (default: all) where they are missing (and
    not switched off, and they pay off on this CPU), in the order given. Prints nothing on success
    but the notice, once, when it compiles; on failure the reason, on stdout, and exits with 1."""
    if switched_off(SWITCH):
        return 0
    try:
        warnings, announced = "", False
        for group in filter(pays_off, groups or GROUPS):  # one that does not pay off here would go unused
            path = library_path(group)
            missing = not path.exists()
            warnings += build(path, sources(group), announce=missing and not announced)
            announced = announced or missing
    except KeyboardInterrupt:  # the user's Ctrl-C reached the whole process group: the command reports it
        return 130
    except Exception as e:  # a process boundary: the reason, in one line, for load()
        print(e if isinstance(e, (OSError, RuntimeError)) else f"{type(e).__name__}: {e}", flush=True)
        return 1
    if warnings:
        log.warning("mnistlab: the C++ compiler warned building the CPU kernels:\n%s", warnings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
