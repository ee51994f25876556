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
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from .scope import ASGIApp, Message, Scope, build_http_scope

_log = Logger(namespace="graceful.asgi")

#: autobahn's state of an open WebSocket.
_STATE_OPEN = 3

_missing_logged = False


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
    return scope


def websocket_factory(app: ASGIApp, loop_of: Any, reactor: Any = None) -> Any:
    """
    An autobahn C{WebSocketResource} builder for C{app}, or C{None} (logged
    once) when autobahn is not installed.

    @param loop_of: a callable returning the loop to run the app on.
    @param reactor: the reactor its connections run on; the caller names
        it (L{graceful.asgi.resource} passes the global one).
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
            if not self._handshake.called:
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


