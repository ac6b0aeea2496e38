"""The `mnistlab` command: a thin shell over the Python API.

Each subcommand lives in its own module with `add_parser(subparsers)` and
`run(args)`; heavy imports (Keras, JAX) happen inside `run`, so `--help` is quick.
"""
import argparse
import importlib
import sys
import traceback

from mnistlab.errors import MnistlabError

COMMANDS = ("train", "evaluate", "show", "serve", "report", "predict", "search")

EPILOG = """examples:
  mnistlab train                              the notebook's DNN: 10 epochs, batch 64, Adam
  mnistlab train --model cnn --epochs 10      the notebook's CNN
  mnistlab train --dataset fashion-mnist --out runs/fashion
  mnistlab evaluate runs/fashion --json
  mnistlab show --index 7 --split test --out seven.png
  mnistlab report runs/fashion                runs/fashion/report.html, one page to look at
  mnistlab predict model.keras photo.jpg      which digit a picture shows
  mnistlab search                             the notebook's grid search over seven optimizers
  mnistlab serve runs/fashion                 a page at http://127.0.0.1:8000 to draw a digit on

data: --data-dir, then $MNISTLAB_DATA/<dataset>/, ~/.cache/mnistlab/<dataset>/,
/usr/share/datasets/<dataset>/, else a download from the public mirrors."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mnistlab", description="Deep networks on MNIST and Fashion-MNIST, from the notebook to software.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    except Exception as e:  # noqa: BLE001  (last resort: one line, never a bare traceback)
        if args.debug:
            traceback.print_exc()
        print(f"mnistlab {args.command}: internal error: {type(e).__name__}: {e} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def console(argv=None):
    """The `mnistlab` program: main(), then the exit (quick where the command allows it: cli/speed.py)."""
    from mnistlab.cli.speed import exit_now

    code = main(argv)
    command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    return exit_now(command, code)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def fraction(text):
    value = positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return values


def add_data_options(p):
    from mnistlab.data.registry import DATASETS

    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="default: mnist")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset's IDX files (or <dataset>/)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="accept IDX files that are not the published ones (your own data)")


def add_training_options(p, epochs=10, optimizer_defaults="keras"):
    """The training parameters `train` and `search` share, with TrainConfig's names."""
    from mnistlab.models import MODELS
    from mnistlab.optimizers import DEFAULT_LR, NAMES

    other = {"keras": "notebook (Keras 2)", "notebook": "keras (Keras 3)"}[optimizer_defaults]
    p.add_argument("--model", default="dnn", choices=sorted(MODELS), help="default: dnn")
    p.add_argument("--epochs", type=positive_int, default=epochs, help=f"default: {epochs}")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default: 64")
    p.add_argument("--optimizer", default="Adam", metavar="NAME", help=f"one of {', '.join(NAMES)} (default: Adam)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the optimizer's)")
    p.add_argument("--optimizer-defaults", default=optimizer_defaults, choices=sorted(DEFAULT_LR),
                   help=f"whose optimizer defaults: {optimizer_defaults} (default) or {other}")
    p.add_argument("--hidden", type=int_list, metavar="N,N", help="hidden dense sizes (dnn: 400,100; cnn: 320)")
    p.add_argument("--dropout", type=float, default=0.5, help="default: 0.5")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
