"""
Unit tests for L{graceful.http.websocket}: autobahn WebSockets mounted in a
L{DrainingSite}, over in-memory connections and a L{Clock}.  After the
upgrade the site still tracks each WebSocket; a drain sends each one a close
frame (1012 on a restart, 1001 at a shutdown), spread over the window, with
the per-connection C{on_drain} hook and its extended grace.
"""

from __future__ import annotations

import base64
import random
import struct
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from graceful import CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART, DrainNotice
from graceful.http.site import DrainingSite
from graceful.process.runtime import Runtime
from graceful.testing import MemoryEnvironment

from .test_routing import HTTPConnection


class TCPLikeTransport(StringTransport):
    """
    A StringTransport that, like a TCP transport, knows its protocol: where
    WebSocketResource puts its own.
    """

    protocol: Any = None


class Echo(WebSocketServerProtocol):
    """
    Echoes; its C{on_drain} answers what the test put in C{answer}.
    """

    answer: Any = None
    notices: list[DrainNotice]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)

    def on_drain(self, notice: DrainNotice) -> Any:
        self.notices.append(notice)
        if self.answer == "reconnect":
            # The app's own word first; graceful closes right after.
            self.sendMessage(b"reconnect")
            return None
        return self.answer


class Plain(WebSocketServerProtocol):
    """
    No on_drain: closed when its turn comes.
    """


