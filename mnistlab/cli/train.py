"""mnistlab train: the notebook's training run, writing a run folder."""

import argparse
import dataclasses
import os
import sys
import time

from mnistlab.cli import add_data_options, add_training_options, speed, tracking, with_copies
from mnistlab.text import metric_text
from mnistlab.training.presets import PRESETS, preset

CALIBRATION_SPLIT = 1 / 12  # train --calibrate without --validation-split: 5,000 of MNIST's 60,000

EXAMPLES = """examples:
  mnistlab train                                  notebook DNN, 10 epochs, batch 64, Adam
  mnistlab train --model cnn
  mnistlab train --optimizer SGD --lr 0.05 --epochs 3 --out runs/sgd
  mnistlab train --dataset fashion-mnist --validation-split 0.1
  mnistlab train --preset fast99                  99% test accuracy in seconds, then stop
  mnistlab train --preset best                    two convnets on augmented images, 5 minutes each, averaged
  mnistlab train --model cnn --time-budget 90s    as many epochs as 90 seconds hold, the schedule fitted to them
  mnistlab train --model cnn --target-accuracy 0.99   stop at the first epoch at 99%"""


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train a model and write a run folder",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_options(p, train=True, presettable=True)
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="a named recipe beyond the notebook: fast99 (99%% test "
        "accuracy in seconds), best (best accuracy in under ten minutes); options given beside it win",
    )
    add_data_options(p)
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<timestamp>-<model>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed run from its last finished epoch (its config.json wins over other options)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="then fit the temperature that calibrates the model's probabilities, as mnistlab calibrate "
        "does, on held-out images: --validation-split's, else 1/12 of the training images held out for it",
    )
    p.add_argument("--report", action="store_true", help="also write the run folder's report.html")
    p.add_argument(
        "--export",
        choices=["onnx", "none"],
        help="onnx: write the run folder's model.onnx at the end (as mnistlab export RUN --onnx), which "
        "predict, evaluate and serve then run through onnxruntime, without Keras or JAX; the default "
        "where the onnx extra is installed (about a second); none: do not",
    )
    tracking.add_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def run(args):
    from mnistlab.errors import UsageError
    from mnistlab.params import from_args, given
    from mnistlab.storage import RunFolder
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.loop import EPOCHS_BESIDE_BUDGET

    if getattr(args, "export", None) == "onnx":  # asked for: a missing onnx extra refused before any training
        from mnistlab.export import require_converter

        require_converter()
    if args.resume:
        return resume(args)
    recipe = preset(args.preset, args.dataset)
    if given(args.epochs) and given(args.time_budget):
        raise UsageError(EPOCHS_BESIDE_BUDGET)
    if given(args.epochs):  # --epochs beside a preset's time budget: the epochs asked for
        recipe.pop("time_budget", None)
    config = TrainConfig(**from_args(args, recipe))
    if args.calibrate and config.members > 1:  # members would hold out different images to fit on
        raise UsageError(f"--calibrate fits one network's temperature: not with --members {config.members}")
    if args.calibrate and config.validation_split is None:
        # a temperature fitted on images the model trained on comes out too low: hold some out
        config = dataclasses.replace(config, validation_split=CALIBRATION_SPLIT)
        print(f"--calibrate: {CALIBRATION_SPLIT:.4g} of the training images held out to fit the temperature on")
    out = args.out or default_out(config.model)
    train_into(RunFolder(out), args, config)


def train_into(folder, args, config, resume=False):
    """Train into `folder`, holding its lock from before the dataset loads to the report: a folder
    another process is writing stops this one there, having written nothing. The trackers come
    first, so that one refused (MLflow not installed) leaves no folder behind."""
    try:
        with tracking.run_trackers(args, folder.path, config) as callbacks:
            folder.prepare()
            done = speed.train_overlapped(
                config, out=folder.path, verbose=0 if args.quiet else 1, resume=resume, callbacks=callbacks
            )
        calibrated = calibrate(folder, done) if getattr(args, "calibrate", False) else None
        asked = getattr(args, "export", None) == "onnx"
        exported = export_onnx(folder, done, asked) if exports(args) else None
        summarize(done, args.report, calibrated, exported if asked else None)  # by default, one file more in the folder
    finally:
        folder.close()


def calibrate(folder, done):
    """train --calibrate: the finished run's temperature fitted and stored (training.calibrate), the
    model and the dataset reused."""
    from mnistlab.data import load_dataset
    from mnistlab.training.calibrate import calibrate

    data = load_dataset(done.config.dataset, done.config.data_dir, verify=done.config.verify_data)
    return calibrate(folder, model=done.model, data=data)


def exports(args):
    """Does this run write model.onnx? --export onnx, or no --export where the onnx extra is
    installed and Keras runs on JAX (the converter traces JAX)."""
    choice = getattr(args, "export", None)
    if choice is None:
        import importlib.util

        import keras

        return keras.backend.backend() == "jax" and importlib.util.find_spec("jax2onnx") is not None
    return choice == "onnx"


def export_onnx(folder, done, asked):
    """The finished model written as the run folder's model.onnx (atomically, after model.keras, so
    never older than it). Not asked for (the default), a failure is one notice line: the run itself
    is saved, and predict uses model.keras."""
    from mnistlab.errors import MnistlabError, first_line
    from mnistlab.export import export

    try:
        return export(done.model, folder.file(folder.ONNX))
    except Exception as e:
        if asked:
            raise
        reason = e if isinstance(e, MnistlabError) else f"{type(e).__name__}: {first_line(e)}"
        print(f"mnistlab train: notice: model.onnx not written ({reason}); predict uses model.keras", file=sys.stderr)
        return None


def default_out(model_name):
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + "-" + model_name)


def resume(args):
    from mnistlab.errors import MnistlabError
    from mnistlab.storage import RunFolder
    from mnistlab.training.config import TrainConfig

    folder = RunFolder(args.resume)
    if folder.finished():
        print(f"{args.resume} has already finished: nothing to resume")
        return 0
    if not folder.is_run(folder.path):
        raise MnistlabError(
            f"{folder.config_path} not found: --resume takes the run folder of an earlier mnistlab train"
        )
    train_into(folder, args, TrainConfig.from_folder(folder), resume=True)


def summarize(run, report=False, calibrated=None, exported=None):
    m = run.metrics
    resumed = f", resumed after epoch {m['resumed_from_epoch']}" if "resumed_from_epoch" in m else ""
    print(
        f"test loss {metric_text(m['test_loss'])}  test accuracy {metric_text(m['test_accuracy'])}{with_copies(m)}  "
        f"({m['train_seconds']:.1f} s training{resumed})  run folder: {run.out}"
    )
    if calibrated:
        from mnistlab.cli.calibrate import summary

        print(summary(calibrated))
    if exported:
        print(f"ONNX model: {exported}")
    if report:
        from mnistlab.report.html import write_report

        print(f"report: {write_report(run.out, model=run.model)}")
