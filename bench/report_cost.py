"""What the run report's looks inside the model (report.insight: why, trust, learned; issue 27) cost,
against the run's own training time: each measured in a fresh process (imports and compilations
included, no XLA disk cache), --runs times, medians.

  MNISTLAB_DATA=../shared/data .venv/bin/mnistlab train --model cnn --epochs 10 --out /tmp/cnn10 -q
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/report_cost.py /tmp/cnn10 --runs 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

MEASURE = r"""
import sys, time
from mnistlab.data import load_dataset
from mnistlab.inference import predict
from mnistlab.report import insight
from mnistlab.report.run_page import run_page
from mnistlab.storage import RunFolder, load_model

run, part = sys.argv[1], sys.argv[2]
model = load_model(run)
config = RunFolder(run).read_config()
data = load_dataset(config.get("dataset", "mnist"))
probabilities = predict(model, data.x_test)
start = time.perf_counter()
if part == "insight":
    insight.sections(model, data.x_test, data.y_test.astype(int), probabilities, list(data.classes))
else:
    run_page(run, model=model, dataset=data)
print(time.perf_counter() - start)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a trained run folder")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    env = dict(os.environ, MNISTLAB_XLA_CACHE="0")
    seconds = {"insight": [], "page": []}
    for _ in range(a.runs):
        for part in seconds:
            done = subprocess.run(
                [sys.executable, "-c", MEASURE, a.run, part], capture_output=True, text=True, env=env, check=True
            )
            seconds[part].append(round(float(done.stdout.split()[-1]), 3))
    train = json.load(open(os.path.join(a.run, "metrics.json")))["train_seconds"]
    insight = statistics.median(seconds["insight"])
    print(json.dumps({"train_seconds": train, "insight_s": seconds["insight"], "page_s": seconds["page"]}))
    print(
        f"the new sections: {insight:.2f} s (median of {a.runs}), {100 * insight / train:.1f}% of the run's "
        f"{train:.1f} s of training; the whole page {statistics.median(seconds['page']):.2f} s"
    )


if __name__ == "__main__":
    main()
