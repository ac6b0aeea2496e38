"""Which requests the server answers by their Host and Origin headers.

DNS rebinding: a page on evil.example whose name is then pointed at 127.0.0.1 (or at this
machine's LAN address) may call the server as "same origin"; its requests still say
`Host: evil.example`, so the server answers only Host names it was bound to or told of
(starlette's TrustedHostMiddleware). An IP-literal Host cannot be rebound (the browser's
origin is that address), so on a wildcard bind, whose addresses are all of the machine's,
any address is accepted.

Cross-origin use of the JSON API: no CORS headers are ever sent, so browsers keep other
sites from reading answers; a form post needs no preflight though, so /api/ requests that
carry another site's Origin are refused too (403) rather than classified unread.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse

from mnistlab.errors import UsageError

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::")


def host_name(host):
    """`host` as a Host header names it, without the port: IPv6 literals in brackets, lower case."""
    host = host.strip().lower()
    try:
        return f"[{ipaddress.IPv6Address(host.strip('[]'))}]"
    except ValueError:
        return host


def is_loopback(host):
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def allowed_hosts(bind, extra=()):
    """The Host names a server bound to `bind` answers, plus `extra` (--allow-host)."""
    names = [host_name(bind)] if bind not in WILDCARDS else []
    if bind in WILDCARDS or is_loopback(bind):
        names += LOOPBACK
    if bind in WILDCARDS:
        names.append(socket.gethostname().lower())  # not getfqdn(): a DNS lookup could stall the start
    return list(dict.fromkeys(names + [check_pattern(h) for h in extra]))


def check_pattern(pattern):
    """An --allow-host value as TrustedHostMiddleware takes it: a name, an address, *.domain or *."""
    name = host_name(pattern)
    address = name.startswith("[") and name.endswith("]")  # an IPv6 literal, checked by host_name
    if not name or (any(c in name for c in "/:@[] ") and not address):
        raise UsageError(f"--allow-host takes a host name or address without port or scheme, got {pattern!r}")
    if "*" in name[1:] or (name.startswith("*") and name != "*" and not name.startswith("*.")):
        raise UsageError(f"--allow-host wildcards look like '*.example.com' (or '*' for any), got {pattern!r}")
    return name


class HostGuard:
    """ASGI middleware: 400 for a Host not in `hosts` (any IP literal too where `any_address`),
    403 for an /api/ request whose Origin is another site."""

    def __init__(self, app, hosts, any_address=False):
        self.app = app
        self.any_address = any_address
        self.checked = TrustedHostMiddleware(self.same_origin, allowed_hosts=hosts, www_redirect=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.any_address and is_address(header(scope, b"host")):
            return await self.same_origin(scope, receive, send)
        return await self.checked(scope, receive, send)

    async def same_origin(self, scope, receive, send):
        origin = header(scope, b"origin")
        if (
            origin is not None
            and scope["path"].startswith("/api/")
            and urlsplit(origin).netloc.lower() != (header(scope, b"host") or "").lower()
        ):
            response = JSONResponse(
                {"error": f"cross-origin requests to the API are refused (Origin {origin})"}, status_code=403
            )
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def header(scope, name):
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def is_address(host):
    try:
        ipaddress.ip_address(urlsplit("//" + (host or "")).hostname or "")
        return True
    except ValueError:
        return False
