# -*- test-case-name: tests.unit.asgi.test_asgi_websocket -*-
"""
The ASGI C{websocket} scope, served by autobahn.

An upgrade request to an ASGI mount goes through autobahn's
C{WebSocketResource}, so graceful's WebSocket drain applies to it as to any
autobahn WebSocket (the site tracks the connection; a drain sends 1012 or
1001, spread).  The protocol's C{onConnect} returns a Deferred that fires
when the app sends C{websocket.accept} (or fails with 403 when it closes
first): autobahn then finishes the opening handshake.
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import RESPONSES
from twisted.web.server import Request

from .scope import ASGIApp, Message, Scope, build_http_scope

_log = Logger(namespace="graceful.asgi")

#: autobahn's state of an open WebSocket.
_STATE_OPEN = 3

_missing_logged = False

#: The extension that lets an app deny a WebSocket with an HTTP response.
HTTP_RESPONSE = "websocket.http.response"


def http_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """
    The bytes of an HTTP/1.1 response that ends its connection: the answer
    an app gives instead of accepting a WebSocket.
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, RESPONSES.get(status, b"Unknown"))]
    names = set()
    for name, value in headers:
        names.add(name.lower())
        lines.append(name + b": " + value + b"\r\n")
    if b"content-length" not in names:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"Connection: close\r\n\r\n")
    return b"".join(lines) + body


def build_websocket_scope(request: Request, root_path: str, state: dict[str, Any]) -> Scope:
    """
    The C{websocket} scope of an upgrade request, as uvicorn builds it.
    """
    scope = build_http_scope(request, root_path, state)
    del scope["method"]
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if request.isSecure() else "ws"
    offered = b",".join(request.requestHeaders.getRawHeaders(b"sec-websocket-protocol", []))
    scope["subprotocols"] = [
        p.strip().decode("latin-1") for p in offered.split(b",") if p.strip()
    ]
    # What the websocket bridge supports (no response trailers here).
    scope["extensions"] = {HTTP_RESPONSE: {}}
    return scope


