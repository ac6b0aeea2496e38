"""What the server refuses before it spends work on a request, and the bounds on what it holds.

    Limits              the numbers, with their defaults (`mnistlab serve` has an option for each)
    BodyLimit           a body over the byte cap -> 413, one not in within the time limit -> 408
    PredictionQueue     predictions in flight at once; beyond -> 503 with Retry-After

The byte cap is checked on the declared length and again while the body streams in, so a
chunked or lying client cannot get past it. The image's pixel count is capped by
mnistlab.data.images.load_image (TooLarge); the request head's size and the time it may take
to arrive by mnistlab.web.protocol; connections by uvicorn's limit_concurrency.

Starlette and asyncio are imported where they are used, so that `mnistlab serve`'s options can
take their defaults from Limits without `mnistlab --help` importing the web stack.
"""

import contextlib
from dataclasses import dataclass

MIB = 1024 * 1024
MAX_BODY_BYTES = 8 * MIB  # a phone photo fits; the canvas sends ~10 KB


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = MAX_BODY_BYTES
    # A request's head must arrive within this many seconds of the connection opening (or of
    # the previous answer), and its body within as many again: a photo over a slow uplink
    # takes a few seconds, a client trickling bytes to hold the server's memory is cut off.
    request_timeout_s: float = 10.0
    # Requests past the queue would each hold a body of up to max_body_bytes: a flood gets
    # 503s rather than the server's memory. 32 is four times what 8 drawing clients need.
    max_predictions: int = 32
    # Open connections plus requests in progress (uvicorn's limit_concurrency, answered with
    # 503 beyond); idle ones are closed after request_timeout_s, or uvicorn's 5 s keep-alive.
    max_connections: int = 1000


RETRY_AFTER_S = 1  # a drawing is classified in ~2 ms: a queue of 32 drains well within a second


def too_large(limit):
    from starlette.exceptions import HTTPException

    # Closing the connection: the client may well go on sending the rest.
    return HTTPException(413, f"request body over the {limit} byte limit", headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware: a JSON 413 for a body over `max_bytes`, a JSON 408 (and the connection
    closed) for one not received within `timeout_s` of the request's head."""

    def __init__(self, app, max_bytes=MAX_BODY_BYTES, timeout_s=Limits.request_timeout_s):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        import asyncio

        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = too_large(self.max_bytes) if declared.isdigit() else HTTPException(400, "bad Content-Length")
            response = JSONResponse(
                {"error": error.detail}, status_code=error.status_code, headers={"Connection": "close"}
            )
            return await response(scope, receive, send)

        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received, complete = 0, False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # later calls wait for a disconnect, which has no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # Raised inside the app, so its HTTPException handler answers with JSON; the
                # rest of the body would still be on its way, so the connection is closed.
                raise HTTPException(
                    408, f"request body not received within {self.timeout_s:g} s", headers={"Connection": "close"}
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


class PredictionQueue:
    """At most `size` predictions in flight, counted from before the body is read to the answer;
    one more gets a 503 with Retry-After at once, having cost the server nothing.

    Entered and left on the event loop only, so a plain counter is safe."""

    def __init__(self, size):
        self.size = size
        self.in_flight = 0

    @contextlib.contextmanager
    def slot(self):
        from starlette.exceptions import HTTPException

        if self.in_flight >= self.size:
            raise HTTPException(
                503,
                f"busy: {self.size} predictions in flight; retry in {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def is_image_type(content_type):
    """True for image/* media types (parameters such as ;charset are ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media.startswith("image/") and len(media) > len("image/")
