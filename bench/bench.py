"""Side-by-side benchmark: the reference notebook on stock Keras (TensorFlow) vs mnistlab.

Runs each task's two commands in turn, interleaved, --runs times each, never
two at once, and prints each side's median whole-process wall time, median
peak RSS, test accuracy and the ratio. The reference gets its own virtual
environment (bench/.ref-venv: tensorflow-cpu and keras from PyPI), built on
first use.

  .venv/bin/python bench/bench.py                      # all tasks, 3 runs each
  .venv/bin/python bench/bench.py --task dnn --runs 5
  .venv/bin/python bench/bench.py --task search         # needs `mnistlab search`
  .venv/bin/python bench/bench.py --cold                # clear mnistlab's compiled-program cache before each run
  .venv/bin/python bench/bench.py --baseline ../old     # also an older checkout of mnistlab, same venv, interleaved
  .venv/bin/python bench/bench.py --baseline ../old --no-reference   # old code vs new only

Tasks (same experiment on both sides):
  dnn     notebook DNN, 10 epochs, batch 64, Adam, validation on the test set each epoch
          reference: seed_notebook.py --part dnn     mnistlab: mnistlab train --model dnn
  cnn     notebook CNN, same settings                reference: --part cnn     mnistlab: mnistlab train --model cnn
  search  7 optimizers x 4 folds x 1 epoch + refit   reference: --part grid
          mnistlab: mnistlab search --batch-size 32 --optimizer-defaults keras (what the reference runs)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF_VENV = ROOT / "bench" / ".ref-venv"
REF_PACKAGES = ["tensorflow-cpu==2.21.0", "keras==3.15.1", "scikit-learn==1.9.1"]
REFERENCE = Path(os.environ.get("MNISTLAB_REFERENCE", ROOT.parent / "shared" / "reference" / "seed_notebook.py"))
MNISTLAB = ROOT / ".venv" / "bin" / "mnistlab"
TASKS = {"dnn": "dnn", "cnn": "cnn", "search": "grid"}  # our task -> the reference's --part


def ensure_ref_venv():
    python = REF_VENV / "bin" / "python"
    if python.exists():
        return python
    print(f"building the reference's environment in {REF_VENV} ({', '.join(REF_PACKAGES)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(REF_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *REF_PACKAGES], check=True)
    return python


def measure(cmd, env, log):
    """Run cmd to completion: (wall seconds, peak RSS in MB, exit status)."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def reference_run(task, python, data, work):
    result = work / "ref.json"
    cmd = [str(python), str(REFERENCE), "--part", TASKS[task], "--data", str(data / "mnist"),
           "--json", str(result)]
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    wall, rss, rc = measure(cmd, env, work / "ref.log")
    if rc:
        raise SystemExit(f"reference {task} failed (exit {rc}); see {work / 'ref.log'}")
    got = json.loads(result.read_text())
    if task == "search":
        return wall, rss, got["best_score"], f"best {got['best']}"
    return wall, rss, got["test_accuracy"], ""


