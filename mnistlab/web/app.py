"""The web app: one drawing page and a small JSON API over a served model.

    create_app(model)    ->  FastAPI app      (model: a .keras file, run folder, Keras model or Predictor;
                                           a run folder with a current model.onnx is answered through
                                           onnxruntime, web.predictor.load_predictor)
    server(model, sock)  ->  uvicorn.Server   the app with its Host check and limits, not started
    serve(model, host, port)                  runs it on uvicorn until interrupted

Images go through mnistlab.data.images and mnistlab.data.digits exactly as `mnistlab predict`
reads them, and the model through mnistlab.inference, its one prediction path.
"""

import asyncio
import io
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from mnistlab import __version__
from mnistlab.errors import MnistlabError, TooLarge
from mnistlab.web.hosts import WILDCARDS, HostGuard, allowed_hosts
from mnistlab.web.limits import BodyLimit, Limits, PredictionQueue, is_image_type

STATIC = Path(__file__).parent / "static"
INLINE_BYTES = 256 * 1024  # images up to this size are classified on the event loop (see predict)
# Bigger ones, decoded in worker threads, at most this many at once: at the pixel cap one
# decode holds a few hundred MB, and two threads already keep the GIL's holder busy.
PHOTO_THREADS = 2
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff")


class Prediction(BaseModel):
    digit: int
    probabilities: list[float]
    explanation: list[list[float]] | None = None  # with ?explain=1: the 28x28 integrated-gradients map
    image: list[list[float]] | None = None  # with ?explain=1: the 28x28 digit as the model saw it, 0-1


class Layer(BaseModel):
    name: str
    type: str
    output_shape: list[int | None]
    params: int


class ModelInfo(BaseModel):
    name: str
    file: str | None
    backend: str
    input_shape: list[int | None]
    classes: int
    params: int
    layers: list[Layer]


class Error(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": text}
    for code, text in (
        (400, "not a readable image, or an empty or malformed upload"),
        (403, "a request from another site's page (its Origin header)"),
        (408, "the request body did not arrive within the time limit"),
        (413, "request body or image dimensions over the limits"),
        (415, "content that is not an image"),
        (503, "too many predictions in flight: retry after the Retry-After header's seconds"),
    )
}

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def as_predictor(model):
    from mnistlab.web.predictor import OnnxPredictor, Predictor, load_predictor

    if isinstance(model, (Predictor, OnnxPredictor)):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_predictor(model)
    return Predictor(model)


