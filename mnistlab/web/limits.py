"""What the server refuses before it spends work on a request: bodies over a
byte cap (checked on the declared length and again while the body streams in,
so a chunked or lying client cannot get past it) and content that is not an
image. The image's pixel count is capped by mnistlab.data.images.load_image (TooLarge)."""
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

MAX_BODY_BYTES = 8 * 1024 * 1024  # a phone photo fits; the canvas sends ~10 KB


def too_large(limit):
    return HTTPException(413, f"request body over the {limit} byte limit")


class BodySizeLimit:
    """ASGI middleware: a 413 with a JSON error for request bodies over `max_bytes`."""

    def __init__(self, app, max_bytes=MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = too_large(self.max_bytes) if declared.isdigit() else HTTPException(400, "bad Content-Length")
            response = JSONResponse({"error": error.detail}, status_code=error.status_code,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)

        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the app, so its HTTPException handler answers with JSON.
                    raise too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def is_image_type(content_type):
    """True for image/* media types (parameters such as ;charset are ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media.startswith("image/") and len(media) > len("image/")