def websocket_factory(
    app: ASGIApp, loop_of: Any, reactor: Any = None, options: Mapping[str, Any] | None = None
) -> Any:
    """
    An autobahn C{WebSocketResource} builder for C{app}, or C{None} (logged
    once) when autobahn is not installed.

    @param loop_of: a callable returning the loop to run the app on.
    @param reactor: the reactor its connections run on; the caller names
        it (L{graceful.asgi.resource} passes the global one).
    @param options: autobahn's protocol options for its connections (the
        settings' C{websocket_options}).
    """
    global _missing_logged
    try:
        from autobahn.twisted.resource import WebSocketResource
        from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
        from autobahn.websocket.types import ConnectionDeny
    except ImportError:
        if not _missing_logged:
            _missing_logged = True
            _log.error(
                "ASGI websocket scopes need autobahn: pip install 'graceful[websocket]'"
            )
        return None

    class ASGIWebSocketProtocol(WebSocketServerProtocol):
        """
        One WebSocket through the app.

        @ivar scope: its C{websocket} scope (set by the factory).
        @ivar accepted: the app sent C{websocket.accept}.
        @ivar closed: the connection is closed (or closing).
        """

        scope: Scope

        def onConnect(self, request: Any) -> Any:  # a Deferred: autobahn waits for it
            self.accepted = False
            self.closed = False
            #: The app's HTTP answer, while it sends it: status, headers, body.
            self._response: tuple[int, list[tuple[bytes, bytes]], list[bytes]] | None = None
            self._answered = False
            self._inbox: asyncio.Queue[Message] = asyncio.Queue()
            self._handshake: Deferred[Any] = Deferred()
            self._inbox.put_nowait({"type": "websocket.connect"})
            task = asyncio.ensure_future(
                app(self.scope, self._asgi_receive, self._asgi_send), loop=loop_of()
            )
            task.add_done_callback(self._app_done)
            return self._handshake

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if isBinary:
                self._inbox.put_nowait({"type": "websocket.receive", "bytes": payload})
            else:
                self._inbox.put_nowait(
                    {"type": "websocket.receive", "text": payload.decode("utf-8")}
                )

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            self.closed = True
            if not hasattr(self, "_inbox"):
                return  # lost before its handshake reached onConnect
            # The peer's code, else ours (a drain's 1012/1001), else abnormal.
            code = self.remoteCloseCode or self.localCloseCode or code or 1006
            self._inbox.put_nowait({"type": "websocket.disconnect", "code": code})
            if not self._handshake.called and not self._answered:
                self._handshake.errback(ConnectionDeny(403, "closed"))

        async def _asgi_receive(self) -> Message:
            return await self._inbox.get()

        async def _asgi_send(self, message: Message) -> None:
            kind = message.get("type")
            if not self.accepted:
                if kind == "websocket.accept":
                    self.accepted = True
                    headers: dict[str, list[str]] = {}
                    for name, value in message.get("headers", ()):
                        headers.setdefault(bytes(name).decode("latin-1"), []).append(
                            bytes(value).decode("latin-1")
                        )
                    if not self._handshake.called:
                        self._handshake.callback((message.get("subprotocol"), headers))
                    return
                if kind == "websocket.close":
                    self._app_deny()
                    return
                if kind == "websocket.http.response.start" and self._response is None:
                    headers_out = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
                    self._response = (int(message["status"]), headers_out, [])
                    return
                if kind == "websocket.http.response.body" and self._response is not None:
                    if self._answered or self.closed:
                        return
                    self._response[2].append(bytes(message.get("body", b"")))
                    if not message.get("more_body", False):
                        self._answer()
                    return
                raise RuntimeError(f"expected 'websocket.accept', got {kind!r}")
            if self.closed:
                return  # the client is gone: what the app sends goes nowhere
            if kind == "websocket.send":
                if message.get("bytes") is not None:
                    self.sendMessage(bytes(message["bytes"]), isBinary=True)
                else:
                    self.sendMessage(str(message.get("text", "")).encode("utf-8"))
            elif kind == "websocket.close":
                self._app_close(int(message.get("code", 1000)), message.get("reason") or "")
            else:
                raise RuntimeError(f"unexpected websocket message {kind!r}")

        def _answer(self) -> None:
            """
            Deny the WebSocket with the app's HTTP response.
            """
            assert self._response is not None
            self._answered = True
            self.closed = True
            status = self._response[0]
            # Through failHandshake, as autobahn's own refusals go: the site
            # takes the access-log status from it.
            self.failHandshake("denied by the app", status)

        def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
            if not self._answered_now():
                super().failHandshake(reason, code, responseHeaders)
                return
            assert self._response is not None
            status, headers, body = self._response
            self.wasNotCleanReason = reason
            self.sendData(http_response(status, headers, b"".join(body)))
            self.dropConnection(abort=False)

        def _answered_now(self) -> bool:
            return getattr(self, "_answered", False) and self._response is not None

        def _app_deny(self) -> None:
            self.closed = True
            if not self._handshake.called:
                self._handshake.errback(ConnectionDeny(403, "Forbidden"))

        def _app_close(self, code: int, reason: str) -> None:
            self.closed = True
            if self.state == _STATE_OPEN:
                # sendClose refuses some codes a server may send (1001, 1011).
                self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)

        def _app_done(self, task: asyncio.Future[None]) -> None:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                _log.failure(
                    "ASGI app raised on websocket {path}",
                    _failure_of(error),
                    path=self.scope["path"],
                )
            if not self.accepted:
                if self._answered:
                    return
                if self._response is not None and not error and not self.closed:
                    self._answer()  # ended without its last body message
                    return
                if not self._handshake.called:
                    self._handshake.errback(ConnectionDeny(500 if error else 403, "app ended"))
            elif not self.closed:
                self._app_close(1011 if error else 1000, "")

    class ASGIWebSocketFactory(WebSocketServerFactory):
        protocol = ASGIWebSocketProtocol
        #: The scope of the request being rendered (render is synchronous).
        pending: Scope

        def buildProtocol(self, addr: Any) -> Any:
            protocol = super().buildProtocol(addr)
            protocol.scope = self.pending  # type: ignore[union-attr]
            return protocol

    factory = ASGIWebSocketFactory(reactor=reactor)
    if options:
        factory.setProtocolOptions(**options)
    resource = WebSocketResource(factory)

    def render(request: Request, scope: Scope) -> Any:
        factory.pending = scope
        return resource.render(request)

    return render


def _failure_of(error: BaseException) -> Any:
    from twisted.python.failure import Failure

    return Failure(error, type(error), error.__traceback__)


def not_implemented(request: Request) -> bytes:
    request.setResponseCode(501)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"WebSockets need autobahn: pip install 'graceful[websocket]'\n"


