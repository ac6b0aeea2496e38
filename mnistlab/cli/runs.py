"""mnistlab runs: the run folders under a folder, as one table."""

import argparse

EXAMPLES = """examples:
  mnistlab runs                          every run under runs/, oldest first
  mnistlab runs runs/ --sort accuracy -r best first
  mnistlab runs experiments/ --json      for scripts (status: finished, unfinished or damaged)"""


def add_parser(sub):
    from mnistlab.report.runs import SORT_KEYS

    p = sub.add_parser(
        "runs",
        help="list run folders: date, model, dataset, epochs, optimizer, test accuracy, time",
        description="Lists every run folder (mnistlab train) under DIR, subfolders included. "
        "A damaged one is listed with what is wrong with it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="default: runs")
    p.add_argument("--sort", choices=SORT_KEYS, default="date", help="column to sort by (default: date)")
    p.add_argument("-r", "--reverse", action="store_true", help="sort in descending order")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    return p


def run(args):
    import shutil
    import sys

    from mnistlab.report.runs import list_runs

    table = list_runs(args.dir, sort=args.sort, reverse=args.reverse)
    if args.json:
        print(table.json())
    else:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        print(table.text(width) if table else f"no run folders under {args.dir}")
