"""`mnistlab predict` on MNIST test digits made to look like photographs.

Each of the first N test digits is enlarged 4x, inverted to dark ink on light
paper, pasted off centre on a larger page and saved as JPEG (quality 75), as
tests/inference/test_recognize.py does. The real command (`python -m mnistlab predict
MODEL FILES... --json`) classifies them, and its answers are compared with the
same model's predictions on the original 28x28 arrays and with the labels.

    MNISTLAB_DATA=/work/shared/data .venv/bin/python bench/predict_photos.py runs/cnn10 -n 100
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    from mnistlab import load_model
    from mnistlab.data import load_dataset
    from mnistlab.inference import predict
    from tests.inference.test_recognize import transformed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help=".keras file or run folder")
    ap.add_argument("-n", type=int, default=100, help="test digits (default: 100)")
    ap.add_argument("--seed", type=int, default=0, help="placement of the digits on the page (default: 0)")
    a = ap.parse_args()

    data = load_dataset("mnist")
    x, y = data.x_test[: a.n], data.y_test[: a.n].astype(int)
    originals = predict(load_model(a.model), x).argmax(axis=1)
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, digit in enumerate(x):
            paths.append(os.path.join(folder, f"digit{i:04d}.jpg"))
            with open(paths[-1], "wb") as f:
                f.write(transformed(digit, rng))
        done = subprocess.run(
            [sys.executable, "-m", "mnistlab", "predict", a.model, *paths, "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
    photos = np.array([row["digit"] for row in json.loads(done.stdout)])
    print(
        json.dumps(
            {
                "digits": int(a.n),
                "agree_with_originals": int((photos == originals).sum()),
                "accuracy_originals": float((originals == y).mean()),
                "accuracy_photos": float((photos == y).mean()),
            }
        )
    )


if __name__ == "__main__":
    main()
