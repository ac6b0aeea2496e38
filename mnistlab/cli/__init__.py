"""The `mnistlab` command: a thin shell over the Python API.

Each subcommand lives in its own module with `add_parser(subparsers)` and
`run(args)`; heavy imports (Keras, JAX) happen inside `run`, so `--help` is quick.
"""

import argparse
import importlib
import sys
import traceback

from mnistlab.errors import MnistlabError
from mnistlab.text import metric_text

COMMANDS = (
    "train",
    "evaluate",
    "calibrate",
    "show",
    "serve",
    "report",
    "predict",
    "explain",
    "export",
    "search",
    "runs",
    "compare",
)

EPILOG = """examples:
  mnistlab train                              the notebook's DNN: 10 epochs, batch 64, Adam
  mnistlab train --model cnn --epochs 10      the notebook's CNN
  mnistlab train --dataset fashion-mnist --out runs/fashion
  mnistlab evaluate runs/fashion --json
  mnistlab calibrate runs/fashion             fit a temperature: probabilities that say how far to trust them
  mnistlab show --index 7 --split test --out seven.png
  mnistlab report runs/fashion                runs/fashion/report.html, one page to look at
  mnistlab predict model.keras photo.jpg      which digit a picture shows
  mnistlab explain model.keras photo.jpg      ./photo-explain.png: which pixels made the answer
  mnistlab export runs/fashion --onnx         runs/fashion/model.onnx, for onnxruntime
  mnistlab search                             the notebook's grid search over seven optimizers
  mnistlab runs runs/ --sort accuracy -r      every run folder as a table, best first
  mnistlab compare runs/dnn runs/cnn --report their learning curves on one figure (and a page)
  mnistlab serve runs/fashion                 a page at http://127.0.0.1:8000 to draw a digit on

data: --data-dir, then $MNISTLAB_DATA/<dataset>/, the cache's <dataset>/,
/usr/share/datasets/<dataset>/, else a download from the public mirrors into the cache.
cache: $MNISTLAB_CACHE, else ~/.cache/mnistlab ($XDG_CACHE_HOME/mnistlab where set):
datasets, compiled kernels and XLA programs."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mnistlab",
        description="Deep networks on MNIST and Fashion-MNIST, from the notebook to software.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"mnistlab.cli.{name}")
        p = module.add_parser(sub)
        p.set_defaults(handler=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except MnistlabError as e:
        if args.debug:
            traceback.print_exc()
        print(f"mnistlab {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the environment failed us (disk full, permissions): say which file
        if args.debug:
            traceback.print_exc()
        where = f": {e.filename}" if e.filename else ""
        print(f"mnistlab {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mnistlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: one line, never a bare traceback
        if args.debug:
            traceback.print_exc()
        print(
            f"mnistlab {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def console(argv=None):
    """The `mnistlab` program: main(), then the exit (quick where the command allows it: cli/speed.py)."""
    from mnistlab.cli.speed import exit_now

    code = main(argv)
    command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    return exit_now(command, code)


def with_copies(metrics):
    """The end of a result line for a test-time augmented score ("" without one): train's and evaluate's."""
    if "tta_test_accuracy" not in metrics:
        return ""
    from mnistlab.inference import tta_copies

    return (
        f"  with test-time augmentation ({tta_copies(metrics)} copies): "
        f"test accuracy {metric_text(metrics['tta_test_accuracy'])}"
    )


def positive_int(text):
    """argparse's type for counts that are not training parameters (--jobs, --limit, --top...)."""
    from mnistlab.constraints import Interval

    return checked(Interval(int, 1), text)


def positive_float(text):
    from mnistlab.constraints import Interval

    return checked(Interval(float, 0, closed="neither"), text)


def checked(constraint, text):
    """`text` checked against a constraint (constraints.py), its error told argparse's way."""
    try:
        return constraint.check(text, "the value")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_unsafe_option(p):
    """--unsafe, for the commands that load a saved model."""
    p.add_argument("--unsafe", action="store_true", help="allow models that carry custom code")


def add_data_options(p, dataset=None):
    """--dataset, --data-dir, --no-verify. dataset: the default (None: mnistlab.params' own)."""
    from mnistlab.constraints import Options
    from mnistlab.params import PARAMS

    param = PARAMS["dataset"]
    assert isinstance(param.constraint, Options)  # a name among the datasets: argparse lists them
    default = dataset or param.default
    p.add_argument(
        "--dataset",
        default=default,
        choices=param.constraint.names(),
        help=param.help_text(default, choices_listed=True),
    )
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset's IDX files (or <dataset>/)")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="accept IDX files that are not the published ones (your own data)",
    )


def add_training_options(p, train=False, presettable=False, **defaults):
    """The training parameters `train` and `search` share (train=True: also train's own),
    from mnistlab.params' table; keyword arguments override defaults (search: epochs=1);
    presettable: a preset may replace the defaults (params.from_args)."""
    from mnistlab.params import add_options

    add_options(p, ("shared", "train") if train else ("shared",), defaults, presettable)
