"""
The native HTTP/1.1 channel on TLS ports (L{graceful.http.native_site}'s
L{TLSChannel}): a native site behind Twisted's TLS in memory (iosim, the
repo's test certificate, a L{Clock}).  A connection whose ALPN outcome is
http/1.1, or none, is served by the native channel, secure to the apps; one
that negotiates h2 by Twisted's HTTP/2 connection, drained with GOAWAY.
The drain, the hand-over to twisted.web, and the counts hold as on plain
ports.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import Resource

from graceful.asgi.native import NativeASGI
from graceful.asgi.resource import Lifespan
from graceful.http.h2 import H2_ENABLED
from graceful.http.native_site import NativeSite, TLSChannel, prefix_dispatch
from graceful.http.routing import Router
from graceful.http.tls import load_tls_options
from graceful.http.wsgi_native import NativeWSGI

from ..asgi.test_resource import Recorder, settle
from .test_native import GRACE, ChannelCase
from .test_tls import CERT, KEY
from .test_wsgi_native import Pool, Reactor, hello

ADDRESS = IPv4Address("TCP", "127.0.0.1", 8443)


class Secure(Resource):
    "What twisted.web serves on the site: C{/admin}, saying if it is secure."

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"twisted secure=%d" % request.isSecure()


class Client(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = True


class TLSConnection:
    """
    A client connected to C{site}'s TLS port, offering C{offered} by ALPN.
    """

    def __init__(self, test: SynchronousTestCase, site: NativeSite, clock: Clock,
                 offered: list[bytes] | None) -> None:
        server = TLSMemoryBIOFactory(load_tls_options(CERT, KEY), False, site.over_tls(), clock)
        client = TLSMemoryBIOFactory(
            CertificateOptions(verify=False, acceptableProtocols=offered),
            True,
            Factory.forProtocol(Client),
            clock,
        )
        self.client_tls, self.server_tls, self.pump = connectedServerAndClient(
            lambda: server.buildProtocol(ADDRESS),
            lambda: client.buildProtocol(ADDRESS),
            greet=False,
            clock=clock,
        )
        #: (The TLS layer forgets it once the connection is lost.)
        self.client: Client = self.client_tls.wrappedProtocol
        self.pump.flush()
        test.addCleanup(self.close)

    @property
    def served_by(self) -> Any:
        "The protocol the TLS layer hands the decrypted bytes to."
        return self.server_tls.wrappedProtocol

    def send(self, data: bytes) -> bytes:
        "Send C{data}; what the server answered since the last look."
        self.client_tls.write(data)
        return self.take()

    def take(self) -> bytes:
        self.pump.flush()
        received, self.client.received = self.client.received, b""
        return received

    def close(self) -> None:
        if not self.client.lost:
            self.client_tls.loseConnection()
            self.pump.flush()


class NativeOverTLSTests(ChannelCase):
    admin = Secure

    def connect(  # type: ignore[override]
        self, offered: list[bytes] | None = [b"http/1.1"]
    ) -> TLSConnection:
        return TLSConnection(self, self.site, self.clock, offered)

    def test_http11_is_native(self) -> None:
        """
        A client that negotiated http/1.1 is served by the native channel,
        which says it is secure; counted, and logged.
        """
        connection = self.connect([b"http/1.1"])
        self.assertEqual(connection.client_tls.negotiatedProtocol, b"http/1.1")
        self.assertIsInstance(connection.served_by, TLSChannel)
        answer = connection.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\nhi"), answer)
        [exchange] = self.app.exchanges
        self.assertTrue(exchange.channel.secure)
        self.assertEqual(self.site.connections_by_kind(), {"http/1.1": 1})
        self.assertEqual(self.site.requests_served, 1)
        self.assertEqual(len(self.access), 1)
        self.assertIn('"GET /fast HTTP/1.1" 200 2', self.access[0])

    def test_no_alpn_is_native(self) -> None:
        connection = self.connect(None)
        self.assertIsNone(connection.client_tls.negotiatedProtocol)
        self.assertIsInstance(connection.served_by, TLSChannel)
        answer = connection.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(answer.endswith(b"\r\n\r\nhi"), answer)
        self.assertEqual(len(self.app.exchanges), 1)

    def test_plain_channel_not_secure(self) -> None:
        channel = self.site.buildProtocol(None)
        self.assertFalse(channel.secure)  # type: ignore[attr-defined]

    def test_hand_over_to_twisted_web(self) -> None:
        """
        A path the app does not serve goes to a twisted.web channel taking
        over the TLS connection, which sees it as secure; the connection
        then serves the app's paths through it, as on plain ports.
        """
        connection = self.connect()
        answer = connection.send(b"GET /admin HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertTrue(answer.endswith(b"twisted secure=1"), answer)
        self.assertEqual(self.site.connections_by_kind(), {"http/1.1": 1})
        self.assertEqual(len(self.access), 1)
        # The rest of the connection is twisted.web's: keep-alive holds.
        again = connection.send(b"GET /admin HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(again.endswith(b"twisted secure=1"), again)
        self.assertFalse(connection.client.lost)

    def test_drain_in_flight(self) -> None:
        """
        A request in hand when the site drains is answered with
        C{Connection: close}, then the connection closes.
        """
        connection = self.connect()
        connection.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(self.site.in_flight, 1)
        drained = self.site.drain()
        [exchange] = self.app.exchanges
        exchange.start(200, [(b"content-length", b"2")])
        exchange.write(b"ok")
        exchange.end()
        answer = connection.take()
        self.assertIn(b"connection: close\r\n", answer)
        self.assertTrue(connection.client.lost)
        self.assertEqual(self.site.connections_by_kind(), {})
        self.assertIsNone(self.successResultOf(drained))

    def test_drain_idle_grace(self) -> None:
        """
        An idle connection gets the grace to send one more request, then
        closes.
        """
        connection = self.connect()
        self.site.drain()
        self.clock.advance(GRACE / 2)
        answer = connection.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertIn(b"connection: close\r\n", answer)
        self.assertTrue(connection.client.lost)

        idle = self.connect()
        self.assertFalse(idle.client.lost)
        self.clock.advance(GRACE)
        idle.take()
        self.assertTrue(idle.client.lost)

    def h2_request(self, connection: TLSConnection, path: str) -> tuple[Any, list[Any]]:
        """
        An h2 client's preface and a GET of C{path}; its events.
        """
        import h2.config
        import h2.connection

        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1, [(":method", "GET"), (":path", path), (":scheme", "https"),
                (":authority", "t")], end_stream=True,
        )
        return client, client.receive_data(connection.send(client.data_to_send()))

    def test_h2_drain_waits_for_the_preface(self) -> None:
        """
        A site that drains between an h2 connection's handshake and its
        client's first bytes serves the streams those bytes open (a GOAWAY
        before them refused them all), then closes the connection.
        """
        if not H2_ENABLED:
            raise SkipTest("h2 (the http2 extra) is not installed")
        import h2.events

        connection = self.connect([b"h2", b"http/1.1"])
        self.assertEqual(self.site.connections_by_kind(), {"h2": 1})
        drained = self.site.drain()
        self.clock.advance(GRACE / 2)
        _, events = self.h2_request(connection, "/admin")
        kinds = [type(e) for e in events]
        self.assertIn(h2.events.StreamEnded, kinds)
        self.assertNotIn(h2.events.StreamReset, kinds)
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        self.assertEqual(body, b"twisted secure=1")
        [goaway] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual(goaway.last_stream_id, 1)
        self.clock.advance(GRACE)
        connection.take()
        self.assertTrue(connection.client.lost)
        self.assertIsNone(self.successResultOf(drained))

    def test_h2_silent_client_closed_after_the_grace(self) -> None:
        if not H2_ENABLED:
            raise SkipTest("h2 (the http2 extra) is not installed")
        connection = self.connect([b"h2", b"http/1.1"])
        drained = self.site.drain()
        self.clock.advance(GRACE / 2)
        connection.take()
        self.assertFalse(connection.client.lost)
        self.clock.advance(GRACE)
        connection.take()
        self.assertTrue(connection.client.lost)
        self.assertIsNone(self.successResultOf(drained))

    def test_h2_by_alpn(self) -> None:
        """
        A client that negotiated h2 is served by Twisted's HTTP/2
        connection, counted as h2; the native channel it replaced is gone
        from the site, and its timers with it.
        """
        if not H2_ENABLED:
            raise SkipTest("h2 (the http2 extra) is not installed")
        import h2.config
        import h2.connection
        import h2.events

        from graceful.http.h2 import DrainableH2Connection

        self.site.keep_alive = 5.0
        connection = self.connect([b"h2", b"http/1.1"])
        self.assertEqual(connection.client_tls.negotiatedProtocol, b"h2")
        self.assertIsInstance(connection.served_by, DrainableH2Connection)
        self.assertEqual(self.site.connections_by_kind(), {"h2": 1})
        # The native channel's keep-alive would have closed the connection.
        self.clock.advance(10)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1, [(":method", "GET"), (":path", "/admin"), (":scheme", "https"),
                (":authority", "t")], end_stream=True,
        )
        events = client.receive_data(connection.send(client.data_to_send()))
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        [status] = [dict(e.headers)[b":status"] for e in events
                    if isinstance(e, h2.events.ResponseReceived)]
        self.assertEqual((status, body), (b"200", b"twisted secure=1"))
        self.assertFalse(connection.client.lost)
        self.assertEqual(self.site.connections_by_kind(), {"h2": 1})
        self.assertEqual(self.app.exchanges, [])


class AppSchemeTests(SynchronousTestCase):
    """
    Apps on the native channel of a TLS port are told it is https, as
    twisted.web's path tells them.
    """

    def test_asgi_scheme(self) -> None:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        app = Recorder()
        clock = Clock()
        glue = NativeASGI(app, "", Lifespan(app, loop), loop)
        site = NativeSite(Router(), prefix_dispatch([(b"", glue)]), reactor=clock)
        connection = TLSConnection(self, site, clock, [b"http/1.1"])
        connection.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        settle(loop)
        answer = connection.take()
        self.assertTrue(answer.startswith(b"HTTP/1.1 201 Created\r\n"), answer)
        [scope] = app.scopes
        self.assertEqual(scope["scheme"], "https")

    def test_wsgi_url_scheme(self) -> None:
        seen: list[dict[str, Any]] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append(environ)
            return hello(environ, start_response)

        reactor, pool = Reactor(), Pool()
        glue = NativeWSGI(reactor, app, "", pool=pool)
        site = NativeSite(Resource(), prefix_dispatch([(b"", glue)]), reactor=reactor)
        channel = site.over_tls().buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        pool.run()
        self.assertEqual(seen[0]["wsgi.url_scheme"], "https")
