"""mnistlab explain: why the model gives each picture its answer, as a saliency map."""

import argparse

EXAMPLES = """examples:
  mnistlab explain runs/cnn10 photo.jpg                  ./photo-explain.png
  mnistlab explain runs/cnn10 *.png --out why/ --steps 64

Each picture is brought into MNIST's form as `mnistlab predict` brings it, and
explained by integrated gradients: how much each pixel, compared with a black
image, added to the probability of the answer. The figure shows the input, the
map over it (red: for the answer, blue: against it) and the top 3 probabilities;
a map sums to about the answer's probability minus the black image's."""

MAX_STEPS = 1024


def steps_type(text):
    from mnistlab.cli import checked
    from mnistlab.constraints import Interval

    return checked(Interval(int, 1, MAX_STEPS, closed="both"), text)


def add_parser(sub):
    from mnistlab.cli import add_unsafe_option

    p = sub.add_parser(
        "explain",
        help="a saliency map of why the model recognizes each picture as it does",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MODEL is a .keras file or a run folder holding model.keras; "
        "writes DIR/<picture>-explain.png for each picture.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="picture files, or .npy / IDX stacks of 28x28 images")
    p.add_argument("--out", metavar="DIR", default=".", help="folder for the figures (default: the current one)")
    p.add_argument(
        "--steps",
        type=steps_type,
        default=32,
        metavar="N",
        help=f"steps of the path integral, 1-{MAX_STEPS} (default: 32; more: closer sums, slower)",
    )
    add_unsafe_option(p)
    return p


def run(args):
    import os

    from mnistlab.data.digits import load_files
    from mnistlab.explain import explain
    from mnistlab.inference import predict_proba
    from mnistlab.report.figures import explanation_png
    from mnistlab.storage import load_model, model_path, prepare, write_bytes
    from mnistlab.text import metric_text
    from mnistlab.web.predictor import check_digit_classifier

    names, digits = load_files(args.images)  # every file read (and any bad one named) before the model loads
    model = load_model(args.model, safe_mode=not args.unsafe)
    check_digit_classifier(model, model_path(args.model))
    probabilities = predict_proba(model, digits)
    maps = explain(model, digits, steps=args.steps, target=probabilities.argmax(axis=1))
    prepare(args.out)
    taken = set()
    for name, digit, attributions, p in zip(names, digits, maps, probabilities):
        path = os.path.join(args.out, figure_name(name, taken))
        answer = int(p.argmax())
        write_bytes(path, explanation_png(digit, attributions, p, title=name), suffix=".png")
        print(f"{name}  {answer}  {metric_text(p[answer])}  {path}")


def figure_name(name, taken):
    """<stem>-explain.png for a picture, <stem>-<i>-explain.png for row i of a stack (file.npy[i]);
    a stem seen before gets -2, -3... rather than overwriting the earlier figure."""
    import re
    from pathlib import Path

    row = re.fullmatch(r"(.*)\[(\d+)\]", name)
    stem = f"{Path(row.group(1)).stem}-{row.group(2)}" if row else Path(name).stem
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate)
    return f"{candidate}-explain.png"