class Slow(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> int:
        return NOT_DONE_YET


def client_handshake(path: str = "/ws") -> bytes:
    key = base64.b64encode(b"0123456789abcdef").decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """
    The (opcode, payload) of each unmasked frame after the 101 response.
    """
    head, _, data = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    frames = []
    while data:
        opcode = data[0] & 0x0F
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


def close_code(data: bytes) -> int | None:
    for opcode, payload in server_frames(data):
        if opcode == 8:
            return int(struct.unpack("!H", payload[:2])[0])
    return None


class Refused(WebSocketServerProtocol):
    """
    Refuses every handshake.
    """

    def onConnect(self, request: Any) -> None:
        raise ConnectionDeny(403, "not you")


def websocket_site(clock: Clock, access_log: Any = None) -> DrainingSite:
    """
    C{/ws}: L{Echo}; C{/plain}: L{Plain}; C{/refused}: L{Refused};
    C{/slow}: never answered.
    """
    root = Resource()
    factory = WebSocketServerFactory(reactor=clock)
    factory.protocol = Echo
    root.putChild(b"ws", WebSocketResource(factory))
    plain = WebSocketServerFactory(reactor=clock)
    plain.protocol = Plain
    root.putChild(b"plain", WebSocketResource(plain))
    refused = WebSocketServerFactory(reactor=clock)
    refused.protocol = Refused
    root.putChild(b"refused", WebSocketResource(refused))
    root.putChild(b"slow", Slow())
    return DrainingSite(root, reactor=clock, rng=random.Random(7), access_log=access_log)


class _WebSockets(SynchronousTestCase):
    def setUp(self) -> None:
        # A Clock that a Runtime can also stop, when it exits.
        self.clock = MemoryReactorClock()
        self.access: list[str] = []
        self.site = websocket_site(self.clock, self.access.append)

    def websocket(self, path: str = "/ws", answer: Any = None) -> HTTPConnection:
        connection = HTTPConnection(self.site, TCPLikeTransport())
        connection.transport.protocol = connection.channel  # type: ignore[attr-defined]
        connection.send(client_handshake(path))
        protocol = connection.transport.protocol  # type: ignore[attr-defined]
        protocol.answer = answer
        protocol.notices = []
        self.addCleanup(self.lose, connection)
        return connection

    def lose(self, connection: HTTPConnection) -> None:
        protocol = connection.transport.protocol  # type: ignore[attr-defined]
        if not connection.lost:
            connection.lost = True
            protocol.connectionLost(Failure(ConnectionDone()))


class WebSocketDrainTests(_WebSockets):
    def test_tracked_after_upgrade(self) -> None:
        """
        The upgraded connection is no longer the HTTP channel's: the site
        counts it as a websocket, and it still echoes.
        """
        connection = self.websocket()
        self.assertEqual(self.site.connections_by_kind(), {"websocket": 1})
        self.assertEqual(self.site.channels, set())
        self.lose(connection)
        self.assertEqual(self.site.connections_by_kind(), {})

    def test_restart_closes_with_1012_and_drain_waits_for_the_close(self) -> None:
        connection = self.websocket("/plain")
        drained = self.site.drain("restart", spread=5.0, timeout=30.0)
        self.clock.advance(0)
        self.assertEqual(close_code(connection.transport.value()), CLOSE_SERVICE_RESTART)
        self.assertNoResult(drained)
        # The client answers the close; the connection goes.
        self.lose(connection)
        self.successResultOf(drained)

    def test_drain_waits_for_websockets_after_the_last_request(self) -> None:
        """
        The drain is not over when the last HTTP connection goes while a
        WebSocket is still open: only once that one is gone too.
        """
        connection = self.websocket("/plain")
        slow = HTTPConnection(self.site)
        slow.request("/slow")
        self.addCleanup(slow.lose)
        drained = self.site.drain("restart", spread=5.0, timeout=30.0)
        self.clock.advance(0)
        slow.lose()
        self.assertEqual(self.site.connections_by_kind(), {"websocket": 1})
        self.assertNoResult(drained)
        self.lose(connection)
        self.successResultOf(drained)

    def test_shutdown_closes_with_1001(self) -> None:
        connection = self.websocket("/plain")
        self.site.drain("shutdown", spread=5.0, timeout=30.0)
        self.clock.advance(0)
        self.assertEqual(close_code(connection.transport.value()), CLOSE_GOING_AWAY)

    def test_closes_spread_over_the_window(self) -> None:
        """
        Ten WebSockets with a 5 s spread: one close every 0.5 s, the first
        at once, the last before the window ends.
        """
        connections = [self.websocket("/plain") for _ in range(10)]
        self.site.drain("restart", spread=5.0, timeout=30.0)
        closed_at: dict[int, float] = {}
        self.clock.advance(0)
        for step in range(48):
            for i, c in enumerate(connections):
                if i not in closed_at and close_code(c.transport.value()) is not None:
                    closed_at[i] = self.clock.seconds()
            self.clock.advance(0.125)
        times = sorted(closed_at.values())
        self.assertEqual(len(times), 10)
        self.assertEqual(times, [i * 0.5 for i in range(10)])
        # In a random order, not the order they connected in.
        order = sorted(closed_at, key=closed_at.__getitem__)
        self.assertNotEqual(order, list(range(10)))

    def test_close_order_is_the_seeded_shuffle(self) -> None:
        """
        The closes go out in the order the site's seeded rng (C{Random(7)})
        shuffles the connections into, taken in the order they connected:
        the same order every run, whatever the memory layout.
        """
        connections = [self.websocket("/plain") for _ in range(10)]
        self.site.drain("restart", spread=5.0, timeout=30.0)
        order = []
        for step in range(11):
            self.clock.advance(0 if step == 0 else 0.5)
            order += [
                i
                for i, c in enumerate(connections)
                if i not in order and close_code(c.transport.value()) is not None
            ]
        # random.Random(7).shuffle(list(range(10)))
        self.assertEqual(order, [8, 3, 1, 4, 7, 0, 9, 6, 2, 5])

    def test_on_drain_hears_first(self) -> None:
        connection = self.websocket(answer="reconnect")
        self.site.drain("restart", spread=0.0, timeout=30.0)
        self.clock.advance(0)
        protocol = connection.transport.protocol  # type: ignore[attr-defined]
        self.assertEqual(protocol.notices, [DrainNotice("restart", 1012, 30.0)])
        frames = server_frames(connection.transport.value())
        self.assertEqual([op for op, _ in frames], [1, 8])
        self.assertEqual(frames[0][1], b"reconnect")

    def test_extended_grace(self) -> None:
        """
        on_drain returning 3: the close comes 3 s after the turn.
        """
        connection = self.websocket(answer=3.0)
        self.site.drain("restart", spread=0.0, timeout=30.0)
        self.clock.advance(0)
        self.clock.advance(2.9)
        self.assertIsNone(close_code(connection.transport.value()))
        self.clock.advance(0.1)
        self.assertEqual(close_code(connection.transport.value()), 1012)

    def test_extended_grace_stays_within_drain_timeout(self) -> None:
        """
        A grace past drain_timeout is cut short: the close still goes out a
        second before the deadline, for its handshake.
        """
        connection = self.websocket(answer=100.0)
        self.site.drain("shutdown", spread=0.0, timeout=10.0)
        self.clock.advance(0)
        self.clock.advance(8.9)
        self.assertIsNone(close_code(connection.transport.value()))
        self.clock.advance(0.1)
        self.assertEqual(close_code(connection.transport.value()), 1001)

    def test_on_drain_deferred(self) -> None:
        d: Deferred[None] = Deferred()
        connection = self.websocket(answer=d)
        self.site.drain("restart", spread=0.0, timeout=30.0)
        self.clock.advance(0)
        self.assertIsNone(close_code(connection.transport.value()))
        d.callback(None)
        self.assertEqual(close_code(connection.transport.value()), 1012)

    def test_upgrade_while_draining_is_closed_at_once(self) -> None:
        keep = HTTPConnection(self.site)
        keep.request("/slow")
        self.addCleanup(keep.lose)
        self.site.drain("restart", spread=5.0, timeout=30.0)
        connection = self.websocket("/plain")
        self.clock.advance(0)
        self.assertEqual(close_code(connection.transport.value()), 1012)

    def test_process_exits_once_its_websockets_are_gone(self) -> None:
        """
        A process shutting down with a WebSocket open sends the close and
        exits when the connection goes, not before, and not only at
        drain_timeout.
        """
        connection = self.websocket("/plain")
        runtime = Runtime(self.clock, {}, 4242, environment=MemoryEnvironment())
        runtime.server("s1").site = self.site
        exited = runtime.shutdown()
        self.clock.advance(0)
        self.assertEqual(close_code(connection.transport.value()), CLOSE_GOING_AWAY)
        self.clock.advance(runtime.settings.drain_timeout / 2)
        self.assertNoResult(exited)
        self.lose(connection)
        self.clock.advance(0)
        self.successResultOf(exited)

    def test_abort_counts_by_kind(self) -> None:
        """
        At drain_timeout the runtime cuts what is left and says how many
        of which kind.
        """
        self.websocket("/plain")
        self.websocket("/plain")
        slow = HTTPConnection(self.site)
        slow.request("/slow")
        self.addCleanup(slow.lose)
        runtime = Runtime(self.clock, {}, 4242, environment=MemoryEnvironment())
        runtime.server("s1").site = self.site
        runtime.shutdown()
        with capturedLogs() as events:
            self.clock.advance(runtime.settings.drain_timeout)
        [line] = [e for e in events if "aborted" in e.get("log_format", "")]
        from twisted.logger import formatEvent

        self.assertEqual(
            formatEvent(line),
            "4242: drain_timeout of 30s reached: aborted 3 connection(s): "
            "2 websocket, 1 http/1.1",
        )
        self.assertTrue(slow.transport.disconnecting)


class AccessLogTests(_WebSockets):
    """
    An upgraded connection gets its access-log line when it closes, as a
    request does when it is answered.
    """

    def test_websocket_logged_when_closed(self) -> None:
        """
        One combined-format line: status 101, every byte sent on the
        connection (handshake and frames), then the seconds it was open.
        """
        connection = self.websocket()
        self.clock.advance(2.5)
        self.assertEqual(self.access, [])  # open: nothing to log yet
        self.site.drain("restart")
        self.clock.advance(0)  # its turn to be closed
        self.lose(connection)
        [line] = self.access
        sent = len(connection.transport.value())
        self.assertIn(f'"GET /ws HTTP/1.1" 101 {sent} "-" "-" 2.500', line)
        self.assertEqual(close_code(connection.transport.value()), CLOSE_SERVICE_RESTART)

    def test_refused_handshake_logged_with_its_status(self) -> None:
        connection = self.websocket("/refused")
        self.assertTrue(connection.transport.value().startswith(b"HTTP/1.1 403"))
        self.lose(connection)
        [line] = self.access
        self.assertIn('"GET /refused HTTP/1.1" 403 ', line)

    def test_lost_in_the_handshake_not_logged(self) -> None:
        """
        A connection gone before its handshake was answered has no status
        to log (twisted.web logs no unanswered request either).
        """
        connection = HTTPConnection(self.site, TCPLikeTransport())
        connection.transport.protocol = connection.channel  # type: ignore[attr-defined]
        handshake = client_handshake()
        connection.send(handshake[:-2])  # the upgrade request is incomplete
        connection.lose()
        self.assertEqual(self.access, [])


class ReportingTests(_WebSockets):
    """
    The admin status, page and metrics show connections by kind and the
    drain's progress.
    """

    def setUp(self) -> None:
        super().setUp()
        self.runtime = Runtime(self.clock, {}, 4242, environment=MemoryEnvironment())
        self.runtime.server("s1").site = self.site

    def test_status_counts_by_kind(self) -> None:
        self.websocket("/plain")
        self.websocket("/plain")
        slow = HTTPConnection(self.site)
        slow.request("/slow")
        self.addCleanup(slow.lose)
        status = self.runtime.status().to_json()
        self.assertEqual(
            status["servers"][0]["connections"],
            {"http/1.1": 1, "h2": 0, "websocket": 2, "stream": 0},
        )
        self.assertIsNone(status["drain"])

        from graceful.admin.page import admin_page
        from graceful.admin.metrics import exposition

        page = admin_page(self.runtime.status(), prefix="/debug/admin").decode()
        self.assertIn("http/1.1 1 &middot; websocket 2", page)
        body, _ = exposition(self.runtime, None)
        self.assertIn(b'graceful_connections{kind="websocket",server="s1"} 2.0', body)
        self.assertIn(b'graceful_connections{kind="h2",server="s1"} 0.0', body)

    def test_drain_progress(self) -> None:
        self.websocket("/plain")
        self.runtime.settings.drain_timeout = 10.0
        self.runtime.shutdown()
        self.clock.advance(1.5)
        drain = self.runtime.status().to_json()["drain"]
        self.assertEqual(
            drain,
            {
                "reason": "shutdown",
                "elapsed": 1.5,
                "spread": 5.0,
                "timeout": 10.0,
                "connections_left": 1,
            },
        )
        body, _ = exposition_of(self.runtime)
        self.assertIn(b"graceful_drain_connections_left 1.0", body)


def exposition_of(runtime: Runtime) -> tuple[bytes, str]:
    from graceful.admin.metrics import exposition

    return exposition(runtime, None)


class DrainSpreadSettingTests(SynchronousTestCase):
    def test_set_drain_spread(self) -> None:
        import graceful
        from graceful import ConfigError

        runtime = Runtime(reactor=Clock(), environ={}, pid=1)
        self.patch(graceful, "_process_runtime", lambda: runtime)
        graceful.set_drain_timeout(4)
        self.assertEqual(runtime.settings.spread, 2.0)
        graceful.set_drain_spread(1.5)
        self.assertEqual(runtime.settings.spread, 1.5)
        error = self.assertRaises(ConfigError, graceful.set_drain_spread, 4)
        self.assertIn("drain_spread", str(error))
        self.assertIn("drain_timeout", str(error))
