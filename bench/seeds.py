"""Seed study: test accuracy over many seeds of one training recipe (the notebook DNN by default,
or a preset), per engine and dataset.

One process trains every seed (the dataset loaded once), so the figures are the distribution
`mnistlab train --seed S [--preset P] [--engine E] [--dataset D]` draws from. Prints one JSON line
per seed (test accuracy, the per-epoch validation accuracy, training seconds), then a summary.

  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --engine fast --seeds 0 19
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --engine keras --seeds 0 15
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --preset best --seeds 0 3
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --preset best --dataset fashion-mnist --seeds 0 3
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --preset best --set erase=0.5 --seeds 0 3
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/seeds.py --preset best --set members=2 --seeds 0 3
"""

import argparse
import json
import statistics
import time

import mnistlab.backend  # noqa: F401

from mnistlab import params
from mnistlab.data import load_dataset
from mnistlab.errors import UsageError
from mnistlab.training.loop import train
from mnistlab.training.presets import PRESETS, preset


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=("auto", "fast", "keras"), default="auto")
    p.add_argument("--model", help="default: the preset's, else dnn")
    p.add_argument("--preset", choices=list(PRESETS))
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=int, help="default: the preset's, else 10")
    p.add_argument("--seeds", nargs=2, type=int, default=(0, 10), metavar=("FIRST", "STOP"))
    p.add_argument("--bar", type=float, default=0.978, help="count the seeds below this test accuracy")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a training parameter over the preset's"
    )
    a = p.parse_args()
    settings = preset(a.preset, a.dataset)
    for item in a.set:
        name, _, value = item.partition("=")
        if name not in params.PARAMS or not value:
            p.error(f"--set {item!r}: expected NAME=VALUE, NAME a training parameter")
        try:
            settings[name] = params.check(name, value, f"--set {item}")
        except UsageError as e:
            p.error(str(e))
    settings.update({k: v for k, v in (("model", a.model), ("epochs", a.epochs)) if v is not None})
    if a.epochs is not None:  # those epochs instead of the preset's time budget, as `mnistlab train` does
        settings.pop("time_budget", None)
    data = load_dataset(a.dataset)
    accs, with_tta = [], []  # the plain test score, and with the preset's test-time augmentation
    for seed in range(*a.seeds):
        start = time.time()
        run = train(dataset=data, verbose=0, seed=seed, engine=a.engine, **settings)
        accs.append(run.metrics["test_accuracy"])
        tta_accuracy = run.metrics.get("tta_test_accuracy")
        if tta_accuracy is not None:
            with_tta.append(tta_accuracy)
        print(
            json.dumps(
                {
                    "preset": a.preset,
                    "set": a.set,
                    "dataset": a.dataset,
                    "engine": a.engine,
                    "seed": seed,
                    "test_accuracy": round(accs[-1], 4),
                    "tta_test_accuracy": None if tta_accuracy is None else round(tta_accuracy, 4),
                    "tta_seconds": run.metrics.get("tta_seconds"),
                    "val_accuracy": [round(v, 4) for v in run.history["val_accuracy"]],
                    "train_seconds": run.metrics["train_seconds"],
                    "epochs": run.metrics["epochs"],
                    "time_budget_s": run.metrics.get("time_budget_s"),
                    **{
                        k: v
                        for k, v in run.metrics.items()
                        if k.startswith(("budget_", "member_")) or k == "planned_epochs"
                    },
                    "time_to_target_s": run.metrics.get("time_to_target_s"),
                    "seconds": round(time.time() - start, 1),
                }
            ),
            flush=True,
        )
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(
        f"{a.preset or a.model or 'dnn'} on {a.dataset} ({a.engine}): {len(accs)} seeds, test accuracy mean "
        f"{statistics.mean(accs):.4f}, sd {sd:.4f}, min {min(accs):.4f}, max {max(accs):.4f}, "
        f"below {a.bar}: {sum(x < a.bar for x in accs)}"
    )
    if with_tta:
        print(
            f"with test-time augmentation: mean {statistics.mean(with_tta):.4f}, min {min(with_tta):.4f}, "
            f"max {max(with_tta):.4f}"
        )


if __name__ == "__main__":
    main()
