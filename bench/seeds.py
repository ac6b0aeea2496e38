"""Seed study: the notebook DNN's test accuracy after 10 epochs over many seeds, per engine.

One process trains every seed (the dataset loaded once), so the figures are the
distribution `mnistlab train --seed S [--engine E]` draws from. Prints one JSON
line per seed (test accuracy and the per-epoch validation accuracy), then a summary.

  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --engine fast --seeds 0 19
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --engine keras --seeds 0 15
"""
import argparse
import json
import statistics
import time

import mnistlab.backend  # noqa: F401
from mnistlab.data import load_dataset
from mnistlab.training.loop import train


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=("fast", "keras"), default="fast")
    p.add_argument("--model", default="dnn")
    p.add_argument("--seeds", nargs=2, type=int, default=(0, 10), metavar=("FIRST", "STOP"))
    p.add_argument("--bar", type=float, default=0.978, help="count the seeds below this test accuracy")
    a = p.parse_args()
    data = load_dataset("mnist")
    accs = []
    for seed in range(*a.seeds):
        start = time.time()
        run = train(dataset=data, verbose=0, seed=seed, engine=a.engine, model=a.model)
        accs.append(run.metrics["test_accuracy"])
        print(json.dumps({"engine": a.engine, "seed": seed, "test_accuracy": round(accs[-1], 4),
                          "val_accuracy": [round(v, 4) for v in run.history["val_accuracy"]],
                          "seconds": round(time.time() - start, 1)}), flush=True)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"{a.engine}: {len(accs)} seeds, test accuracy mean {statistics.mean(accs):.4f}, sd {sd:.4f}, "
          f"min {min(accs):.4f}, max {max(accs):.4f}, below {a.bar}: {sum(x < a.bar for x in accs)}")


if __name__ == "__main__":
    main()
