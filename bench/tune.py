"""The tune task of bench/bench.py: one hyperparameter study, as an Optuna user writes it with plain
PyTorch (../shared/reference/peer_optuna.py) and as `mnistlab search --strategy tpe`, side by side.

The study (the same on both sides): the notebook's CNN; optimizer in {Adam, Nadam, RMSprop, Adamax},
lr log-uniform [1e-4, 1e-2], batch_size in {32, 64, 128, 256}, dropout uniform [0, 0.6], hidden
log-uniform integer [32, 512]; up to 5 epochs a trial on the first 50,000 training images,
validated on the last 10,000 after every epoch; TPE sampler, median pruner (3 startup trials,
pruning from the second epoch); --tune-timeout seconds of tuning, then the best model scored on the
test set (the peer: the best epoch of any trial, kept in memory; mnistlab: the best trial's
parameters refit on all 60,000 training images, after the budget).

Runs interleaved (who goes first alternates), --runs repetitions with seeds 0, 1, 2..., never two
at once, and prints per run and as medians: trials finished in the budget (complete + pruned),
best validation accuracy, test accuracy of the best model, wall time; then the issue's targets:
mnistlab finishes at least 3x the trials, and its best model's test accuracy is at least the
peer's (medians).

  .venv/bin/python bench/bench.py --task tune                          # 600 s studies, 3 runs each
  .venv/bin/python bench/bench.py --task tune --tune-timeout 60 --runs 1   # a quick look
  .venv/bin/python bench/bench.py --task tune --tune-jobs 2                # mnistlab's trials in 2 processes
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER = Path(os.environ.get("MNISTLAB_PEER_OPTUNA", ROOT.parent / "shared" / "reference" / "peer_optuna.py"))
PEER_EXTRA = ["optuna==5.1.0"]  # beside bench.py's PEER_PACKAGES (torch, numpy)
SPACE = [
    "--grid",
    "optimizer=Adam,Nadam,RMSprop,Adamax",
    "--grid",
    "lr=1e-4..1e-2:log",
    "--grid",
    "batch_size=32,64,128,256",
    "--grid",
    "dropout=0.0..0.6",
    "--grid",
    "hidden=32..512:log",
]


def mnistlab_program(mnistlab):
    """(command prefix, extra environment): .venv's mnistlab, or this checkout through `python -m`."""
    if Path(mnistlab).exists():
        return [str(mnistlab)], {}
    return [sys.executable, "-m", "mnistlab"], {"PYTHONPATH": str(ROOT)}


def ensure_peer(python):
    """The peer's environment also needs Optuna."""
    if subprocess.run([str(python), "-c", "import optuna"], capture_output=True).returncode:
        print(f"installing {', '.join(PEER_EXTRA)} into the peer's environment", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_EXTRA], check=True)


def run_peer(python, data, timeout, seed, work):
    result = work / "peer.json"
    result.unlink(missing_ok=True)
    cmd = [
        str(python),
        str(PEER),
        "--data",
        str(data / "mnist"),
        "--timeout",
        str(timeout),
        "--seed",
        str(seed),
        "--json",
        str(result),
    ]
    wall, _ = timed(cmd, dict(os.environ), work / "peer.log")
    got = json.loads(result.read_text())
    return {
        "wall_s": wall,
        "tune_s": got["tune_s"],
        "trials": got["complete"] + got["pruned"],
        "complete": got["complete"],
        "pruned": got["pruned"],
        "best_val": got["best_val_accuracy"],
        "test": got["best_test_accuracy"],
        "best": got["best_params"],
    }


def run_mnistlab(mnistlab, data, timeout, seed, work, jobs=None):
    out = work / "study"
    shutil.rmtree(out, ignore_errors=True)
    program, extra = mnistlab_program(mnistlab)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | extra | {"MNISTLAB_DATA": str(data)}
    cmd = program + [
        "search",
        "--strategy",
        "tpe",
        "--timeout",
        str(timeout),
        "--model",
        "cnn",
        "--epochs",
        "5",
        "--validation-split",
        "10000",
        "--prune",
        "median",
        "--seed",
        str(seed),
        "--out",
        str(out),
        *SPACE,
        *(["--jobs", str(jobs)] if jobs else []),
    ]
    wall, _ = timed(cmd, env, work / "mnistlab.log", cwd=ROOT)
    best = json.loads((out / "best.json").read_text())
    trials = best["trials"]
    return {
        "wall_s": wall,
        "tune_s": best["study_seconds"],
        "trials": trials["complete"] + trials["pruned"],
        "complete": trials["complete"],
        "pruned": trials["pruned"],
        "best_val": best["best_score"],
        "test": (best.get("test_metrics") or {}).get("test_accuracy"),
        "best": best["best_params"],
    }


