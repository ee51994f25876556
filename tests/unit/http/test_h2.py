"""
Unit tests for L{graceful.http.h2}: ALPN offers h2 on the TLS ports, and an
HTTP/2 connection built by a L{DrainingSite} (over a L{StringTransport} that
negotiated h2, on a L{Clock}) is counted like an HTTP/1.1 one and drains with
GOAWAY: open streams complete, none is reset, the connection closes after.

The client side is h2's own connection until the drain; what the server
writes from then on is read frame by frame with hyperframe, because h2's
client state machine closes on receiving a GOAWAY (see L{graceful.http.h2}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from graceful.http.site import DrainingSite
from graceful.http.h2 import H2_ENABLED, MAX_STREAM_ID, alpn_protocols

from .test_site import App
from .test_routing import HTTPConnection
from .test_tls import CERT, KEY

if not H2_ENABLED:
    raise SkipTest("h2 (the http2 extra) is not installed")

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame

from graceful.http.tls import load_tls_options

GRACE = 2.0

#: The client connection preface, with an empty SETTINGS frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def frames(data: bytes) -> list[Frame]:
    """
    Split what the server wrote into frames.
    """
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def describe(frame: Frame) -> tuple[Any, ...]:
    """
    A frame in a form easy to compare: its type, stream and what matters.
    """
    if isinstance(frame, GoAwayFrame):
        return ("GOAWAY", frame.last_stream_id, frame.error_code)
    if isinstance(frame, PingFrame):
        return ("PING", "ACK" in frame.flags)
    if isinstance(frame, DataFrame):
        return ("DATA", frame.stream_id, "END_STREAM" in frame.flags)
    if isinstance(frame, HeadersFrame):
        return ("HEADERS", frame.stream_id)
    if isinstance(frame, RstStreamFrame):
        return ("RST_STREAM", frame.stream_id)
    return (type(frame).__name__,)


class ALPNTests(SynchronousTestCase):
    """
    The TLS ports offer h2, and keep http/1.1 for clients without it: a
    site behind Twisted's TLS, in memory, with a client offering C{offered}.
    """

    def connect(self, offered: list[bytes] | None) -> tuple[Any, Any, Any]:
        clock = Clock()
        site = DrainingSite(App(), reactor=clock)
        server = TLSMemoryBIOFactory(load_tls_options(CERT, KEY), False, site.over_tls(), clock)
        client = TLSMemoryBIOFactory(
            CertificateOptions(verify=False, acceptableProtocols=offered),
            True,
            Factory.forProtocol(Protocol),
            clock,
        )
        address = IPv4Address("TCP", "127.0.0.1", 40002)
        client_tls, server_tls, pump = connectedServerAndClient(
            lambda: server.buildProtocol(address),
            lambda: client.buildProtocol(address),
            greet=False,
            clock=clock,
        )
        pump.flush()
        self.addCleanup(lambda: (client_tls.loseConnection(), pump.flush()))
        return site, client_tls, pump

    def test_offered(self) -> None:
        self.assertEqual(alpn_protocols(), [b"h2", b"http/1.1"])

    def test_h2_client(self) -> None:
        site, client, pump = self.connect([b"h2", b"http/1.1"])
        self.assertEqual(client.negotiatedProtocol, b"h2")
        client.write(PREFACE)
        pump.flush()
        self.assertEqual(site.connections_by_kind(), {"h2": 1})

    def test_http11_client(self) -> None:
        site, client, pump = self.connect([b"http/1.1"])
        self.assertEqual(client.negotiatedProtocol, b"http/1.1")
        client.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        pump.flush()
        self.assertEqual(site.connections_by_kind(), {"http/1.1": 1})
        self.assertEqual(site.requests_served, 1)

    def test_no_alpn(self) -> None:
        site, client, pump = self.connect(None)
        self.assertIsNone(client.negotiatedProtocol)
        client.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        pump.flush()
        self.assertEqual(site.connections_by_kind(), {"http/1.1": 1})


class H2Client:
    """
    An h2 client connection to C{site} over a L{StringTransport} that
    negotiated h2.
    """

    def __init__(self, site: DrainingSite, clock: Clock) -> None:
        self.clock = clock
        self.transport = StringTransport()
        self.transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        self.protocol = site.over_tls().buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        self.protocol.makeConnection(self.transport)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.lost = False
        self.responses: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.goaway: int | None = None
        self.flush()

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def flush(self) -> None:
        """
        Exchange bytes until neither side has more (h2-side client).
        """
        for _ in range(50):
            self.clock.advance(0)
            out = self.transport.value()
            self.transport.clear()
            if out:
                for event in self.h2.receive_data(out):
                    if isinstance(event, h2.events.DataReceived):
                        self.responses[event.stream_id] = (
                            self.responses.get(event.stream_id, b"") + event.data
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        self.ended.add(event.stream_id)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.goaway = event.last_stream_id
            mine = self.h2.data_to_send()
            if mine:
                self.send(mine)
            if not out and not mine:
                return

    def request(self, path: str) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "t")],
            end_stream=True,
        )
        self.flush()
        return stream_id

    def raw_request(self, stream_id: int, path: str) -> None:
        """
        Open a stream without h2 (once its state machine is closed).
        """
        encoder = self.h2.encoder
        block = encoder.encode(
            [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "t")]
        )
        self.send(HeadersFrame(stream_id, block, flags=["END_HEADERS", "END_STREAM"]).serialize())

    def server_frames(self) -> list[tuple[Any, ...]]:
        """
        What the server wrote since the last look, frame by frame.
        """
        for _ in range(50):
            self.clock.advance(0)
        out = self.transport.value()
        self.transport.clear()
        return [describe(f) for f in frames(out)]

    def ack_ping(self) -> None:
        self.send(PingFrame(0, b"draining", flags=["ACK"]).serialize())

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


class H2DrainTests(SynchronousTestCase):
    """
    An HTTP/2 connection through a site's drain.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = App()
        self.access: list[str] = []
        self.site = DrainingSite(
            self.app, access_log=self.access.append, idle_grace=GRACE, reactor=self.clock
        )

    def connect(self) -> H2Client:
        client = H2Client(self.site, self.clock)
        self.addCleanup(client.lose)
        return client

    def test_served_counted_logged(self) -> None:
        client = self.connect()
        stream = client.request("/fast")
        self.assertEqual(client.responses[stream], b"fast")
        self.assertIn(stream, client.ended)
        self.assertEqual(self.site.requests_served, 1)
        self.assertEqual(len(self.access), 1)
        self.assertIn('"GET /fast HTTP/2"', self.access[0])
        self.assertEqual(self.site.connections_by_kind(), {"h2": 1})

    def test_kinds(self) -> None:
        self.connect()
        http11 = HTTPConnection(self.site)
        self.addCleanup(http11.lose)
        self.assertEqual(self.site.connections_by_kind(), {"h2": 1, "http/1.1": 1})

    def test_in_flight(self) -> None:
        client = self.connect()
        client.request("/slow")
        self.assertEqual(self.site.in_flight, 1)
        self.app.answer()
        client.flush()
        self.assertEqual(self.site.in_flight, 0)

    def test_idle_connection(self) -> None:
        """
        No stream open: a PING and the final GOAWAY at once; the PING's ACK
        closes the connection, and the drain fires when it is gone.
        """
        client = self.connect()
        client.request("/fast")
        drained = self.site.drain()
        self.assertEqual(client.server_frames(), [("PING", False), ("GOAWAY", 1, 0)])
        self.assertFalse(client.closing)
        client.ack_ping()
        self.assertTrue(client.closing)
        self.assertNoResult(drained)
        client.lose()
        self.successResultOf(drained)
        self.assertEqual(self.site.connections_by_kind(), {})

    def test_no_ack(self) -> None:
        """
        A client that does not answer the PING is closed after the grace.
        """
        client = self.connect()
        self.site.drain()
        client.server_frames()
        self.clock.advance(GRACE - 0.1)
        self.assertFalse(client.closing)
        self.clock.advance(0.1)
        self.assertTrue(client.closing)

    def test_open_stream_completes_first(self) -> None:
        """
        A stream open when the drain starts is answered, then the GOAWAY
        names it as the last stream.
        """
        client = self.connect()
        stream = client.request("/slow")
        self.site.drain()
        self.assertEqual(client.server_frames(), [])
        self.app.answer(b"done")
        self.assertEqual(
            client.server_frames(),
            [("HEADERS", stream), ("DATA", stream, False), ("DATA", stream, True),
             ("PING", False), ("GOAWAY", stream, 0)],
        )
        client.ack_ping()
        self.assertTrue(client.closing)

    def test_racing_stream_ignored(self) -> None:
        """
        A stream opened after the final GOAWAY is neither served nor reset:
        the GOAWAY's last stream id tells the client to send it again.
        """
        client = self.connect()
        client.request("/fast")
        self.site.drain()
        client.server_frames()
        client.raw_request(3, "/fast")
        self.assertEqual(client.server_frames(), [])
        self.assertEqual(self.site.requests_served, 1)
        client.ack_ping()
        self.assertTrue(client.closing)

    def test_busy_connection_two_steps(self) -> None:
        """
        Streams open through the grace: GOAWAY with 2^31-1 and a PING; a
        stream racing it is served; the ACK brings the final GOAWAY; the
        open streams complete, none reset, then the connection closes.
        """
        client = self.connect()
        first = client.request("/slow")
        self.site.drain()
        self.clock.advance(GRACE)
        self.assertEqual(
            client.server_frames(), [("GOAWAY", MAX_STREAM_ID, 0), ("PING", False)]
        )
        client.raw_request(3, "/slow")
        self.assertEqual(self.site.in_flight, 2)
        client.ack_ping()
        self.assertEqual(client.server_frames(), [("GOAWAY", 3, 0)])
        self.app.answer(b"one")
        self.assertFalse(client.closing)
        self.app.answer(b"two")
        sent = client.server_frames()
        self.assertEqual(
            [f for f in sent if f[0] == "DATA" and f[2]], [("DATA", first, True), ("DATA", 3, True)]
        )
        self.assertNotIn("RST_STREAM", [f[0] for f in sent])
        self.assertTrue(client.closing)
        self.assertEqual(self.site.requests_served, 2)

    def test_body_after_the_final_goaway_is_served(self) -> None:
        """
        The stream the final GOAWAY names as the last one is processed to
        its end: its body, sent after the PING's ACK brought that GOAWAY,
        is read and the request answered.
        """
        client = self.connect()
        client.request("/slow")
        self.site.drain()
        self.clock.advance(GRACE)
        client.server_frames()  # GOAWAY 2^31-1 and the PING
        # A POST racing the first GOAWAY: its headers now, its body later.
        block = client.h2.encoder.encode(
            [(":method", "POST"), (":path", "/fast"), (":scheme", "https"), (":authority", "t")]
        )
        client.send(HeadersFrame(3, block, flags=["END_HEADERS"]).serialize())
        client.ack_ping()
        self.assertEqual(client.server_frames(), [("GOAWAY", 3, 0)])
        client.send(DataFrame(3, b"a=1", flags=["END_STREAM"]).serialize())
        self.assertEqual(
            client.server_frames(), [("HEADERS", 3), ("DATA", 3, False), ("DATA", 3, True)]
        )
        self.assertEqual(self.site.requests_served, 2)
        self.app.answer()
        client.server_frames()
        self.assertTrue(client.closing)

    def test_multiplexing_client(self) -> None:
        """
        A client seen with two streams open at once gets the two steps at
        the drain's start, even when idle: a stream it races is served.
        """
        client = self.connect()
        client.request("/slow")
        client.request("/slow")
        self.app.answer()
        self.app.answer()
        client.flush()
        self.assertEqual(self.site.in_flight, 0)
        self.site.drain()
        self.assertEqual(
            client.server_frames(), [("GOAWAY", MAX_STREAM_ID, 0), ("PING", False)]
        )
        client.raw_request(5, "/fast")
        self.assertEqual(
            client.server_frames()[-1:], [("DATA", 5, True)]
        )
        self.assertEqual(self.site.requests_served, 3)
        client.ack_ping()
        self.assertEqual(client.server_frames(), [("GOAWAY", 5, 0)])
        self.assertTrue(client.closing)

    def test_busy_no_ack(self) -> None:
        """
        Without the PING's ACK, the final GOAWAY follows after the grace.
        """
        client = self.connect()
        client.request("/slow")
        self.site.drain()
        self.clock.advance(GRACE)
        client.server_frames()
        self.clock.advance(GRACE)
        self.assertEqual(client.server_frames(), [("GOAWAY", 1, 0)])
        self.app.answer()
        client.server_frames()
        self.assertTrue(client.closing)

    def test_connected_while_draining(self) -> None:
        self.site.drain()
        client = self.connect()
        self.assertEqual(client.goaway, 0)
        client.ack_ping()
        self.assertTrue(client.closing)

    def test_abort(self) -> None:
        client = self.connect()
        client.request("/slow")
        self.site.drain()
        self.assertEqual(self.site.abort(), 1)
        self.assertTrue(client.transport.disconnecting)
