"""Side-by-side benchmark: mnistlab against the reference notebook on stock Keras (TensorFlow) and
against the same experiment in plain PyTorch.

Runs each task's commands in turn, interleaved, --runs times each, never two at once, who goes
first alternating from run to run, and prints each side's median whole-process wall time, median
peak RSS, test accuracy and the ratios. Sides:
  reference  ../shared/reference/seed_notebook.py on stock Keras + TensorFlow-CPU, in its own
             virtual environment (bench/.ref-venv), built on first use
  peer       ../shared/reference/peer_torch.py, the notebook's experiment in plain PyTorch (CPU),
             in bench/.peer-venv (torch 2.13.0 CPU), built on first use
  mnistlab   this checkout, as installed in .venv
  keras      stock Keras (on JAX) in .venv, no mnistlab: bench/infer.py (predict and evaluate only)
  baseline   an older checkout of mnistlab (--baseline DIR), run with .venv's packages

  .venv/bin/python bench/bench.py                      # every task, 3 runs of each side
  .venv/bin/python bench/bench.py --task dnn cnn --sides peer mnistlab --runs 3
  .venv/bin/python bench/bench.py --task search         # needs `mnistlab search`
  .venv/bin/python bench/bench.py --task fast99 --sides peer mnistlab
  .venv/bin/python bench/bench.py --cold                # empty mnistlab's cache before each of its runs
  .venv/bin/python bench/bench.py --task dnn --cold-vs-warm --runs 3   # first run against a warm one
  .venv/bin/python bench/bench.py --baseline ../old --no-reference     # old code vs new (and the peer)
  .venv/bin/python bench/bench.py --task tune                          # the tuning study (not in the default set)
  .venv/bin/python bench/bench.py --task tune --tune-timeout 60 --runs 1   # the same, a quick look
  .venv/bin/python bench/bench.py --task predict evaluate --sides keras peer mnistlab

Tasks (the same experiment on every side that runs it):
  dnn     notebook DNN, 10 epochs, batch 64, Adam, validation on the test set each epoch
          reference: seed_notebook.py --part dnn   peer: peer_torch.py --part dnn   mnistlab: mnistlab train --model dnn
  cnn     notebook CNN, same settings              reference and peer: --part cnn   mnistlab: mnistlab train --model cnn
  search  7 optimizers x 4 folds x 1 epoch + refit   reference: --part grid
          mnistlab: mnistlab search --batch-size 32 --optimizer-defaults keras (what the reference runs)
  fast99  time to 99.0% MNIST test accuracy, whole process
          peer: peer_torch.py --part cnn --target 0.99   mnistlab: mnistlab train --preset fast99
  tune    a TPE study of the notebook's CNN with median pruning, --tune-timeout seconds (default 600)
          peer: peer_optuna.py (Optuna + PyTorch)   mnistlab: mnistlab search --strategy tpe --timeout ...
          trials finished in the budget and the best model's test accuracy, seeds 0, 1, 2... (bench/tune.py)
  predict   one 28x28 test digit (a .npy file) named by a saved model, whole process
  evaluate  the 10,000 test images' accuracy, whole process
          the model: the notebook DNN after one epoch of `mnistlab train --export onnx` (untimed)
          mnistlab: mnistlab predict/evaluate RUN, through RUN/model.onnx (onnxruntime)
          keras: bench/infer.py loads RUN/model.keras   peer: bench/infer.py, the same weights as a
          state dict in peer_torch.py's DNN (torch); one untimed run of each side first

Caches: a plain run uses mnistlab's own cache (~/.cache/mnistlab: compiled XLA programs and CPU
kernels), warm after the first run. --cold gives each mnistlab run an empty cache folder (all of
it: XLA programs, kernels, any downloaded data; other programs' caches, such as matplotlib's,
stay); --cold-vs-warm runs each mnistlab side twice per round, once on an empty cache and once on a
warm one (primed by an untimed run first), interleaved, and reports cold / warm.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "reference"
REF_VENV = ROOT / "bench" / ".ref-venv"
REF_PACKAGES = ["tensorflow-cpu==2.21.0", "keras==3.15.1", "scikit-learn==1.9.1"]
PEER_VENV = ROOT / "bench" / ".peer-venv"
PEER_PACKAGES = ["torch==2.13.0", "numpy"]  # pinned: a bare `torch` would fetch a CUDA build
REFERENCE = Path(os.environ.get("MNISTLAB_REFERENCE", SHARED / "seed_notebook.py"))
PEER = Path(os.environ.get("MNISTLAB_PEER", SHARED / "peer_torch.py"))
MNISTLAB = ROOT / ".venv" / "bin" / "mnistlab"
TARGET = 0.99  # fast99's test accuracy
# task -> {side: the script's --part}; mnistlab (and baseline) run every task
TASKS = {
    "dnn": {"reference": "dnn", "peer": "dnn"},
    "cnn": {"reference": "cnn", "peer": "cnn"},
    "search": {"reference": "grid"},
    "fast99": {"peer": "cnn"},
    "predict": {"keras": "infer", "peer": "infer"},
    "evaluate": {"keras": "infer", "peer": "infer"},
}
INFER_TASKS = ("predict", "evaluate")
INFER = ROOT / "bench" / "infer.py"
SIDES = ("reference", "peer", "keras", "mnistlab", "baseline")


@dataclass(frozen=True)
class Side:
    name: str  # as printed: "peer", "mnistlab", "mnistlab cold", "baseline warm", ...
    kind: str  # reference, peer, mnistlab or baseline
    cache: str = "user"  # mnistlab's cache: "user" (~/.cache/mnistlab), "cold" (empty), "warm" (primed)


@dataclass
class Measurement:
    wall: float  # seconds, whole process
    rss: float  # peak RSS, MB
    accuracy: float
    note: str = ""
    train_s: float | None = None
    to_target_s: float | None = None


def ensure_venv(venv, packages, what):
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"building the {what}'s environment in {venv} ({', '.join(packages)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def measure(cmd, env, log, cwd=None):
    """Run cmd to completion: (wall seconds, peak RSS in MB, exit status)."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def failed(side, task, log, rc):
    kept = ROOT / "bench" / "out" / f"failed-{task}-{side.name.replace(' ', '-')}.log"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(log, kept)
    raise SystemExit(f"{side.name} {task} failed (exit {rc}); see {kept}")


