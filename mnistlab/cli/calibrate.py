"""mnistlab calibrate: fit a run's temperature, so that its probabilities say how far to trust it."""

import argparse

IMAGES = 10_000  # training.calibrate.IMAGES, written out here: --help imports no Keras

EXAMPLES = """examples:
  mnistlab calibrate runs/cnn10                  fit on the last 10,000 training images
  mnistlab calibrate runs/cnn10 --images 5000
  mnistlab train --validation-split 0.1 --calibrate   fit on the images training held out

The temperature T divides the log of the model's probabilities before a softmax: T > 1 makes an
over-confident model less sure, T < 1 an under-confident one surer. The predicted digits, and so
the accuracy, stay the same. It is stored in RUN/temperature.json; predict, evaluate, report and
serve then give calibrated probabilities. metrics.json records the expected calibration error
(ECE) and the test log-loss before and after (calibration_error, calibration_error_calibrated,
test_log_loss, test_log_loss_calibrated, temperature)."""


def add_parser(sub):
    from mnistlab.cli import add_unsafe_option, positive_int

    p = sub.add_parser(
        "calibrate",
        help="fit a run's temperature: calibrated probabilities for predict, evaluate, serve",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="RUN is the run folder of a finished mnistlab train.",
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument(
        "--images",
        type=positive_int,
        default=IMAGES,
        metavar="N",
        help=f"fit on the last N images of the training set (default {IMAGES:,}); these images were seen "
        "in training, unless the run held them out with --validation-split: then the last N of those",
    )
    add_unsafe_option(p)
    return p


def run(args):
    from mnistlab.storage import RunFolder

    RunFolder(args.run).require_model()  # a missing run or model told before Keras is imported
    from mnistlab.training.calibrate import calibrate

    scores = calibrate(args.run, images=args.images, safe_mode=not args.unsafe)
    print(summary(scores) + f"  run folder: {args.run}")


def summary(scores):
    """One line: the temperature, and the test ECE and log-loss before -> after."""
    from mnistlab.text import metric_text

    return (
        f"temperature {scores['temperature']:.3f} (fitted on {scores['calibration_images']} images)  "
        f"test calibration error {metric_text(scores['calibration_error'])} -> "
        f"{metric_text(scores['calibration_error_calibrated'])}  "
        f"test log-loss {metric_text(scores['test_log_loss'])} -> {metric_text(scores['test_log_loss_calibrated'])}"
    )
