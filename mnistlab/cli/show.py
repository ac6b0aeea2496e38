"""mnistlab show: one digit and its label as a PNG, like the notebook's matshow."""


def add_parser(sub):
    from mnistlab.cli import add_data_options

    p = sub.add_parser("show", help="save one image and its label as a PNG")
    p.add_argument("--index", type=int, default=0, help="which image (default: 0)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="default: train")
    add_data_options(p)
    p.add_argument("--out", default="digit.png", metavar="PNG", help="default: digit.png")
    return p


def run(args):
    from mnistlab.data import load_dataset
    from mnistlab.errors import UsageError
    from mnistlab.report.plots import show_digit

    data = load_dataset(args.dataset, args.data_dir, verify=args.verify)
    x, y = (data.x_train, data.y_train) if args.split == "train" else (data.x_test, data.y_test)
    if not -len(x) <= args.index < len(x):
        raise UsageError(f"--index {args.index} is out of range: the {args.split} split has {len(x)} images")
    label = int(y[args.index])
    show_digit(x[args.index], label, args.out, title=f"{args.split}[{args.index}]: {data.classes[label]}")
    print(f"{args.split}[{args.index}] label {label} ({data.classes[label]}) -> {args.out}")