def script_run(side, task, python, data, work):
    """One run of the reference notebook or the PyTorch peer."""
    result, log = work / f"{side.kind}.json", work / f"{side.kind}.log"
    result.unlink(missing_ok=True)
    script = REFERENCE if side.kind == "reference" else PEER
    cmd = [
        str(python),
        str(script),
        "--part",
        TASKS[task][side.kind],
        "--data",
        str(data / "mnist"),
        "--json",
        str(result),
    ]
    if task == "fast99":
        cmd += ["--target", str(TARGET)]
    env = dict(os.environ, KERAS_BACKEND="tensorflow") if side.kind == "reference" else dict(os.environ)
    wall, rss, rc = measure(cmd, env, log)
    if rc:
        failed(side, task, log, rc)
    got = json.loads(result.read_text())
    if task == "search":
        return Measurement(wall, rss, got["best_score"], f"best {got['best']}")
    return Measurement(
        wall, rss, got["test_accuracy"], train_s=got.get("train_s"), to_target_s=got.get("time_to_target_s")
    )


def mnistlab_command(task, program, out):
    if task == "search":
        # The same experiment the reference runs: its port hands batch_size through the Keras
        # wrapper's fit_kwargs, which its GridSearchCV clones do not use (its log shows 1407 steps
        # per 45,000-image fold: Keras' default batch of 32), with Keras 3's optimizer defaults.
        return program + ["search", "--batch-size", "32", "--optimizer-defaults", "keras", "--out", str(out)]
    if task == "fast99":
        return program + ["train", "--preset", "fast99", "--out", str(out)]
    return program + ["train", "--model", task, "--out", str(out)]


def cache_env(env, side, work):
    """Point mnistlab's cache where the side wants it. XDG_CACHE_HOME too, for older checkouts that
    know no MNISTLAB_CACHE; matplotlib's cache stays where it was (a first run of matplotlib is not
    mnistlab's first run)."""
    if side.cache == "user":
        return env
    root = work / f"cache-{side.name.replace(' ', '-')}"
    if side.cache == "cold":
        shutil.rmtree(root, ignore_errors=True)
    user_cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    env.setdefault("MPLCONFIGDIR", str(user_cache / "matplotlib"))
    env["XDG_CACHE_HOME"] = str(root)
    env["MNISTLAB_CACHE"] = str(root / "mnistlab")
    return env


