"""mnistlab serve: a local web page that recognizes digits as you draw them."""


def add_parser(sub):
    from mnistlab.cli import add_unsafe_option, positive_float, positive_int

    # The defaults are Limits' own; limits.py is light (the web stack loads with the server).
    from mnistlab.web.limits import MIB, Limits

    p = sub.add_parser(
        "serve",
        help="a web page to draw digits on, and a JSON API, for a saved model",
        description="MODEL is a .keras file or a run folder holding model.keras. A run folder's model.onnx, "
        "when not older than model.keras, answers predictions through onnxruntime (Keras loads only for "
        "an explanation). Open the printed address in a browser; the API is documented at /docs (JSON at "
        "/openapi.json).",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for all)",
    )
    p.add_argument("--port", type=port_number, default=8000, help="default: 8000; 0 picks a free port")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (repeatable; *.example.com for a domain, * for "
        "any): by default only the --host name or address (and localhost for a local one)",
    )
    upload_mb = Limits.max_body_bytes / MIB
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=upload_mb,
        metavar="MB",
        help=f"largest request body accepted (default: {upload_mb:g})",
    )
    p.add_argument(
        "--request-timeout",
        type=positive_float,
        default=Limits.request_timeout_s,
        metavar="S",
        help=f"seconds a request's head may take to arrive, and its body again (default: {Limits.request_timeout_s:g})",
    )
    p.add_argument(
        "--max-predictions",
        type=positive_int,
        default=Limits.max_predictions,
        metavar="N",
        help=f"predictions in flight at once; more get 503 with Retry-After (default: {Limits.max_predictions})",
    )
    p.add_argument(
        "--max-connections",
        type=positive_int,
        default=Limits.max_connections,
        metavar="N",
        help=f"open connections and requests in progress; more get 503 (default: {Limits.max_connections})",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    add_unsafe_option(p)
    return p


def port_number(text):
    import argparse

    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def limits_of(args):
    from mnistlab.web.limits import MIB, Limits

    return Limits(
        max_body_bytes=int(args.max_upload_mb * MIB),
        request_timeout_s=args.request_timeout,
        max_predictions=args.max_predictions,
        max_connections=args.max_connections,
    )


def run(args):
    import sys

    from mnistlab.web.app import listen, serve
    from mnistlab.web.hosts import check_pattern

    allow_hosts = [check_pattern(h) for h in args.allow_host]  # a bad one fails now, in one line
    sock = listen(args.host, args.port)  # a busy port fails now, not after the model has loaded
    try:
        from mnistlab.web.predictor import load_predictor

        predictor = load_predictor(args.model, safe_mode=not args.unsafe)
        print(
            f"mnistlab serve: {predictor.headline()}; the page is at the address below, the API at /docs",
            file=sys.stderr,
        )
        serve(
            predictor,
            host=args.host,
            limits=limits_of(args),
            allow_hosts=allow_hosts,
            access_log=args.access_log,
            sock=sock,
        )
    finally:
        sock.close()
