"""uvicorn's HTTP protocol (httptools), with the two bounds on a request's head it lacks.

Size: uvicorn caps a head only with h11 (h11_max_incomplete_event_size); with httptools it
keeps every header it is sent, 16 MB of them and more (measured). Time: uvicorn's keep-alive
timeout is disarmed by the first byte and never armed on a new connection, so a client that
connects and sends nothing, or a request line a byte at a time, holds its connection forever.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; browsers send under 8 KB


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops, and uvicorn answers 400 and closes."""


class BoundedHttp(HttpToolsProtocol):
    head_timeout_s = 10.0  # set per server by bounded_http()
    max_head_bytes = MAX_HEAD_BYTES

    def connection_made(self, transport):
        self._head_bytes = 0
        self._head_timer = None
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self):
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url):
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name, value):
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self):
        self._disarm()  # the body has its own deadline (limits.BodyLimit), with a 408
        super().on_headers_complete()

    def on_response_complete(self):
        waiting = bool(self.pipeline)  # a pipelined request's head is in already
        super().on_response_complete()
        if not waiting and not self.transport.is_closing():
            self._arm()

    def _count(self, size):
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            raise HeadTooLarge

    def _arm(self):
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._timed_out)

    def _disarm(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self):
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def bounded_http(head_timeout_s):
    """The protocol class for uvicorn.Config(http=...), with this head deadline."""
    return type("BoundedHttp", (BoundedHttp,), {"head_timeout_s": head_timeout_s})
