"""`mnistlab predict` (one picture) and `mnistlab evaluate` on a run folder, whole process: through
onnxruntime where the folder holds a current model.onnx (the light path, no Keras or JAX), against
the same folder without it (Keras), interleaved, --runs times each, medians. Warm caches (one
untimed run of each first). Issue 28; the stock-Keras and PyTorch rows come with bench.py's
predict/evaluate tasks.

  MNISTLAB_DATA=../shared/data .venv/bin/mnistlab train --epochs 1 --export onnx --out /tmp/light -q
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/light_path.py /tmp/light --runs 5
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MNISTLAB = Path(sys.executable).parent / "mnistlab"


def timed(args):
    start = time.perf_counter()
    subprocess.run([str(MNISTLAB), *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder holding model.keras and model.onnx")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        light, keras_only = Path(tmp) / "light", Path(tmp) / "keras"
        shutil.copytree(a.run, light)
        shutil.copytree(a.run, keras_only)
        (keras_only / "model.onnx").unlink()
        picture = Path(tmp) / "digit.png"
        from PIL import Image

        from mnistlab.data import load_dataset

        Image.fromarray(load_dataset("mnist").x_test[0]).save(picture)
        commands = {
            (task, side): (["predict", str(folder), str(picture)] if task == "predict" else ["evaluate", str(folder)])
            for task in ("predict", "evaluate")
            for side, folder in (("onnx", light), ("keras", keras_only))
        }
        for args in commands.values():  # warm: compiled programs, the page cache
            timed(args)
        seconds = {key: [] for key in commands}
        for i in range(a.runs):
            for key in sorted(commands, reverse=bool(i % 2)):  # who goes first alternates
                seconds[key].append(timed(commands[key]))
    for task in ("predict", "evaluate"):
        onnx, keras = (statistics.median(seconds[(task, side)]) for side in ("onnx", "keras"))
        runs = "; ".join(
            f"{side} " + ", ".join(f"{s:.2f}" for s in seconds[(task, side)]) for side in ("onnx", "keras")
        )
        print(f"{task}: model.onnx {onnx:.2f} s, Keras {keras:.2f} s, {keras / onnx:.1f}x  ({runs})")


if __name__ == "__main__":
    main()
