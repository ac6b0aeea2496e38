"""mnistlab predict: which digit each picture shows, as the model sees it."""

import argparse

EXAMPLES = """examples:
  mnistlab predict runs/cnn10 photo.jpg scan.png     a table of file, digit, confidence
  mnistlab predict runs/cnn10 *.png --top 3          the three most likely digits of each
  mnistlab predict model.keras digits.npy --json     one row per image of a 28x28 stack

Pictures (PNG, JPEG, BMP, GIF, TIFF, WebP; any size, colour or grey, dark ink on
light paper or light on dark) are brought into MNIST's form first: greyscale,
light ink on dark, the ink's box scaled to 20x20, centred by its centre of mass
in 28x28. Stacks (.npy or IDX, maybe gzipped) of 28x28 images are used as they are."""


def top_k(text):
    from mnistlab.cli import positive_int
    from mnistlab.data.registry import NUM_CLASSES

    value = positive_int(text)
    if value > NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"there are only {NUM_CLASSES} digits, got {value}")
    return value


def add_parser(sub):
    from mnistlab.cli import add_unsafe_option

    p = sub.add_parser(
        "predict",
        help="recognize handwritten digits in image files",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MODEL is a .keras file or a run folder holding model.keras. A run folder's model.onnx, "
        "when not older than model.keras, is run through onnxruntime instead (no Keras, no JAX).",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="picture files, or .npy / IDX stacks of 28x28 images")
    p.add_argument("--top", type=top_k, metavar="K", help="show the K most likely digits of each image")
    p.add_argument("--json", action="store_true", help="print a JSON list of {file, digit, probabilities}")
    add_unsafe_option(p)
    return p


def run(args):
    import json

    import numpy as np

    from mnistlab.data.digits import load_files
    from mnistlab.onnx_model import OnnxModel, onnx_for

    names, digits = load_files(args.images)  # every file read (and any bad one named) before the model loads
    onnx = onnx_for(args.model)
    if onnx:  # the light path: RUN/model.onnx through onnxruntime, neither Keras nor JAX imported
        probabilities = OnnxModel.for_run(args.model, onnx).predict_proba(digits)
    else:
        from mnistlab.inference import predict
        from mnistlab.storage import load_model

        probabilities = predict(load_model(args.model, safe_mode=not args.unsafe), digits)
    ranked = np.argsort(-probabilities, axis=1, kind="stable")
    if args.json:
        rows = []
        for name, p, order in zip(names, probabilities, ranked):
            row = {"file": name, "digit": int(order[0]), "probabilities": [round(float(v), 6) for v in p]}
            if args.top:
                row["top"] = [{"digit": int(k), "probability": round(float(p[k]), 6)} for k in order[: args.top]]
            rows.append(row)
        print("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]")  # one image a line
        return
    print(table(names, probabilities, ranked, args.top))


def table(names, probabilities, ranked, top):
    from mnistlab.text import metric_text

    header = ["file", "digit", "confidence"] + ([f"top {top}"] if top else [])
    lines = [
        [name, str(order[0]), metric_text(p[order[0]])]
        + (["  ".join(f"{k} {metric_text(p[k])}" for k in order[:top])] if top else [])
        for name, p, order in zip(names, probabilities, ranked)
    ]
    widths = [max(len(line[c]) for line in [header] + lines) for c in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if c in (0, 3) else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in [header] + lines
    )
