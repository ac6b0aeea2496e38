"""mnistlab compare: several runs' learning curves on one figure, and a page about them."""

import argparse
import os

EXAMPLES = """examples:
  mnistlab compare runs/dnn runs/cnn                   compare.png
  mnistlab compare runs/* --out curves.png --report    curves.png and curves.html"""


def add_parser(sub):
    p = sub.add_parser(
        "compare",
        help="draw the learning curves of several runs on one figure",
        description="Each run gets one colour: its validation (test) curve solid, its "
        "training curve dashed; accuracy and loss side by side.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (from mnistlab train)")
    p.add_argument("--out", default="compare.png", metavar="PNG", help="the figure (default: compare.png)")
    p.add_argument(
        "--report",
        action="store_true",
        help="also write one HTML page (the figure, the runs' table, the settings that differ) "
        "beside the figure, as .html",
    )
    return p


def run(args):
    from mnistlab.report.compare import compare

    comparison = compare(args.runs)
    print(f"figure: {comparison.save(args.out)}")
    if args.report:
        print(f"report: {comparison.write_report(os.path.splitext(args.out)[0] + '.html')}")
