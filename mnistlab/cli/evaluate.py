"""mnistlab evaluate: test loss and accuracy of a saved model."""
import json
import os


def add_parser(sub):
    from mnistlab.cli import add_data_options

    p = sub.add_parser("evaluate", help="test loss and accuracy of a saved model",
                       description="MODEL is a .keras file or a run folder holding model.keras.")
    p.add_argument("model", metavar="MODEL")
    add_data_options(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--unsafe", action="store_true", help="allow models that carry custom code")
    return p


def run(args):
    from mnistlab.data import load_dataset
    from mnistlab.evaluation import evaluate, load_model

    dataset = args.dataset
    config_path = os.path.join(args.model, "config.json")
    if os.path.isdir(args.model) and os.path.isfile(config_path) and args.dataset == "mnist":
        with open(config_path) as f:
            dataset = json.load(f).get("dataset", dataset)
    model = load_model(args.model, safe_mode=not args.unsafe)
    data = load_dataset(dataset, args.data_dir, verify=args.verify)
    metrics = evaluate(model, data.x_test, data.y_test)
    if args.json:
        print(json.dumps(metrics | {"dataset": dataset}))
    else:
        print(f"{dataset}: test loss {metrics['test_loss']:.4f}  test accuracy {metrics['test_accuracy']:.4f}")