def mnistlab_run(side, task, data, work, checkout=None):
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
    env = cache_env(env, side, work)
    log = work / f"{side.name.replace(' ', '-')}.log"
    # `python -m` puts the working folder first on sys.path, before PYTHONPATH: run the checkout's
    # code from the checkout, not this repository's from wherever bench.py was started.
    wall, rss, rc = measure(mnistlab_command(task, program, out), env, log, cwd=checkout)
    if rc:
        failed(side, task, log, rc)
    if task == "search":
        best = json.loads((out / "best.json").read_text())
        return Measurement(wall, rss, best["best_score"], f"best {best['best_params']}")
    metrics = json.loads((out / "metrics.json").read_text())
    return Measurement(
        wall,
        rss,
        metrics["test_accuracy"],
        train_s=metrics.get("train_seconds"),
        to_target_s=metrics.get("time_to_target_s"),
    )


def infer_setup(data, work, peer_python):
    """The predict and evaluate tasks' files, made untimed: a run folder (the notebook DNN, one epoch,
    with model.onnx), one test digit as .npy and, for the peer, the run's weights as a state dict."""
    import numpy as np
    from infer import test_set

    env = dict(os.environ, MNISTLAB_DATA=str(data), KERAS_BACKEND="jax")
    run, weights = work / "run", work / "weights.npz"
    train = [str(MNISTLAB), "train", "--model", "dnn", "--epochs", "1", "--export", "onnx", "--out", str(run), "-q"]
    subprocess.run(train, env=env, check=True, capture_output=True)
    x, y = test_set(data / "mnist")
    np.save(work / "digit.npy", np.rint(x[:1] * 255).astype(np.uint8).reshape(1, 28, 28))
    python = MNISTLAB.parent / "python"
    subprocess.run([str(python), str(INFER), "weights", str(run / "model.keras"), str(weights)], env=env, check=True)
    if peer_python:
        subprocess.run([str(peer_python), str(INFER), "state", str(weights), str(work / "state.pt")], check=True)
    return {"run": run, "digit": work / "digit.npy", "label": int(y[0]), "python": python, "state": work / "state.pt"}


def infer_run(side, task, data, files, peer_python):
    """One whole-process predict or evaluate of `side` on infer_setup's `files`."""
    source = str(files["digit"] if task == "predict" else data / "mnist")
    env = dict(os.environ, MNISTLAB_DATA=str(data), KERAS_BACKEND="jax", PEER_DIR=str(PEER.parent))
    if side.kind == "mnistlab":
        cmd = [str(MNISTLAB), task, str(files["run"]), *([source] if task == "predict" else []), "--json"]
    elif side.kind == "keras":
        cmd = [str(files["python"]), str(INFER), "keras", str(files["run"] / "model.keras"), task, source]
    else:
        cmd = [str(peer_python), str(INFER), "torch", str(files["state"]), task, source]
    log = files["run"].parent / f"{side.name}-{task}.log"
    wall, rss, rc = measure(cmd, env, log)
    if rc:
        failed(side, task, log, rc)
    text = log.read_text()
    start = min(i for i in (text.find("["), text.find("{")) if i >= 0)  # past any notice lines
    answer = json.JSONDecoder().raw_decode(text, start)[0]
    if task == "predict":
        digit = (answer[0] if isinstance(answer, list) else answer)["digit"]
        return Measurement(wall, rss, float(digit == files["label"]), f"digit {digit}")
    return Measurement(wall, rss, answer["test_accuracy"])


def mnistlab_offers(task):
    """Why this mnistlab cannot run `task`, or None."""
    if task == "search":
        probe = subprocess.run([str(MNISTLAB), "search", "--help"], capture_output=True)
        return None if probe.returncode == 0 else "`mnistlab search` is not available"
    if task == "fast99":
        probe = subprocess.run([str(MNISTLAB), "train", "--help"], capture_output=True, text=True)
        return None if "--preset" in probe.stdout else "`mnistlab train --preset` is not available yet"
    return None


