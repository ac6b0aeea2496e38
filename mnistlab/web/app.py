"""The web app: one drawing page and a small JSON API over a served model.

    create_app(model)  ->  FastAPI app      (model: a .keras file, run folder, Keras model or Predictor)
    serve(model, host, port)                runs it on uvicorn

Images go through mnistlab.data.images and mnistlab.data.digits exactly as `mnistlab predict`
reads them, and the model through mnistlab.inference, its one prediction path.
"""
import io
import logging
import os
import socket
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from mnistlab import __version__
from mnistlab.errors import MnistlabError, TooLarge
from mnistlab.web.limits import MAX_BODY_BYTES, BodySizeLimit, is_image_type

STATIC = Path(__file__).parent / "static"
INLINE_BYTES = 256 * 1024  # images up to this size are classified on the event loop (see predict)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff")


class Prediction(BaseModel):
    digit: int
    probabilities: list[float]


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


ERRORS = {code: {"model": Error, "description": text} for code, text in (
    (400, "not a readable image, or an empty or malformed upload"),
    (413, "request body or image dimensions over the limits"),
    (415, "content that is not an image"))}

PREDICT_BODY = {"requestBody": {"required": True, "content": {
    **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
}}}


def as_predictor(model):
    from mnistlab.web.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    if isinstance(model, (str, os.PathLike)):
        return Predictor.load(model)
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
                raise HTTPException(415, f"{upload.filename or 'the upload'} is {upload.content_type or 'untyped'}, "
                                         "not an image")
            return named(await upload.read(), upload.filename or "the upload")
    if not is_image_type(content_type):
        raise HTTPException(415, f"expected an image (Content-Type image/png, image/jpeg, ...) or a multipart "
                                 f"upload, got {content_type or 'no Content-Type'}")
    return named(await request.body(), "the request body")


def named(data, name):
    source = io.BytesIO(data)
    source.name = name  # load_image names its source in error messages
    return source


def create_app(model, max_body_bytes=MAX_BODY_BYTES):
    from mnistlab.data.digits import to_mnist
    from mnistlab.data.images import load_image

    predictor = as_predictor(model)
    app = FastAPI(title="mnistlab", version=__version__,
                  description="Handwritten digit recognition with a model trained by mnistlab.")
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.state.predictor = predictor

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        return JSONResponse({"error": "; ".join(e.get("msg", "invalid") for e in exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # logged by uvicorn; the client still gets JSON
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def classify(source):
        try:
            probabilities = predictor.predict(to_mnist(load_image(source)))
        except TooLarge as e:
            raise HTTPException(413, str(e)) from None
        except MnistlabError as e:
            raise HTTPException(400, str(e)) from None
        return {"digit": int(probabilities.argmax()), "probabilities": probabilities.tolist()}

    @app.post("/api/predict", response_model=Prediction, responses=ERRORS, openapi_extra=PREDICT_BODY,
              summary="Classify one image (a PNG/JPEG/... body or a multipart upload of field 'file')")
    async def predict(request: Request):
        source = await image_bytes(request)
        # A drawing takes ~2 ms to classify: less than handing it to a worker
        # thread costs once 8 clients' threads contend for the GIL (p99 2.5x
        # worse, measured with bench/web_load.py). A big photo can take 100 ms
        # and more: a worker thread then keeps the server answering meanwhile.
        if source.getbuffer().nbytes <= INLINE_BYTES:
            return classify(source)
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


def serve(model, host="127.0.0.1", port=8000, max_body_bytes=MAX_BODY_BYTES, access_log=False, sock=None):
    """Serve `model` (compiled and warmed up first) on `sock`, or on host:port, until interrupted.

    No access log by default: the page predicts several times a second while
    drawing, and logging each request costs about a tenth of its time.
    """
    import uvicorn

    sock = sock or listen(host, port)
    try:
        app = create_app(model, max_body_bytes=max_body_bytes)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(app, host=host, port=port, access_log=access_log, log_level="info")
        # uvicorn announces no address for a socket it is handed; port 0 got a port only now.
        logging.getLogger("uvicorn.error").info("Open %s in a browser (Press CTRL+C to quit)", url(host, port))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