async def image_bytes(request):
    """The image a request carries, as a binary file named for messages: its raw body
    (Content-Type image/*) or the file of a multipart upload."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            uploads = [v for v in form.values() if isinstance(v, UploadFile)]
            if not uploads:
                raise HTTPException(400, "the multipart form holds no file (send the image as field 'file')")
            upload = form["file"] if isinstance(form.get("file"), UploadFile) else uploads[0]
            if not is_image_type(upload.content_type):
                raise HTTPException(
                    415, f"{upload.filename or 'the upload'} is {upload.content_type or 'untyped'}, not an image"
                )
            return named(await upload.read(), upload.filename or "the upload")
    if not is_image_type(content_type):
        raise HTTPException(
            415,
            f"expected an image (Content-Type image/png, image/jpeg, ...) or a multipart "
            f"upload, got {content_type or 'no Content-Type'}",
        )
    return named(await request.body(), "the request body")


def named(data, name):
    source = io.BytesIO(data)
    source.name = name  # load_image names its source in error messages
    return source


def create_app(model, limits=Limits(), hosts=None, any_address=False):
    """The app. `hosts`: the Host names it answers (hosts.allowed_hosts), None for any (serve()
    always passes them); `any_address`: IP-literal Hosts too (for a wildcard bind)."""
    from mnistlab.data.digits import to_mnist
    from mnistlab.data.images import load_image

    predictor = as_predictor(model)
    app = FastAPI(
        title="mnistlab",
        version=__version__,
        description="Handwritten digit recognition with a model trained by mnistlab.",
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout_s=limits.request_timeout_s)
    if hosts is not None:  # added last, so it runs first: a foreign Host costs nothing more
        app.add_middleware(HostGuard, hosts=hosts, any_address=any_address)
    app.state.predictor = predictor
    queue = PredictionQueue(limits.max_predictions)
    photo_threads = asyncio.Semaphore(PHOTO_THREADS)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        return JSONResponse({"error": "; ".join(e.get("msg", "invalid") for e in exc.errors())}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def gone(request, exc):  # nobody to answer; without this, uvicorn logs a traceback
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # logged by uvicorn; the client still gets JSON
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def classify(source, explain=False):
        try:
            image = to_mnist(load_image(source))
            probabilities = predictor.predict(image)
        except TooLarge as e:
            raise HTTPException(413, str(e)) from None
        except MnistlabError as e:
            raise HTTPException(400, str(e)) from None
        answer = {"digit": int(probabilities.argmax()), "probabilities": probabilities.tolist()}
        if explain:
            answer["explanation"] = np.round(predictor.explain(image, answer["digit"]), 6).tolist()
            answer["image"] = np.round(np.asarray(image, np.float64), 3).tolist()
        return answer

    @app.post(
        "/api/predict",
        response_model=Prediction,
        responses=ERRORS,
        openapi_extra=PREDICT_BODY,
        response_model_exclude_none=True,
        summary="Classify one image (a PNG/JPEG/... body or a multipart upload of field 'file'); "
        "explain=1 adds the 28x28 map of what made the answer (integrated gradients)",
    )
    async def predict(request: Request, explain: bool = False):
        with queue.slot():  # before the body is read: a refused request holds none of it
            source = await image_bytes(request)
            if explain:  # a program some ten times the forward pass's: off the event loop
                async with photo_threads:
                    return await run_in_threadpool(classify, source, True)
            # A drawing takes ~2 ms to classify: less than handing it to a worker
            # thread costs once 8 clients' threads contend for the GIL (p99 2.5x
            # worse, measured with bench/web_load.py). A big photo can take 100 ms
            # and more: a worker thread then keeps the server answering meanwhile.
            if source.getbuffer().nbytes <= INLINE_BYTES:
                return classify(source)
            async with photo_threads:
                return await run_in_threadpool(classify, source)

    @app.get("/api/model", response_model=ModelInfo, summary="The served model: name, file, shapes, layers")
    def model_info():
        return predictor.describe()

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def listen(host="127.0.0.1", port=8000):
    """A socket bound to host:port, so that a busy port or unknown host fails at once, in one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto must say TCP: asyncio turns Nagle's algorithm off only on sockets that do, and
        # with it on, each response waited ~40 ms for the client's delayed ACK (measured).
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError as e:
        raise MnistlabError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    try:
        sock.bind(address)
        sock.listen(2048)  # connections made from now on wait in the queue until the server runs
    except OSError as e:
        sock.close()
        raise MnistlabError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def url(host, port):
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server(model, sock, host=None, limits=Limits(), allow_hosts=(), access_log=False, log_level="info"):
    """A uvicorn server, not started (its run(sockets=[sock]) does), for `model` on the bound `sock`.
    It answers the Host names `host` (default: sock's address) stands for, and `allow_hosts`."""
    import uvicorn

    from mnistlab.web.protocol import bounded_http

    bound, port = sock.getsockname()[:2]
    host = bound if host is None else host
    # --host myhost.lan: its address is answered too; 0.0.0.0: any of the machine's addresses
    app = create_app(
        model, limits=limits, hosts=allowed_hosts(host, (bound, *allow_hosts)), any_address=host in WILDCARDS
    )
    config = uvicorn.Config(
        app,
        host=bound,
        port=port,
        access_log=access_log,
        log_level=log_level,
        http=bounded_http(limits.request_timeout_s),
        limit_concurrency=limits.max_connections,
    )
    return uvicorn.Server(config)


def serve(model, host="127.0.0.1", port=8000, limits=Limits(), allow_hosts=(), access_log=False, sock=None):
    """Serve `model` (compiled and warmed up first) on `sock`, or on host:port, until interrupted.

    No access log by default: the page predicts several times a second while
    drawing, and logging each request costs about a tenth of its time.
    """
    sock = sock or listen(host, port)
    try:
        prepared = server(model, sock, host, limits, allow_hosts, access_log)
        # uvicorn announces no address for a socket it is handed; port 0 got a port only now.
        logging.getLogger("uvicorn.error").info(
            "Open %s in a browser (Press CTRL+C to quit)", url(*sock.getsockname()[:2])
        )
        prepared.run(sockets=[sock])
    finally:
        sock.close()
