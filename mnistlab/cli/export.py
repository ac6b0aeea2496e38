"""mnistlab export: a trained model as a file other runtimes read (ONNX)."""

import argparse

EXAMPLES = """examples:
  mnistlab export runs/cnn10 --onnx                  runs/cnn10/model.onnx
  mnistlab export model.keras --onnx --out web.onnx

The ONNX graph takes "pixels": float32 in [0, 1] (0-255 divided by 255, light ink
on dark) in the model's input shape with any batch size n: (n, 784) for the dnn,
(n, 28, 28, 1) for cnn, convnet and resnet; it gives "probabilities", (n, 10).
Needs the onnx extra: pip install "mnistlab[onnx]"."""


def add_parser(sub):
    from mnistlab.cli import add_unsafe_option

    p = sub.add_parser(
        "export",
        help="write a trained model as an ONNX file",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MODEL is a .keras file or a run folder holding model.keras.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--onnx", action="store_true", help="export to ONNX (the one format there is; required)")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="where to write (default: RUN/model.onnx for a run folder, else the .keras path with .onnx)",
    )
    add_unsafe_option(p)
    return p


def default_out(model):
    import os

    from mnistlab.storage import RunFolder

    if os.path.isdir(model):
        return os.path.join(model, RunFolder.ONNX)
    return os.path.splitext(model)[0] + ".onnx"


def run(args):
    from mnistlab.errors import UsageError

    if not args.onnx:
        raise UsageError("say which format to export to: --onnx (the one there is)")
    from mnistlab.data.preprocess import input_shape_of
    from mnistlab.export import check_writable, export
    from mnistlab.storage import load_model

    out = args.out or default_out(args.model)
    check_writable(out)  # before the model loads and converts
    model = load_model(args.model, safe_mode=not args.unsafe)
    export(model, out)
    shape = ", ".join(["n", *(str(d) for d in input_shape_of(model))])
    print(f"wrote {out}: input pixels float32 in [0, 1] of shape ({shape}), output probabilities (n, 10)")
