"""
Unit tests for the ASGI C{websocket} scope (L{graceful.asgi.websocket}):
autobahn over in-memory connections, the app on an asyncio loop driven by
hand, a L{MemoryReactorClock} for the site's drain.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from graceful._settings import Settings
from graceful.asgi.resource import ASGIResource
from graceful.asgi.websocket import build_websocket_scope, websocket_factory
from graceful.http.site import DrainingSite

from .test_resource import settle
from ..http.test_routing import HTTPConnection
from ..http.test_websocket import TCPLikeTransport, client_handshake, close_code, server_frames


def masked(payload: bytes, opcode: int = 1) -> bytes:
    mask = b"abcd"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


class RaisingApp:
    """
    Accepts, then raises when it receives a message (or raises at once).
    """

    def __init__(self, at_once: bool = False) -> None:
        self.at_once = at_once

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if self.at_once:
            raise ValueError("broken")
        await send({"type": "websocket.accept"})
        await receive()
        raise ValueError("broken")


class EchoApp:
    """
    Accepts (with the first offered subprotocol), echoes, records what it
    received; a text "close" makes it close with 4000.
    """

    def __init__(self, deny: bool = False) -> None:
        self.deny = deny
        self.scopes: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.connect":
                if self.deny:
                    await send({"type": "websocket.close"})
                    return
                sub = scope["subprotocols"][0] if scope["subprotocols"] else None
                await send({"type": "websocket.accept", "subprotocol": sub,
                            "headers": [(b"x-app", b"yes")]})
            elif message["type"] == "websocket.receive":
                if message.get("text") == "close":
                    await send({"type": "websocket.close", "code": 4000})
                    continue
                await send({"type": "websocket.send", **{k: v for k, v in message.items()
                                                          if k in ("bytes", "text")}})
            else:
                return


class ASGIWebSocketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.clock = MemoryReactorClock()
        self.access: list[str] = []

    def connect(
        self, app: Any, handshake: bytes | None = None, options: dict[str, Any] | None = None
    ) -> HTTPConnection:
        if not hasattr(self, "site"):
            resource = ASGIResource(app, "/chat", loop=self.loop)
            resource._websocket = websocket_factory(
                resource.app, lambda: self.loop, self.clock, options
            )
            self.site = DrainingSite(resource, reactor=self.clock, rng=random.Random(1),
                                     access_log=self.access.append)
        connection = HTTPConnection(self.site, TCPLikeTransport())
        connection.transport.protocol = connection.channel  # type: ignore[attr-defined]
        data = handshake or client_handshake("/chat/room?x=%20y")
        connection.send(data)
        settle(self.loop)
        self.addCleanup(self.lose, connection)
        return connection

    def frame(self, connection: HTTPConnection, data: bytes) -> None:
        # After the upgrade the bytes go to autobahn's protocol.
        connection.transport.protocol.dataReceived(data)  # type: ignore[attr-defined]
        settle(self.loop)

    def lose(self, connection: HTTPConnection) -> None:
        if not connection.lost:
            connection.lost = True
            protocol = connection.transport.protocol  # type: ignore[attr-defined]
            protocol.connectionLost(Failure(ConnectionDone()))
            settle(self.loop)

    def test_scope_accept_and_echo(self) -> None:
        app = EchoApp()
        handshake = client_handshake("/chat/room?x=%20y").replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n"
        )
        connection = self.connect(app, handshake)
        head = connection.transport.value().partition(b"\r\n\r\n")[0].lower()
        self.assertTrue(head.startswith(b"http/1.1 101"), head)
        self.assertIn(b"sec-websocket-protocol: chat", head)
        self.assertIn(b"x-app: yes", head)
        [scope] = app.scopes
        self.assertEqual(
            {k: scope[k] for k in ("type", "scheme", "path", "raw_path", "query_string",
                                   "root_path", "subprotocols", "http_version")},
            {"type": "websocket", "scheme": "ws", "path": "/chat/room",
             "raw_path": b"/chat/room", "query_string": b"x=%20y", "root_path": "/chat",
             "subprotocols": ["chat", "superchat"], "http_version": "1.1"},
        )
        self.assertNotIn("method", scope)
        self.assertIn((b"upgrade", b"websocket"), scope["headers"])
        self.frame(connection, masked(b"hello"))
        settle(self.loop)
        self.frame(connection, masked(b"\x01\x02", opcode=2))
        settle(self.loop)
        self.assertEqual(server_frames(connection.transport.value()),
                         [(1, b"hello"), (2, b"\x01\x02")])
        self.assertEqual(app.received[1:], [
            {"type": "websocket.receive", "text": "hello"},
            {"type": "websocket.receive", "bytes": b"\x01\x02"},
        ])
        self.assertEqual(self.site.connections_by_kind(), {"websocket": 1})

    def test_message_over_max_size_closes_1009(self) -> None:
        """
        C{ws_max_size}: a message over it closes the connection with 1009
        (message too big) and never reaches the app.
        """
        app = EchoApp()
        options = Settings(ws_max_size=4, ws_ping_interval=0).websocket_options
        connection = self.connect(app, options=options)
        self.frame(connection, masked(b"four"))
        self.frame(connection, masked(b"fives"))
        self.assertEqual(close_code(connection.transport.value()), 1009)
        texts = [m.get("text") for m in app.received if m["type"] == "websocket.receive"]
        self.assertEqual(texts, ["four"])

    def test_pings_every_ping_interval(self) -> None:
        import txaio

        # autobahn's timers run on txaio's loop: the test's clock here.
        self.patch(txaio.config, "loop", self.clock)
        options = Settings(ws_ping_interval=20).websocket_options
        connection = self.connect(EchoApp(), options=options)
        self.clock.advance(19)
        self.assertEqual(server_frames(connection.transport.value()), [])
        self.clock.advance(1.5)  # autobahn's timers fire in 0.2 s buckets
        self.assertEqual([op for op, _ in server_frames(connection.transport.value())], [9])

    def test_app_close(self) -> None:
        connection = self.connect(EchoApp())
        self.frame(connection, masked(b"close"))
        settle(self.loop)
        self.assertEqual(close_code(connection.transport.value()), 4000)

    def test_close_before_accept_is_403(self) -> None:
        connection = self.connect(EchoApp(deny=True))
        self.assertTrue(connection.transport.value().startswith(b"HTTP/1.1 403"),
                        connection.transport.value()[:40])

    def test_access_log_when_closed(self) -> None:
        """
        The app accepts after the upgrade request was rendered; the line,
        written at the close, says 101, the bytes sent and the duration.
        """
        connection = self.connect(EchoApp())
        self.frame(connection, masked(b"hello"))
        self.clock.advance(1.25)
        self.assertEqual(self.access, [])
        self.lose(connection)
        [line] = self.access
        sent = len(connection.transport.value())
        self.assertIn(f'"GET /chat/room?x=%20y HTTP/1.1" 101 {sent} "-" "-" 1.250', line)

    def test_access_log_of_a_denied_websocket(self) -> None:
        connection = self.connect(EchoApp(deny=True))
        self.lose(connection)
        [line] = self.access
        self.assertIn('"GET /chat/room?x=%20y HTTP/1.1" 403 ', line)

    def test_deny_with_an_http_response(self) -> None:
        """
        websocket.http.response: the app denies the WebSocket with an HTTP
        answer of its own (status, headers, body in parts); the client gets
        it and a close, the access log its status, and nothing is logged as
        an error.
        """
        scopes: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scopes.append(scope)
            await receive()
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": [(b"www-authenticate", b"Bearer"),
                                    (b"content-type", b"text/plain")]})
            await send({"type": "websocket.http.response.body", "body": b"log ",
                        "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"in first"})

        connection = self.connect(app)
        self.assertEqual(scopes[0]["extensions"], {"websocket.http.response": {}})
        answer = connection.transport.value()
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), head)
        self.assertIn(b"www-authenticate: Bearer\r\n", head + b"\r\n")
        self.assertIn(b"Content-Length: 12", head)
        self.assertEqual(body, b"log in first")
        self.assertTrue(connection.transport.disconnecting)
        self.lose(connection)
        [line] = self.access
        self.assertIn('"GET /chat/room?x=%20y HTTP/1.1" 401 ', line)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_drain_closes_1012_and_app_hears_disconnect(self) -> None:
        app = EchoApp()
        connection = self.connect(app)
        drained = self.site.drain("restart", spread=5.0, timeout=30.0)
        self.clock.advance(0)
        self.assertEqual(close_code(connection.transport.value()), 1012)
        # The client answers with its close frame: the connection goes.
        self.frame(connection, bytes([0x88, 0x82]) + b"abcd" + bytes(
            b ^ b"abcd"[i] for i, b in enumerate(struct.pack("!H", 1012))))
        self.lose(connection)
        self.assertEqual(app.received[-1], {"type": "websocket.disconnect", "code": 1012})
        self.successResultOf(drained)

    def test_drain_spread_and_shutdown_1001(self) -> None:
        """
        Four ASGI WebSockets at a shutdown with a 2 s spread: 1001 each,
        one every 0.5 s, and each app hears its disconnect.
        """
        app = EchoApp()  # one app serves every connection of the site
        connections = [self.connect(app) for _ in range(4)]
        self.assertEqual(self.site.connections_by_kind(), {"websocket": 4})
        self.site.drain("shutdown", spread=2.0, timeout=30.0)
        closed_at: list[float] = []
        self.clock.advance(0)
        for _ in range(20):
            for c in connections:
                if not c.lost and close_code(c.transport.value()) == 1001:
                    closed_at.append(self.clock.seconds())
                    self.lose(c)
            self.clock.advance(0.125)
        self.assertEqual(closed_at, [0.0, 0.5, 1.0, 1.5])
        disconnects = [m for m in app.received if m["type"] == "websocket.disconnect"]
        self.assertEqual(disconnects, [{"type": "websocket.disconnect", "code": 1001}] * 4)

    def test_wss_scheme(self) -> None:
        request = DummyRequest([b"ws"])
        request.uri = b"/ws?a=1"
        request.clientproto = b"HTTP/1.1"
        request.requestHeaders.setRawHeaders(b"sec-websocket-protocol", [b"a, b", b"c"])
        request.isSecure = lambda: True  # type: ignore[attr-defined]
        scope = build_websocket_scope(request, "", {"k": 1})  # type: ignore[arg-type]
        self.assertEqual(
            (scope["scheme"], scope["subprotocols"], scope["query_string"], scope["state"]),
            ("wss", ["a", "b", "c"], b"a=1", {"k": 1}),
        )

    def test_app_raising_after_accept_closes_1011(self) -> None:
        connection = self.connect(RaisingApp())
        self.frame(connection, masked(b"boom"))
        self.assertEqual(close_code(connection.transport.value()), 1011)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_app_raising_before_accept_is_500(self) -> None:
        connection = self.connect(RaisingApp(at_once=True))
        self.assertTrue(connection.transport.value().startswith(b"HTTP/1.1 500"),
                        connection.transport.value()[:40])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_client_disconnect(self) -> None:
        app = EchoApp()
        connection = self.connect(app)
        self.lose(connection)
        self.assertEqual(app.received[-1]["type"], "websocket.disconnect")
        self.assertEqual(self.site.connections_by_kind(), {})


class MissingAutobahnTests(SynchronousTestCase):
    def test_501(self) -> None:
        import builtins

        from twisted.logger import capturedLogs

        from graceful.asgi import websocket as ws

        real = builtins.__import__

        def no_autobahn(name: str, *args: Any, **kw: Any) -> Any:
            if name.startswith("autobahn"):
                raise ImportError(name)
            return real(name, *args, **kw)

        self.patch(builtins, "__import__", no_autobahn)
        self.patch(ws, "_missing_logged", False)
        with capturedLogs() as events:
            self.assertIsNone(ws.websocket_factory(EchoApp(), lambda: None))
            self.assertIsNone(ws.websocket_factory(EchoApp(), lambda: None))
        lines = [e for e in events if "graceful[websocket]" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