def mnistlab_run(task, data, work, cold, checkout=None):
    """One run of mnistlab as installed in .venv, or of the code in `checkout` (an older
    checkout of this repository, run with .venv's packages)."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # mnistlab's own default backend
    env["MNISTLAB_DATA"] = str(data)
    program = [str(MNISTLAB)]
    if checkout:
        env["PYTHONPATH"] = str(checkout)
        program = [str(MNISTLAB.parent / "python"), "-m", "mnistlab"]
    if cold:
        env["XDG_CACHE_HOME"] = str(work / "cold-cache")
        shutil.rmtree(work / "cold-cache", ignore_errors=True)
    if task == "search":
        # The same experiment the reference runs: its port hands batch_size through the Keras
        # wrapper's fit_kwargs, which its GridSearchCV clones do not use (its log shows 1407 steps
        # per 45,000-image fold: Keras' default batch of 32), with Keras 3's optimizer defaults.
        cmd = program + ["search", "--batch-size", "32", "--optimizer-defaults", "keras", "--out", str(out)]
    else:
        cmd = program + ["train", "--model", task, "--out", str(out)]
    log = work / ("baseline.log" if checkout else "mnistlab.log")
    wall, rss, rc = measure(cmd, env, log)
    if rc:
        kept = ROOT / "bench" / "out" / f"failed-{task}-{log.stem}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, kept)
        raise SystemExit(f"mnistlab {task} failed (exit {rc}); see {kept}")
    if task == "search":
        best = json.loads((out / "best.json").read_text())
        return wall, rss, best["best_score"], f"best {best['best_params']}"
    metrics = json.loads((out / "metrics.json").read_text())
    return wall, rss, metrics["test_accuracy"], ""


def search_available():
    probe = subprocess.run([str(MNISTLAB), "search", "--help"], capture_output=True)
    return probe.returncode == 0


def load():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", nargs="+", choices=list(TASKS), default=list(TASKS))
    ap.add_argument("--runs", type=int, default=3, help="runs of each side per task (default 3)")
    ap.add_argument("--data", default=os.environ.get("MNISTLAB_DATA", str(ROOT.parent / "shared" / "data")),
                    help="folder holding mnist/ (default: $MNISTLAB_DATA)")
    ap.add_argument("--cold", action="store_true",
                    help="empty mnistlab's compiled-program cache before each of its runs")
    ap.add_argument("--json", metavar="FILE", help="also write every measurement here")
    ap.add_argument("--baseline", metavar="DIR", type=Path,
                    help="also run an older checkout of mnistlab (e.g. a git worktree of an earlier commit)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the reference notebook (with --baseline: old code against new only)")
    a = ap.parse_args()

    data = Path(a.data)
    ref_python = ensure_ref_venv() if a.reference else None
    sides = (["reference"] if a.reference else []) + ["mnistlab"] + (["baseline"] if a.baseline else [])
    if len(sides) < 2:
        ap.error("nothing to compare: --no-reference needs --baseline")
    rows, raw = [], []
    for task in a.task:
        if task == "search" and not search_available():
            print("search: skipped (`mnistlab search` is not available yet)")
            continue
        results = {side: [] for side in sides}
        with tempfile.TemporaryDirectory(prefix=f"bench-{task}-") as tmp:
            work = Path(tmp)
            for i in range(a.runs):
                # Alternate who goes first, so slow drifts of the machine hit every side alike.
                order = sides if i % 2 == 0 else sides[::-1]
                for side in order:
                    before = load()
                    if side == "reference":
                        m = reference_run(task, ref_python, data, work)
                    else:
                        m = mnistlab_run(task, data, work, a.cold, a.baseline if side == "baseline" else None)
                    results[side].append(m)
                    raw.append({"task": task, "side": side, "run": i + 1, "wall_s": round(m[0], 2),
                                "peak_rss_mb": round(m[1]), "accuracy": m[2], "note": m[3],
                                "load_before": round(before, 2)})
                    print(f"{task:6s} {side:9s} run {i + 1}: {m[0]:7.1f} s  {m[1]:6.0f} MB  acc {m[2]:.4f} "
                          f"{m[3]}  (load {before:.1f})", flush=True)
        med = {side: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
                      statistics.median(r[2] for r in rs)) for side, rs in results.items()}
        rows.append((task, med))

    print()
    others = [side for side in sides if side != "mnistlab"]
    print("| task | " + " | ".join(f"{side} wall (s)" for side in sides)
          + " | " + " | ".join(f"{side} / mnistlab" for side in others)
          + " | " + " | ".join(f"{side} RSS (MB)" for side in sides)
          + " | " + " | ".join(f"{side} acc" for side in sides) + " |")
    print("| --- |" + " ---: |" * (3 * len(sides) + len(others)))
    for task, med in rows:
        m = med["mnistlab"]
        print(f"| {task} | " + " | ".join(f"{med[s][0]:.1f}" for s in sides)
              + " | " + " | ".join(f"{med[s][0] / m[0]:.2f}x" for s in others)
              + " | " + " | ".join(f"{med[s][1]:.0f}" for s in sides)
              + " | " + " | ".join(f"{med[s][2]:.4f}" for s in sides) + " |")
    print(f"\nmedians of {a.runs} runs per side{' (mnistlab cache cold)' if a.cold else ''}; "
          f"load average now {load():.1f} on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
