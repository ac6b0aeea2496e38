"""mnistlab search: the notebook's GridSearchCV, resumable and distributable."""

import argparse
import os
import textwrap
import time

from mnistlab.cli import add_data_options, add_training_options, positive_int, tracking, tune  # tune: random|tpe

EXAMPLES = """examples:
  mnistlab search                                 the notebook's grid: 7 optimizers, cv=4, 1 epoch
  mnistlab search --grid optimizer=SGD,Adam --grid lr=0.001,0.01 --cv 4 --epochs 1
  mnistlab search --grid hidden=400x100,200x50 --grid dropout=0.2,0.5 --jobs 2
  mnistlab search --grid-file grid.yaml --out searches/big --cluster tcp://10.0.0.5:8786
  mnistlab search --limit 6000 --cv 3              quick: the first 6000 training images
  mnistlab search --strategy tpe --trials 50 --model cnn --epochs 5 --grid optimizer=Adam,Nadam
      --grid lr=1e-4..1e-2:log --grid hidden=32..512:log --grid dropout=0..0.6
                                                  an Optuna study: sampled, pruned, resumable

parameters (--grid NAME=VALUE,VALUE,...; layer sizes written 400x100):
{names}.
A grid file (.json, .yaml) maps names to lists of values, or is a list of such maps.
With --strategy random or tpe a parameter may also be a range: LOW..HIGH (uniform) or
LOW..HIGH:log (log-uniform); integer ends give integers. The study lives in the search
folder's study.journal (or --storage URL): rerun the same command to continue it.
Every finished fit is recorded in the search folder; rerun the same command (same
--out, or none) to finish an interrupted search without redoing those fits."""


def add_parser(sub):
    from mnistlab.params import GRID_NAMES
    from mnistlab.search.grid import NOTEBOOK_CV, NOTEBOOK_PARAMS

    names = textwrap.fill(", ".join(GRID_NAMES), width=90, break_on_hyphens=False)
    p = sub.add_parser(
        "search",
        help="cross-validated grid search over training parameters",
        epilog=EXAMPLES.format(names=names),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("grid")
    g.add_argument(
        "--grid",
        action="append",
        metavar="NAME=V,V",
        default=[],
        help="a parameter and its candidate values (repeatable)",
    )
    g.add_argument("--grid-file", metavar="FILE", help="grid as JSON or YAML")
    g.add_argument("--cv", type=int, default=NOTEBOOK_CV, help=f"cross-validation folds (default: {NOTEBOOK_CV})")
    f = p.add_argument_group("fixed parameters (those the grid does not vary)")
    add_training_options(f, **{k: v for k, v in NOTEBOOK_PARAMS.items() if k != "model"})
    d = p.add_argument_group("data and workers")
    add_data_options(d)
    d.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N training images")
    d.add_argument(
        "--jobs",
        type=positive_int,
        metavar="N",
        help="parallel worker processes, one CPU thread each (default: 1; --cluster local: one per CPU)",
    )
    d.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the fits on a Dask cluster: tcp://HOST:PORT, or 'local' (needs mnistlab[dask])",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="search folder (default: an unfinished search with the same settings under "
        "searches/, else searches/<timestamp>)",
    )
    p.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="skip training the best parameters on all training images (best_model.keras)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the results")
    tracking.add_options(p)
    tune.add_options(p)
    return p


def run(args):
    from mnistlab.data import load_dataset
    from mnistlab.params import GRID_NAMES, from_args
    from mnistlab.search.grid import build_grid
    from mnistlab.search.parallel import check_cluster
    from mnistlab.search.results import format_table, notebook_lines
    from mnistlab.search.run import plan_search, run_search, unfinished_search
    from mnistlab.storage import SearchFolder
    from mnistlab.text import metric_text

    if args.strategy != "grid":
        return tune.run(args)
    tune.refuse_for_grid(args)
    start = time.perf_counter()
    grid = build_grid(args.grid, args.grid_file)
    cluster = check_cluster(args.cluster)
    tracking.check(args)
    params = {k: v for k, v in from_args(args).items() if k in GRID_NAMES}
    data = load_dataset(args.dataset, args.data_dir, verify=getattr(args, "verify", True))
    x, y = data.x_train[: args.limit], data.y_train[: args.limit]
    plan = plan_search(x, y, grid, args.cv, params)
    out = args.out or unfinished_search("searches", plan) or os.path.join("searches", time.strftime("%Y%m%d-%H%M%S"))
    with SearchFolder(out) as folder:  # created, checked writable and locked for the whole search
        say = None if args.quiet else (lambda line: print(line, flush=True))
        if say:
            say(
                f"search folder: {out}  ({len(plan.candidates)} parameter sets x {plan.cv} folds "
                f"on {len(y)} {args.dataset} training images)"
            )
        result = run_search(
            plan,
            x,
            y,
            out=out,
            jobs=args.jobs,
            cluster=cluster,
            refit=args.refit,
            test_data=(data.x_test, data.y_test),
            progress=say,
        )
        print(format_table(result.rows))
        print()
        print(notebook_lines(result.rows))
        if result.test_metrics:
            print(
                f"best parameters refit on all {len(y)} training images: "
                f"test accuracy {metric_text(result.test_metrics['test_accuracy'])} -> {folder.best_model_path}"
            )
        print(
            f"wall time {time.perf_counter() - start:.1f} s ({result.computed} fits run, {result.reused} reused); "
            f"results in {out}"
        )
        for line in tracking.log_search(args, out, result):
            print(line)