def timed(cmd, env, log, cwd=None):
    with open(log, "w") as out:
        start = time.perf_counter()
        rc = subprocess.run(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
        ).returncode
        wall = time.perf_counter() - start
    if rc:
        kept = ROOT / "bench" / "out" / f"failed-tune-{Path(log).stem}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, kept)
        raise SystemExit(f"tune: {Path(log).stem} failed (exit {rc}); see {kept}")
    return wall, log


def run(
    peer_python, mnistlab, data, timeout=600, runs=3, sides=("peer", "mnistlab"), work=None, json_out=None, jobs=None
):
    """Both sides, interleaved; returns the measurements and prints the table."""
    import tempfile

    if "peer" in sides:
        ensure_peer(peer_python)
    results = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        work = Path(work or tmp)
        for i in range(runs):
            for side in sides if i % 2 == 0 else sides[::-1]:
                load = os.getloadavg()[0]
                m = (
                    run_peer(peer_python, data, timeout, i, work)
                    if side == "peer"
                    else run_mnistlab(mnistlab, data, timeout, i, work, jobs)
                )
                m |= {"seed": i, "load_before": round(load, 2)}
                results[side].append(m)
                print(
                    f"tune   {side:9s} run {i + 1} (seed {i}): {m['trials']:3d} trials ({m['complete']} complete, "
                    f"{m['pruned']} pruned) in {m['tune_s']:.0f} s, best val {m['best_val']:.4f}, "
                    f"test {fmt(m['test'])}, wall {m['wall_s']:.0f} s  best {m['best']}  (load {load:.1f})",
                    flush=True,
                )
    summary(results, timeout, runs)
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=1) + "\n")
    return results


def fmt(value):
    return "-" if value is None else f"{value:.4f}"


def median(results, side, key):
    values = [m[key] for m in results[side] if m[key] is not None]
    return statistics.median(values) if values else None


def summary(results, timeout, runs):
    sides = list(results)
    print(f"\ntune: {timeout:g} s studies, medians of {runs} run{'s' if runs > 1 else ''} per side")
    print("| side | trials | complete | pruned | best val acc | test acc | tuning (s) | wall (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for side in sides:
        print(
            f"| {side} | {median(results, side, 'trials'):g} | {median(results, side, 'complete'):g} | "
            f"{median(results, side, 'pruned'):g} | {fmt(median(results, side, 'best_val'))} | "
            f"{fmt(median(results, side, 'test'))} | {median(results, side, 'tune_s'):.0f} | "
            f"{median(results, side, 'wall_s'):.0f} |"
        )
    if set(sides) == {"peer", "mnistlab"}:
        ratio = median(results, "mnistlab", "trials") / max(1, median(results, "peer", "trials"))
        ours, theirs = median(results, "mnistlab", "test"), median(results, "peer", "test")
        print(
            f"targets: trials mnistlab / peer {ratio:.2f}x (>= 3: {'yes' if ratio >= 3 else 'NO'}); "
            f"test accuracy {fmt(ours)} vs {fmt(theirs)} "
            f"(>= peer: {'yes' if ours is not None and theirs is not None and ours >= theirs else 'NO'})"
        )


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(ROOT / "bench"))
    from bench import MNISTLAB, PEER_PACKAGES, PEER_VENV, ensure_venv

    ap = argparse.ArgumentParser(description="the tune task alone (bench.py --task tune runs the same)")
    ap.add_argument("--tune-timeout", type=float, default=600)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sides", nargs="+", choices=("peer", "mnistlab"), default=["peer", "mnistlab"])
    ap.add_argument("--data", default=os.environ.get("MNISTLAB_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    peer = ensure_venv(PEER_VENV, PEER_PACKAGES, "PyTorch peer") if "peer" in a.sides else None
    run(peer, MNISTLAB, Path(a.data), a.tune_timeout, a.runs, tuple(a.sides), json_out=a.json)
