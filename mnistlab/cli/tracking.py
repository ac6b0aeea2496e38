"""--tensorboard and --mlflow, the options `train` and `search` share: which trackers
(mnistlab.training.tracking for a run, mnistlab.search.tracking for a search) a command runs,
and where they write."""

import contextlib
import os

TENSORBOARD_HELP = (
    "write TensorBoard event files to FOLDER/tensorboard, or with DIR to DIR/<folder name> "
    "(then: tensorboard --logdir DIR)"
)
MLFLOW_HELP = "also log to MLflow at tracking URI (sqlite:///mlflow.db, http://HOST:5000, ...; needs mnistlab[mlflow])"


def add_options(p):
    p.add_argument("--tensorboard", nargs="?", const="", metavar="DIR", help=TENSORBOARD_HELP)
    p.add_argument("--mlflow", metavar="URI", help=MLFLOW_HELP)


def tensorboard_dir(args, out):
    """Where the event files of the run or search folder `out` go, or None without --tensorboard."""
    if args.tensorboard is None:
        return None
    from mnistlab.training.tracking import TENSORBOARD_DIR

    if not args.tensorboard:
        return os.path.join(out, TENSORBOARD_DIR)
    return os.path.join(args.tensorboard, os.path.basename(os.path.abspath(out)))


@contextlib.contextmanager
def run_trackers(args, out, config):
    """The callbacks that log a training run to the trackers asked for. train() tells them when the
    run fails (RunCallback.on_run_failed: MLflow marks the run failed rather than leave it 'running');
    so does this, for what fails around train() (the dataset read meanwhile, cli/speed.py)."""
    trackers = []
    logdir = tensorboard_dir(args, out)
    if logdir:
        from mnistlab.training.tracking import TensorBoardLog

        trackers.append(TensorBoardLog(logdir, config))
    if args.mlflow:
        from mnistlab.training.tracking import MlflowLog

        trackers.append(MlflowLog(args.mlflow, config, run_name=os.path.basename(os.path.abspath(out))))
    try:
        yield trackers
    except BaseException as error:
        from mnistlab.training.callbacks import run_failed

        run_failed(trackers, error)  # a second word for a run train() told already changes nothing
        raise


def check(args):
    """Fail before a search's work starts when --mlflow cannot be used (MLflow not installed)."""
    if args.mlflow:
        from mnistlab.training.tracking import mlflow_client

        mlflow_client(args.mlflow)


def log_search(args, out, result):
    """A finished search's table to the trackers asked for; returns what was written, for the user."""
    from mnistlab.search import tracking
    from mnistlab.search.results import label

    written = []
    logdir = tensorboard_dir(args, out)
    if logdir:
        tracking.search_to_tensorboard(logdir, result.rows, label)
        written.append(f"TensorBoard logs in {logdir}")
    if args.mlflow:
        run_id = tracking.search_to_mlflow(
            args.mlflow,
            result.rows,
            label,
            name=os.path.basename(os.path.abspath(out)),
            settings=result.plan.settings(),
        )
        written.append(f"MLflow run {run_id} at {args.mlflow}")
    return written
