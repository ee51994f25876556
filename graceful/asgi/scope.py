# -*- test-case-name: tests.unit.asgi.test_resource -*-
"""
The ASGI spec's types and the http scope of a twisted.web request, as
uvicorn builds it: what the http and websocket bridges share.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import unquote

from twisted.web.server import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_VERSIONS = {"version": "3.0", "spec_version": "2.3"}

#: The extension for response trailers: HTTP/1.1 only (a chunked response
#: can end with them; twisted.web's HTTP/2 stream cannot send them).
TRAILERS = "http.response.trailers"


def is_websocket_upgrade(request: Request) -> bool:
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and b"websocket" in upgrade.lower()


def http_version(clientproto: bytes) -> str:
    version = clientproto.partition(b"/")[2].decode("ascii", "replace")
    return version if version in ("1.0", "1.1") else "2" if version.startswith("2") else version


def _address(address: Any) -> list[Any] | None:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return None  # a UNIX socket, or a test's fake address
    return [host, port]


def _secure(request: Request) -> bool:
    """
    Whether C{request} came over TLS, asked once per connection: each
    C{isSecure()} is a zope interface lookup on the transport (2.5 us of
    every ASGI request's CPU, py-spy).
    """
    channel: Any = getattr(request, "channel", None)
    secure = getattr(channel, "graceful_secure", None)
    if secure is None:
        secure = request.isSecure()
        if channel is not None:
            channel.graceful_secure = secure
    return bool(secure)


def build_http_scope(request: Request, root_path: str, state: dict[str, Any]) -> Scope:
    """
    The C{http} scope of C{request} as uvicorn builds it: C{path} is the
    whole decoded path (the mount prefix included), C{root_path} the prefix.
    """
    raw_path, _, query_string = request.uri.partition(b"?")
    # In the order they came, where the request kept it (graceful's
    # ASGIRequest): twisted.web's Headers group them by name.
    wire: list[tuple[bytes, bytes]] | None = getattr(request.requestHeaders, "wire", None)
    headers = (
        list(wire)
        if wire is not None
        else [
            (name.lower(), value)
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
    )
    version = http_version(request.clientproto)
    return {
        "type": "http",
        "asgi": dict(ASGI_VERSIONS),
        "http_version": version,
        "method": request.method.decode("latin-1"),
        "scheme": "https" if _secure(request) else "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "client": _address(request.getClientAddress()),
        "server": _address(request.getHost()),
        # Each request gets its own copy of what lifespan startup set.
        "state": dict(state),
        "extensions": {TRAILERS: {}} if version == "1.1" else {},
    }
