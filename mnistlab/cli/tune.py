"""`mnistlab search --strategy random|tpe`: the sampled studies' options and their run (a part
of `mnistlab search`, not a command of its own)."""

import argparse
import os
import time

from mnistlab.cli import positive_float, positive_int
from mnistlab.errors import UsageError

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("median", "hyperband", "none")
TUNE_OPTIONS = {
    "trials": "--trials",
    "timeout": "--timeout",
    "prune": "--prune",
    "validation_split": "--validation-split",
    "storage": "--storage",
}


def held_out(text):
    """--validation-split: a number of images (10000) or a fraction (0.2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or a fraction, got {text!r}") from None
    if not value > 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a number of images or a fraction in (0, 1), got {text!r}")
    return int(value) if value >= 1 else value


def add_options(p):
    t = p.add_argument_group("sampled studies (--strategy random or tpe; ranges: --grid NAME=LOW..HIGH[:log])")
    t.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="grid",
        help="grid: every combination, cross-validated (default); random or tpe: an Optuna study sampling the space",
    )
    t.add_argument("--trials", type=positive_int, metavar="N", help="the study's total number of trials")
    t.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="start no trial after this many seconds (with --trials: whichever comes first)",
    )
    t.add_argument("--prune", choices=PRUNERS, help="stop poor trials early (default: median)")
    t.add_argument(
        "--validation-split",
        type=held_out,
        metavar="N|FRAC",
        help="trials validate on the last N training images, or this fraction (default: 10,000 of 60,000: a sixth)",
    )
    t.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna RDB URL (sqlite:///study.db, postgresql://...) several machines share "
        "(default: study.journal in the search folder)",
    )


def refuse_for_grid(args):
    given = [flag for name, flag in TUNE_OPTIONS.items() if getattr(args, name) is not None]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise UsageError(f"{', '.join(given)} {verb} to --strategy random or tpe, not to a grid")


def run(args):
    from mnistlab.data import load_dataset
    from mnistlab.params import GRID_NAMES, from_args
    from mnistlab.search.parallel import check_cluster
    from mnistlab.search.space import build_space
    from mnistlab.search.study import check_storage_url
    from mnistlab.search.tune import plan_study, unfinished_study
    from mnistlab.storage import SearchFolder

    start = time.perf_counter()
    space = build_space(args.grid, args.grid_file)
    cluster = check_cluster(args.cluster)
    storage = check_storage_url(args.storage)
    if args.trials is None and args.timeout is None:
        raise UsageError(f"--strategy {args.strategy} needs --trials N, --timeout SECONDS or both")
    if args.tensorboard is not None or args.mlflow:
        raise UsageError(
            "--tensorboard and --mlflow record grid searches; a random or tpe study keeps its "
            "trials in its journal (open it with optuna-dashboard)"
        )
    params = {k: v for k, v in from_args(args).items() if k in GRID_NAMES}
    data = load_dataset(args.dataset, args.data_dir, verify=getattr(args, "verify", True))
    x, y = data.x_train[: args.limit], data.y_train[: args.limit]
    plan = plan_study(x, y, space, args.strategy, params, args.validation_split, args.prune or "median")
    out = args.out or unfinished_study("searches", plan) or os.path.join("searches", time.strftime("%Y%m%d-%H%M%S"))
    with SearchFolder(out) as folder:  # created, checked writable and locked for the whole study
        report(args, out, folder, study(args, plan, x, y, out, storage, cluster, data, start), len(y), start, storage)


def study(args, plan, x, y, out, storage, cluster, data, start):
    from mnistlab.search.tune import run_study

    say = None if args.quiet else (lambda line: print(line, flush=True))
    if say:
        bounds = " and ".join(
            b
            for b in (f"{args.trials} trials" if args.trials else "", f"{args.timeout:g} s" if args.timeout else "")
            if b
        )
        say(
            f"search folder: {out}  ({args.strategy} study, {bounds}, pruning: {plan.prune}; trials train on "
            f"{len(y) - plan.n_val} {args.dataset} images and validate on the last {plan.n_val})"
        )
    return run_study(
        plan,
        x,
        y,
        out=out,
        trials=args.trials,
        timeout=args.timeout,
        storage=storage,
        jobs=args.jobs,
        cluster=cluster,
        refit=args.refit,
        test_data=(data.x_test, data.y_test),
        progress=say,
    )


def report(args, out, folder, result, n_train, start, storage):
    from mnistlab.search.study import JOURNAL
    from mnistlab.search.trials import format_trials
    from mnistlab.text import metric_text

    print(format_trials(result.rows))
    print()
    if result.best:
        print(
            f"Best: trial {result.best['number']}, validation accuracy {result.best_score:.6f} using "
            f"{result.best_params}"
        )
    if result.test_metrics:
        print(
            f"best parameters refit on all {n_train} training images: "
            f"test accuracy {metric_text(result.test_metrics['test_accuracy'])} -> {folder.best_model_path}"
        )
    counts = ", ".join(f"{n} {state}" for state, n in result.counts.items() if n)
    print(
        f"wall time {time.perf_counter() - start:.1f} s ({result.ran} trials run here; study: {counts}); "
        f"results in {out}"
    )
    if storage is None:
        print(f"look at the study: optuna-dashboard {os.path.join(out, JOURNAL)}")
