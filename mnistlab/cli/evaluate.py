"""mnistlab evaluate: test loss and accuracy of a saved model."""

import json

DEFAULT_DATASET = "mnist"


def add_parser(sub):
    from mnistlab.cli import add_data_options, add_unsafe_option
    from mnistlab.params import option_type

    p = sub.add_parser(
        "evaluate",
        help="test loss and accuracy of a saved model",
        description="MODEL is a .keras file or a run folder holding model.keras. A run folder's model.onnx, "
        "when not older than model.keras, is run through onnxruntime instead (no Keras, no JAX; not with --tta).",
    )
    p.add_argument("model", metavar="MODEL")
    add_data_options(p)
    for action in p._actions:  # no default: an explicit --dataset wins, else the run's own, else mnist
        if action.dest == "dataset":
            action.default = None
            action.help = "default: the dataset the run folder's config.json names, else mnist"
    p.add_argument(
        "--tta",
        type=option_type("tta"),
        default=0,
        metavar="N",
        help="also score on N copies of each test image, transformed as the run folder's config.json "
        "says training's were (its augment, flip and seed), averaged with the image's own prediction",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_unsafe_option(p)
    return p


def dataset_for(model, dataset=None):
    """The test set to use: `dataset` when given, else the one the model's run folder trained on, else mnist."""
    from mnistlab.storage import RunFolder

    if dataset:
        return dataset
    run = RunFolder.holding(model)
    return run.dataset(DEFAULT_DATASET) if run else DEFAULT_DATASET


def run(args):
    from mnistlab.cli import with_copies
    from mnistlab.data import load_dataset
    from mnistlab.onnx_model import onnx_for
    from mnistlab.text import metric_text

    dataset = dataset_for(args.model, args.dataset)
    onnx = None if args.tta else onnx_for(args.model)
    if onnx:  # the light path: RUN/model.onnx through onnxruntime, neither Keras nor JAX imported
        metrics, temperature = evaluate_onnx(args.model, onnx, load_dataset(dataset, args.data_dir, verify=args.verify))
    else:
        from mnistlab.inference import evaluate, tta_score
        from mnistlab.storage import load_model, temperature_of

        model = load_model(args.model, safe_mode=not args.unsafe)
        data = load_dataset(dataset, args.data_dir, verify=args.verify)
        metrics = evaluate(model, data.x_test, data.y_test)
        tta = test_time_augmentation(args.model, args.tta)
        if tta:
            metrics |= tta_score(model, data.x_test, data.y_test, tta)
        temperature = temperature_of(model)  # a calibrated run folder's: the loss is of calibrated probabilities
    if args.json:
        print(json.dumps(metrics | {"dataset": dataset} | ({"temperature": temperature} if temperature else {})))
    else:
        calibrated = f"  (calibrated, temperature {temperature:.3f})" if temperature else ""
        print(
            f"{dataset}: test loss {metric_text(metrics['test_loss'])}  "
            f"test accuracy {metric_text(metrics['test_accuracy'])}" + with_copies(metrics) + calibrated
        )


def evaluate_onnx(model, onnx, data):
    """(metrics, temperature) of run folder `model`'s model.onnx (path `onnx`) on `data`'s test set,
    as inference.evaluate scores the Keras model (calibrated by the folder's temperature, if any)."""
    from mnistlab.onnx_model import OnnxModel, scores

    session = OnnxModel.for_run(model, onnx)
    return scores(session.predict_proba(data.x_test), data.y_test), session.temperature


def test_time_augmentation(model, copies):
    """--tta's TestTimeAugmentation (None for 0), its copies drawn as the run folder's training drew."""
    from dataclasses import replace

    from mnistlab.errors import UsageError
    from mnistlab.storage import RunFolder
    from mnistlab.training.config import TrainConfig

    if not copies:
        return None
    run = RunFolder.holding(model)
    if run is None:
        raise UsageError(
            f"--tta needs a run folder, not a bare model file ({model}): its config.json says "
            "how training transformed the images"
        )
    return replace(TrainConfig.from_folder(run), tta=copies).test_time_augmentation()
