"""A first run on a fresh machine: `mnistlab train` starts compiling the CPU kernels before it imports
Keras, in a process of its own; whoever compiles says so in one line, a warm cache prints nothing,
processes that build at once build once, and a broken compiler still leaves a run that trains."""

import os
import subprocess
import sys

import pytest

from mnistlab.training.fastpath.kernels import build

NOTICE = "mnistlab: compiling the CPU kernels"
needs_compiler = pytest.mark.skipif(build.compiler() is None and not os.environ.get("CI"), reason="no C++ compiler")


def env_for(cache, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("MNISTLAB_KERNELS", "CXX", "KERAS_BACKEND")}
    # always: these tests are about building the kernels, on any CPU they build on (build.NEEDS)
    return dict(env, MNISTLAB_CACHE=str(cache), MNISTLAB_KERNELS="always", **extra)


def train(data, out):
    return [
        sys.executable,
        "-m",
        "mnistlab",
        "train",
        "--data-dir",
        str(data),
        "--no-verify",
        "--epochs",
        "1",
        "-q",
        "--out",
        str(out),
    ]


@pytest.mark.slow
@needs_compiler
def test_a_first_run_compiles_once_and_says_so_a_warm_one_says_nothing(tmp_path, synthetic_dir, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MNISTLAB_CACHE", str(cache))
    stale = cache / "kernels" / "kernels-0123456789abcdef.so.x1y2.part"  # as a killed build leaves it
    stale.mkdir(parents=True)
    (stale / "unit0.o").write_bytes(b"half")
    env = env_for(cache)
    # A second builder racing the command's own: the file lock must make one of them wait and find it built.
    racer = subprocess.Popen(
        [sys.executable, str(build.HERE / "build.py"), "dense"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = subprocess.run(
        train(synthetic_dir, tmp_path / "run1"), env=env, capture_output=True, text=True, timeout=600
    )
    raced = racer.communicate(timeout=600)
    assert first.returncode == 0 and racer.returncode == 0, first.stderr + raced[0] + raced[1]
    assert (first.stderr + raced[1]).count(NOTICE) == 1, first.stderr + raced[1]
    assert "not available" not in first.stderr and "Traceback" not in first.stderr + raced[1]
    assert "test accuracy" in first.stdout
    built = sorted(p.name for p in (cache / "kernels").iterdir())
    # The DNN's one library, nothing half-built, the stale part gone:
    assert built == [".build.lock", build.library_path("dense").name]

    # A warm cache: the command's helper (started before anything heavy is imported, which is what lets
    # it overlap Keras' import) finds the library and prints nothing.
    probe = (
        "import sys\n"
        "from mnistlab.cli import speed\n"
        "from mnistlab.training.config import TrainConfig\n"
        "helper = speed.start_kernel_build(TrainConfig())\n"
        "print(sorted(m for m in ('jax', 'keras') if m in sys.modules), helper.wait())\n"
    )
    warm = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert warm.stdout.split() == ["[]", "0"] and warm.stderr == "", warm.stdout + warm.stderr


@pytest.mark.slow
def test_a_broken_compiler_still_trains_with_one_note(tmp_path, synthetic_dir):
    """The command's helper fails to compile: the run says why in one line and trains through XLA's route."""
    env = env_for(tmp_path / "cache", CXX="false")  # a compiler that exists and fails
    done = subprocess.run(train(synthetic_dir, tmp_path / "run"), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    assert done.stderr.count("the CPU kernels are not available (false failed") == 1, done.stderr
    assert done.stderr.count(NOTICE) == 1 and "Traceback" not in done.stderr
    assert not list((tmp_path / "cache").rglob("kernels*.so*"))


def test_the_command_starts_no_build_where_it_would_not_use_the_kernels(monkeypatch):
    from mnistlab.cli import speed
    from mnistlab.training.config import TrainConfig

    assert speed.start_kernel_build(TrainConfig(engine="keras")) is None
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert speed.start_kernel_build(TrainConfig()) is None
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert speed.start_kernel_build(TrainConfig()) is None


@needs_compiler
def test_the_command_builds_the_kernels_its_model_uses(monkeypatch):
    """speed.KERNELS_OF, written out so the build can start before Keras is imported, is what the
    lowering of each named model calls (on a CPU where every library pays off: build.NEEDS)."""
    monkeypatch.setenv(build.SWITCH, "always")
    from mnistlab.cli import speed
    from mnistlab.models import MODELS, build_model
    from mnistlab.training.fastpath import Unsupported
    from mnistlab.training.fastpath.lowering import lower

    assert set(speed.KERNELS_OF) == set(MODELS)
    for name in MODELS:
        try:
            ops = lower(build_model(name), "chwn").ops
        except Unsupported:  # trained by Keras' fit
            ops = ()
        used = ({"dense"} if any(getattr(op, "sparse", False) for op in ops) else set()) | (
            {"conv"} if any(getattr(op, "route", "xla") != "xla" for op in ops) else set()
        )
        assert set(speed.KERNELS_OF[name]) == used, name


def test_the_sources_split_into_units_that_cover_each_once():
    for count in range(1, len(build.SOURCES) + 3):
        units = build.compile_units(build.SOURCES, count)
        assert len(units) == min(count, len(build.SOURCES)) and all(units)
        assert sorted(p for unit in units for p in unit) == sorted(build.SOURCES)
    assert build.spare_cores() >= 1