def load():
    return os.getloadavg()[0]


def sides_for(args):
    kinds = list(args.sides or ["reference", "peer", "keras", "mnistlab"] + (["baseline"] if args.baseline else []))
    if not args.reference and "reference" in kinds:
        kinds.remove("reference")
    if "baseline" in kinds and not args.baseline:
        raise SystemExit("bench.py: the baseline side needs --baseline DIR")
    if args.cold_vs_warm:
        kinds = [k for k in kinds if k in ("mnistlab", "baseline")]
        return [Side(f"{k} {c}", k, c) for k in kinds for c in ("cold", "warm")]
    return [Side(k, k, "cold" if args.cold and k in ("mnistlab", "baseline") else "user") for k in kinds]


def ratios(sides):
    """(numerator, denominator, column title) for the ratio columns."""
    names = [s.name for s in sides]
    if any(s.cache == "warm" for s in sides):
        return [
            (f"{k} cold", f"{k} warm", f"{k} cold / warm") for k in ("mnistlab", "baseline") if f"{k} cold" in names
        ]
    if "mnistlab" not in names:
        return []
    return [(n, "mnistlab", f"{n} / mnistlab") for n in names if n != "mnistlab"]


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]),
    )
    ap.add_argument(
        "--task",
        nargs="+",
        choices=list(TASKS) + ["tune"],
        default=list(TASKS),
        help="default: every task but tune (an hour at its default budget)",
    )
    ap.add_argument(
        "--tune-timeout",
        type=float,
        default=600,
        metavar="SECONDS",
        help="the tune task's budget per study (default 600)",
    )
    ap.add_argument(
        "--tune-jobs", type=int, metavar="N", help="the tune task: mnistlab's trials in N processes (--jobs N)"
    )
    ap.add_argument("--runs", type=int, default=3, help="runs of each side per task (default 3)")
    ap.add_argument(
        "--data",
        default=os.environ.get("MNISTLAB_DATA", str(ROOT.parent / "shared" / "data")),
        help="folder holding mnist/ (default: $MNISTLAB_DATA)",
    )
    ap.add_argument(
        "--sides",
        nargs="+",
        choices=SIDES,
        help="which sides run (default: reference peer mnistlab, and baseline with --baseline)",
    )
    ap.add_argument("--cold", action="store_true", help="give each mnistlab run an empty cache folder")
    ap.add_argument(
        "--cold-vs-warm",
        action="store_true",
        help="each mnistlab side on an empty cache and on a warm one, interleaved (no other sides)",
    )
    ap.add_argument("--json", metavar="FILE", help="also write every measurement here")
    ap.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="also run an older checkout of mnistlab (e.g. a git worktree of an earlier commit)",
    )
    ap.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="leave the reference notebook out (as --sides without it)",
    )
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")

    data = Path(a.data)
    all_sides = sides_for(a)
    if not all_sides:
        ap.error("no side left to run")
    pythons = {}
    rows, raw = [], []
    for task in a.task:
        if task == "tune":  # its own measurements and table: bench/tune.py
            import tune

            kinds = tuple(k for k in ("peer", "mnistlab") if k in {s.kind for s in all_sides})
            peer = ensure_venv(PEER_VENV, PEER_PACKAGES, "PyTorch peer") if "peer" in kinds else None
            tune.run(peer, MNISTLAB, data, a.tune_timeout, a.runs, kinds, jobs=a.tune_jobs)
            continue
        why_not = mnistlab_offers(task) if any(s.kind == "mnistlab" for s in all_sides) else None
        own = ("mnistlab",) if task in INFER_TASKS else ("mnistlab", "baseline")
        sides = [s for s in all_sides if s.kind in TASKS[task] or s.kind in own]
        if why_not:
            print(f"{task}: mnistlab's side skipped ({why_not})")
            sides = [s for s in sides if s.kind != "mnistlab"]
        if not sides:
            print(f"{task}: skipped (no side runs it)")
            continue
        for s in sides:
            if s.kind in ("reference", "peer") and s.kind not in pythons:
                pythons[s.kind] = (
                    ensure_venv(REF_VENV, REF_PACKAGES, "reference")
                    if s.kind == "reference"
                    else ensure_venv(PEER_VENV, PEER_PACKAGES, "PyTorch peer")
                )
        results = {s.name: [] for s in sides}
        with tempfile.TemporaryDirectory(prefix=f"bench-{task}-") as tmp:
            work = Path(tmp)

            files = infer_setup(data, work, pythons.get("peer")) if task in INFER_TASKS else None

            def run(side, task=task, work=work, files=files):
                if files:
                    return infer_run(side, task, data, files, pythons.get("peer"))
                if side.kind in ("reference", "peer"):
                    return script_run(side, task, pythons[side.kind], data, work)
                return mnistlab_run(side, task, data, work, a.baseline if side.kind == "baseline" else None)

            for side in sides:
                if files:  # warm: the page cache holds each side's libraries, as for a user's second call
                    run(side)
                if side.cache == "warm":
                    print(f"{task:6s} {side.name}: priming its cache (untimed)", flush=True)
                    run(side)
            for i in range(a.runs):
                # Alternate who goes first, so slow drifts of the machine hit every side alike.
                for side in sides if i % 2 == 0 else sides[::-1]:
                    before = load()
                    m = run(side)
                    results[side.name].append(m)
                    raw.append(
                        {
                            "task": task,
                            "side": side.name,
                            "run": i + 1,
                            "wall_s": round(m.wall, 2),
                            "peak_rss_mb": round(m.rss),
                            "accuracy": m.accuracy,
                            "train_s": m.train_s,
                            "time_to_target_s": m.to_target_s,
                            "note": m.note,
                            "load_before": round(before, 2),
                        }
                    )
                    target = f"  to {TARGET} in {fmt(m.to_target_s, '.1f')} s" if task == "fast99" else ""
                    print(
                        f"{task:6s} {side.name:14s} run {i + 1}: {m.wall:7.1f} s  {m.rss:6.0f} MB  "
                        f"acc {m.accuracy:.4f}  train {fmt(m.train_s, '.1f')} s{target} {m.note}  "
                        f"(load {before:.1f})",
                        flush=True,
                    )
        med = {
            name: {
                "wall": statistics.median(r.wall for r in rs),
                "rss": statistics.median(r.rss for r in rs),
                "acc": statistics.median(r.accuracy for r in rs),
                "walls": [r.wall for r in rs],
                "to_target": [r.to_target_s for r in rs],
            }
            for name, rs in results.items()
        }
        rows.append((task, sides, med))

    for task, sides, med in rows:
        names = [s.name for s in sides]
        cols = ratios(sides)
        seconds = ".2f" if task in INFER_TASKS else ".1f"  # the light path takes well under a second
        print(f"\n{task}: medians of {a.runs} runs per side" + (" (mnistlab's cache empty)" if a.cold else ""))
        print(
            "| task | "
            + " | ".join(f"{n} wall (s)" for n in names)
            + "".join(f" | {title}" for _, _, title in cols)
            + " | "
            + " | ".join(f"{n} RSS (MB)" for n in names)
            + " | "
            + " | ".join(f"{n} acc" for n in names)
            + " |"
        )
        print("| --- |" + " ---: |" * (3 * len(names) + len(cols)))
        print(
            f"| {task} | "
            + " | ".join(f"{med[n]['wall']:{seconds}}" for n in names)
            + "".join(f" | {med[num]['wall'] / med[den]['wall']:.2f}x" for num, den, _ in cols)
            + " | "
            + " | ".join(f"{med[n]['rss']:.0f}" for n in names)
            + " | "
            + " | ".join(f"{med[n]['acc']:.4f}" for n in names)
            + " |"
        )
        print(
            "per run (s): " + "; ".join(f"{n} " + ", ".join(f"{w:{seconds}}" for w in med[n]["walls"]) for n in names)
        )
        if task == "fast99":  # the scripts' own clocks, from the start of training (None: never reached)
            print(
                f"training time to {TARGET} (s): "
                + "; ".join(f"{n} " + ", ".join(fmt(t, ".1f") for t in med[n]["to_target"]) for n in names)
            )
    print(f"\nload average now {load():.1f} on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
