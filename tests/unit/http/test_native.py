"""
Unit tests for L{graceful.http.native}: the native HTTP/1.1 channel over an
in-memory transport and a L{Clock}, with a dispatch that records each
exchange and answers it when the test says.  Parsing, keep-alive,
pipelining, the drain, the refusals request smuggling needs, and the
hand-over of other paths to twisted.web.
"""

from __future__ import annotations

import gc
import weakref

from typing import Any, Callable

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from graceful.http.exchange import Exchange
from graceful.http.native import MAX_HEADER_BYTES, NativeChannel, timer_for
from graceful.http.native_site import NativeSite, prefix_dispatch
from graceful.http.site import PENDING_RECHECK

GRACE = 2.0


class Twisted(Resource):
    "What twisted.web serves on the site: C{/admin}."

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"twisted " + request.path


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def body(self, data: bytes) -> None:
        self.events.append(data)

    def body_end(self) -> None:
        self.events.append("end")

    def gone(self) -> None:
        self.events.append("gone")

    def writable(self, ready: bool) -> None:
        self.events.append(("writable", ready))


class App:
    "Records exchanges; answers C{/fast} at once."

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.sinks: list[Sink] = []

    def __call__(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        sink = Sink()
        self.sinks.append(sink)
        exchange.attach(sink)
        if exchange.uri == b"/fast":
            answer(exchange)


def answer(exchange: Exchange, body: bytes = b"hi") -> None:
    exchange.start(200, [(b"content-length", b"%d" % len(body))])
    exchange.write(body)
    exchange.end()


class Harness:
    def __init__(
        self,
        test: SynchronousTestCase,
        site: NativeSite,
        peer: Any = IPv4Address("TCP", "10.0.0.7", 51000),
    ) -> None:
        self.site = site
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8100), peerAddress=peer
        )
        self.channel = site.buildProtocol(None)
        assert isinstance(self.channel, NativeChannel)
        self.channel.makeConnection(self.transport)
        test.addCleanup(self.lose)

    def send(self, data: bytes) -> bytes:
        self.channel.dataReceived(data)
        return self.transport.value()

    def take(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def lose(self) -> None:
        if self.channel in self.site.channels or not self.transport.disconnecting:
            self.channel.connectionLost()


class ChannelCase(SynchronousTestCase):
    #: What serves C{/admin}, on the twisted.web channel the native one hands it to.
    admin: Callable[[], Resource] = Twisted

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = App()
        self.access: list[str] = []
        root = Resource()
        root.putChild(b"admin", self.admin())
        self.site = NativeSite(
            root,
            prefix_dispatch([(b"", self.app)], [b"/admin"]),
            access_log=self.access.append,
            idle_grace=GRACE,
            reactor=self.clock,
        )

    def connect(self) -> Harness:
        return Harness(self, self.site)


class ParsingTests(ChannelCase):
    def test_fields_in_wire_order(self) -> None:
        harness = self.connect()
        harness.send(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nB: 1\r\nA: 2\r\nb: 3\r\n\r\n")
        [exchange] = self.app.exchanges
        self.assertEqual((exchange.method, exchange.uri, exchange.clientproto),
                         (b"GET", b"/a%20b?x=1", b"HTTP/1.1"))
        self.assertEqual(exchange.headers, [(b"host", b"h"), (b"b", b"1"), (b"a", b"2"), (b"b", b"3")])
        self.assertEqual(self.app.sinks[0].events, ["end"])
        self.assertEqual(self.site.in_flight, 1)

    def test_response_in_one_write_and_logged(self) -> None:
        harness = self.connect()
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\n")
        head, _, body = harness.take().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"))
        self.assertNotIn(b"connection", head.lower())
        self.assertEqual(body, b"hi")
        self.assertEqual(self.site.in_flight, 0)
        self.assertFalse(harness.transport.disconnecting)
        [line] = self.access
        self.assertIn('"10.0.0.7" - - ', line)
        self.assertIn('"GET /fast HTTP/1.1" 200 2 "-" "t"', line)
        self.assertEqual(self.site.requests_served, 1)

    def test_chunked_without_length(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        exchange = self.app.exchanges[0]
        exchange.start(200, [])
        exchange.write(b"abc")
        exchange.end([(b"x-t", b"1")])
        response = harness.take()
        self.assertIn(b"transfer-encoding: chunked\r\n", response)
        self.assertTrue(response.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"))

    def test_http10_without_length_closes(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.0\r\n\r\n")
        exchange = self.app.exchanges[0]
        exchange.start(200, [])
        exchange.write(b"abc")
        exchange.end()
        response = harness.take()
        self.assertIn(b"connection: close", response)
        self.assertTrue(response.endswith(b"\r\n\r\nabc"))
        self.assertTrue(harness.transport.disconnecting)

    def test_head_has_no_body(self) -> None:
        harness = self.connect()
        harness.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        answer(self.app.exchanges[0], b"abc")
        response = harness.take()
        self.assertIn(b"content-length: 3\r\n", response)
        self.assertTrue(response.endswith(b"\r\n\r\n"))

    def test_body_streams_and_pipelined_requests_wait(self) -> None:
        harness = self.connect()
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
        self.assertEqual(self.app.sinks[0].events, [b"abc"])
        harness.send(b"def" + b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(self.app.sinks[0].events, [b"abc", b"def", "end"])
        # The second waits for the first's response, and reading pauses.
        self.assertEqual(len(self.app.exchanges), 1)
        self.assertEqual(self.site.in_flight, 2)
        self.assertEqual(harness.transport.producerState, "paused")
        answer(self.app.exchanges[0], b"one")
        self.assertEqual(len(self.app.exchanges), 2)
        self.assertEqual(harness.take().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(harness.transport.producerState, "producing")

    def test_expect_100_continue(self) -> None:
        harness = self.connect()
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(harness.take(), b"HTTP/1.1 100 Continue\r\n\r\n")
        harness.send(b"abc")
        self.assertEqual(self.app.sinks[0].events, [b"abc", "end"])

    def test_chunked_request_body(self) -> None:
        harness = self.connect()
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(self.app.sinks[0].events, [b"abc", b"de", "end"])

    def test_answer_before_the_body_drops_the_rest(self) -> None:
        harness = self.connect()
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
        answer(self.app.exchanges[0])
        harness.send(b"def" + b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(self.app.sinks[0].events, [b"abc"])
        self.assertEqual(harness.take().count(b"HTTP/1.1 200 OK"), 2)
        self.assertFalse(harness.transport.disconnecting)

    def test_connection_close_request(self) -> None:
        harness = self.connect()
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        self.assertIn(b"connection: close", harness.take())
        self.assertTrue(harness.transport.disconnecting)

    def test_write_buffer_full_tells_the_sink(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.channel.pauseProducing()
        self.assertFalse(harness.channel.can_write)
        harness.channel.resumeProducing()
        self.assertEqual(self.app.sinks[0].events, ["end", ("writable", False), ("writable", True)])

    def test_client_gone(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.channel.connectionLost()
        self.assertEqual(self.app.sinks[0].events, ["end", "gone"])
        self.assertEqual(self.site.channels, set())

    def test_lost_with_a_request_unanswered_is_a_reset(self) -> None:
        """
        As on twisted.web's channel: a connection lost with a request
        unanswered counts as a reset (a canary window compares them);
        one lost between requests does not.
        """
        answered = self.connect()
        answered.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        answered.channel.connectionLost()
        unanswered = self.connect()
        unanswered.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        unanswered.channel.connectionLost()
        self.assertEqual((self.site.responses, self.site.resets), (1, 1))

    def test_closed_channel_freed_without_the_collector(self) -> None:
        """
        A closed connection's channel is freed when the last reference goes,
        not by the cyclic collector (which cost ~5 us a connection).
        """
        harness = self.connect()
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        harness.channel.connectionLost()
        self.app.exchanges.clear()
        self.app.sinks.clear()
        gone = weakref.ref(harness.channel)
        gc.disable()
        self.addCleanup(gc.enable)
        harness.channel = None  # type: ignore[assignment]
        self.assertIsNone(gone())

    def test_cut_sends_what_was_written_then_closes(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        exchange = self.app.exchanges[0]
        exchange.start(200, [(b"content-length", b"10")])
        exchange.write(b"part")
        exchange.cut()
        self.assertTrue(harness.take().endswith(b"\r\n\r\npart"))
        self.assertTrue(harness.transport.disconnecting)
        self.assertEqual(len(self.access), 1)


class HandOverTests(ChannelCase):
    def test_other_paths_go_to_twisted_web(self) -> None:
        harness = self.connect()
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n")
        response = harness.take()
        self.assertIn(b"\r\n\r\nhi", response)
        self.assertTrue(response.endswith(b"twisted /admin"))
        harness.send(b"GET /admin/x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(harness.take().endswith(b"twisted /admin/x"))
        # One connection, tracked once: now by the twisted.web channel.
        self.assertEqual(len(self.site.channels), 1)
        self.assertNotIn(harness.channel, self.site.channels)

    def test_pipelined_behind_a_native_request_waits_for_its_answer(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(harness.take(), b"")
        answer(self.app.exchanges[0], b"first")
        response = harness.take()
        self.assertLess(response.index(b"first"), response.index(b"twisted /admin"))

    def test_upgrade_goes_to_twisted_web_with_the_bytes_after_it(self) -> None:
        harness = self.connect()
        got: list[bytes] = []
        harness.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        self.assertEqual(self.app.exchanges, [])
        [twisted_channel] = self.site.channels
        twisted_channel.dataReceived = got.append  # type: ignore[method-assign]
        harness.send(b"frames")
        self.assertEqual(got, [b"frames"])


class RefusalTests(ChannelCase):
    """
    Each probe is answered 400 (or 431, 414) with Connection: close, and
    the connection closes; no whole request reaches the app (a bad chunk
    size is found after the headers were dispatched: the app hears that the
    client went away).
    """

    PROBES = {
        "both lengths": (400, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        "encoding then length": (400, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                                      b"Content-Length: 3\r\n\r\n0\r\n\r\n"),
        "differing lengths": (400, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                                   b"Content-Length: 4\r\n\r\nabcd"),
        "repeated length": (400, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                                 b"Content-Length: 3\r\n\r\nabc"),
        "length list": (400, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc"),
        "obs-fold in encoding": (400, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n"
                                      b" chunked\r\n\r\n0\r\n\r\n"),
        "gzip, chunked": (400, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        "encoding on 1.0": (400, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        "bad chunk size": (400, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"zz\r\nabc\r\n0\r\n\r\n"),
        "bare CR": (400, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"),
        "NUL": (400, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n"),
        "no Host": (400, b"GET / HTTP/1.1\r\n\r\n"),
        "two Hosts": (400, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        "long header line": (431, b"GET / HTTP/1.1\r\nHost: h\r\nX: "
                                  + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"),
        "many header lines": (431, b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: a\r\n" * 600 + b"\r\n"),
        "long target": (414, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"),
    }

    def test_each_probe(self) -> None:
        for name, (status, probe) in self.PROBES.items():
            harness = self.connect()
            response = harness.send(probe)
            self.assertTrue(response.startswith(b"HTTP/1.1 %d " % status), (name, response))
            self.assertIn(b"connection: close", response, name)
            self.assertTrue(harness.transport.disconnecting, name)
            harness.channel.connectionLost()
        self.assertEqual([sink.events for sink in self.app.sinks], [["gone"]])

    def test_endless_header_line_in_pieces(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\nX: ")
        for _ in range(40):
            if harness.transport.disconnecting:
                break
            harness.send(b"a" * 1024)
        self.assertTrue(harness.transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertTrue(harness.transport.disconnecting)

    def test_http10_without_host_is_served(self) -> None:
        harness = self.connect()
        harness.send(b"GET /fast HTTP/1.0\r\n\r\n")
        self.assertTrue(harness.take().startswith(b"HTTP/1.1 200 OK"))


class KeepAliveTests(ChannelCase):
    """
    C{timeout_keep_alive} on the native channel: an idle connection is
    closed quietly after it, between requests and before the first.
    """

    def setUp(self) -> None:
        super().setUp()
        self.site.keep_alive = 5.0

    def test_idle_after_a_response_closes(self) -> None:
        harness = self.connect()
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.take()
        self.clock.advance(4.9)
        self.assertFalse(harness.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(harness.transport.disconnecting)

    def test_silent_new_connection_closes(self) -> None:
        harness = self.connect()
        self.clock.advance(5.0)
        self.assertTrue(harness.transport.disconnecting)

    def test_a_request_in_time_is_served(self) -> None:
        harness = self.connect()
        self.clock.advance(4.0)
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b"200 OK", harness.take())
        self.clock.advance(4.0)
        self.assertFalse(harness.transport.disconnecting)

    def test_one_timer_not_moved_per_request(self) -> None:
        """
        Requests on a kept-alive connection make, cancel or move no timer
        (that cost ~4 us a request); the one timer, on firing, waits out the
        rest of the idle time since the last response.
        """
        harness = self.connect()
        [timer] = self.clock.getDelayedCalls()
        for _ in range(50):
            self.clock.advance(0.09)
            harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [timer])
        self.assertEqual(timer.getTime(), 5.0)
        last = self.clock.seconds()
        self.clock.advance(5.0 - last)
        [rearmed] = self.clock.getDelayedCalls()
        self.assertAlmostEqual(rearmed.getTime(), last + 5.0)
        self.clock.advance(last - 0.01)
        self.assertFalse(harness.transport.disconnecting)
        self.clock.advance(0.02)
        self.assertTrue(harness.transport.disconnecting)

    def test_silent_partial_request_gets_the_request_timeout(self) -> None:
        """
        A request whose head (or body) stops arriving gets the site's
        timeOut (60 s) of silence, as on twisted.web's channel, then the
        connection closes (the app hears the client went away); bytes that
        keep coming keep it open.
        """
        self.assertEqual(self.site.timeOut, 60)
        silent, slow, body = self.connect(), self.connect(), self.connect()
        silent.send(b"GET /fast HTTP/1.1\r\nHo")
        slow.send(b"GET /fast HTTP/1.1\r\nHo")
        body.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        self.clock.advance(5.0 + 59)
        self.assertFalse(silent.transport.disconnecting)
        slow.send(b"st: h\r\n")
        self.clock.advance(61)
        self.assertEqual([c.transport.disconnecting for c in (silent, slow, body)], [True, False, True])
        self.assertEqual(self.app.sinks[0].events, [b"abc"])
        body.lose()
        self.assertEqual(self.app.sinks[0].events, [b"abc", "gone"])
        slow.send(b"\r\n")
        self.assertIn(b"200 OK", slow.take())
        self.clock.advance(5.0)
        self.assertTrue(slow.transport.disconnecting)

    def test_app_holding_reading_paused_is_not_the_clients_silence(self) -> None:
        harness = self.connect()
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        self.app.exchanges[0].pause_reading()
        self.clock.advance(600)
        self.assertFalse(harness.transport.disconnecting)

    def test_a_connection_handed_to_twisted_web_is_not_timed_here(self) -> None:
        """
        After an upgrade, the connection's idle time is its new protocol's
        business: the native channel's keep-alive timer no longer closes it.
        """
        harness = self.connect()
        harness.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        [twisted_channel] = self.site.channels
        twisted_channel.setTimeout(None)  # as a WebSocket taking the connection does
        self.clock.advance(600)
        self.assertFalse(harness.transport.disconnecting)

    def test_off(self) -> None:
        self.site.keep_alive = None
        harness = self.connect()
        self.clock.advance(3600)
        self.assertFalse(harness.transport.disconnecting)


class DrainTests(ChannelCase):
    def test_idle_connection_gets_the_grace_then_closes(self) -> None:
        harness = self.connect()
        self.site.drain()
        self.clock.advance(GRACE - 0.1)
        self.assertFalse(harness.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(harness.transport.disconnecting)

    def test_request_in_the_grace_is_answered_with_close(self) -> None:
        harness = self.connect()
        self.site.drain()
        self.clock.advance(GRACE / 2)
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b"connection: close", harness.take())
        self.assertTrue(harness.transport.disconnecting)

    def test_in_flight_answered_with_close(self) -> None:
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        drained = self.site.drain()
        answer(self.app.exchanges[0])
        self.assertIn(b"connection: close", harness.take())
        self.assertTrue(harness.transport.disconnecting)
        harness.channel.connectionLost()
        self.assertIsNone(self.successResultOf(drained))

    def test_just_answered_connection_gets_the_grace(self) -> None:
        """
        A response begun before the drain cannot carry Connection: close;
        the connection gets the grace for one more request instead.
        """
        harness = self.connect()
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        exchange = self.app.exchanges[0]
        exchange.start(200, [(b"content-length", b"2")])
        exchange.write(b"h")
        self.site.drain()
        exchange.write(b"i")
        exchange.end()
        self.assertNotIn(b"connection: close", harness.take())
        self.assertFalse(harness.transport.disconnecting)
        harness.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b"connection: close", harness.take())
        self.assertTrue(harness.transport.disconnecting)

    def test_unread_bytes_delay_the_close(self) -> None:
        harness = self.connect()
        pending = [True]
        import graceful.http.native as native

        self.patch(native, "unread_bytes", lambda transport: pending[0])
        self.site.drain()
        self.clock.advance(GRACE)
        self.assertFalse(harness.transport.disconnecting)
        pending[0] = False
        self.clock.advance(PENDING_RECHECK)
        self.assertTrue(harness.transport.disconnecting)

    def test_counted_by_kind(self) -> None:
        self.connect()
        self.assertEqual(self.site.connections_by_kind(), {"http/1.1": 1})

    def test_abort(self) -> None:
        harness = self.connect()
        aborted: list[bool] = []
        harness.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        self.assertEqual(self.site.abort(), 1)
        self.assertEqual(aborted, [True])


class SiteChoiceTests(SynchronousTestCase):
    """
    Which channel a server's site builds: native for a server of apps alone
    (and its admin and health pages), twisted.web when told or when the
    tree mixes the app with other routes.
    """

    def setUp(self) -> None:
        from ..runtime_case import _RuntimeCase

        from twisted.python.threadpool import ThreadPool

        case = _RuntimeCase("setUp")
        case.setUp()
        self.runtime = case.runtime
        # twisted.web's WSGI resource takes the reactor's pool (never started here).
        case.reactor.getThreadPool = ThreadPool  # type: ignore[attr-defined]
        from graceful.admin.pages import add_operational_pages

        self.runtime.operational_pages = add_operational_pages

    def site_of(self, configure: Callable[[Any], None]) -> Any:
        server = self.runtime.server("s")
        configure(server)
        return server._build_site()

    def test_wsgi_app_alone_is_native(self) -> None:
        site = self.site_of(lambda s: s.mount_wsgi("/", lambda environ, start: []))
        self.assertIsInstance(site, NativeSite)

    def test_admin_and_health_beside_the_app(self) -> None:
        def configure(s: Any) -> None:
            s.mount_wsgi("/", lambda environ, start: [])
            s.enable_admin("/debug/admin", token="t")
            s.enable_health("/healthz")

        site = self.site_of(configure)
        self.assertIsInstance(site, NativeSite)
        self.assertIsNotNone(site.dispatch_for(b"/x"))
        self.assertIsNone(site.dispatch_for(b"/healthz"))
        self.assertIsNone(site.dispatch_for(b"/debug/admin/status?x=1"))
        self.assertIsNotNone(site.dispatch_for(b"/debug/administrator"))

    def test_proxy_headers_limit_and_keep_alive_stay_native(self) -> None:
        """
        A server with proxy_headers, limit_concurrency and its own
        timeout_keep_alive is served by the native channel, which applies
        them: its app's requests go through the limit and the proxies.
        """
        settings = self.runtime.settings
        settings.proxy_headers, settings.limit_concurrency = True, 1
        settings.forwarded_allow_ips = ["10.0.0.7"]
        settings.timeout_keep_alive = 7.0
        site = self.site_of(lambda s: s.mount_wsgi("/", lambda environ, start: []))
        self.assertIsInstance(site, NativeSite)
        self.assertEqual(site.keep_alive, 7.0)
        seen: list[Exchange] = []
        # What reaches the WSGI glue, held there (its pool's threads unstarted).
        from graceful.http.wsgi_native import NativeWSGI

        self.patch(NativeWSGI, "__call__", lambda glue, exchange: seen.append(exchange))
        site.dispatch_for(b"/")(_HeldExchange(site, b"1.2.3.4"))
        self.assertEqual([e.getClientAddress().host for e in seen], ["1.2.3.4"])
        refused = _HeldExchange(site, b"5.6.7.8")
        site.dispatch_for(b"/")(refused)
        self.assertEqual((refused.code, len(seen)), (503, 1))
        self.assertEqual(site.stats.refused["limit_concurrency"], 1)

    def test_twisted_on_request(self) -> None:
        def configure(s: Any) -> None:
            s.mount_wsgi("/", lambda environ, start: [])
            s.set_http_impl("twisted")

        self.assertNotIsInstance(self.site_of(configure), NativeSite)

    def test_mixed_tree_is_twisted(self) -> None:
        def configure(s: Any) -> None:
            s.mount_wsgi("/", lambda environ, start: [])
            s.route("/hello", lambda request: b"hi")

        self.assertNotIsInstance(self.site_of(configure), NativeSite)

    def test_unknown_impl_is_one_line(self) -> None:
        from graceful._errors import ConfigError

        error = self.assertRaises(ConfigError, self.runtime.server("s").set_http_impl, "fast")
        self.assertEqual(
            str(error), "http_impl must be one of auto, twisted, native, httptools, h11, not 'fast'"
        )


class _HeldExchange(Exchange):
    """
    A request from a trusted proxy at 10.0.0.7 for client C{client}.
    """

    def __init__(self, site: NativeSite, client: bytes) -> None:
        channel: Any = type("Channel", (), {})()
        channel.peer = IPv4Address("TCP", "10.0.0.7", 1)
        channel.site = site
        channel.send = lambda data: None
        channel.answered = lambda exchange, cut=False: None
        super().__init__(channel, b"GET", b"/", b"HTTP/1.1",
                         [(b"host", b"h"), (b"x-forwarded-for", client)], True)


class FreezeTests(SynchronousTestCase):
    def test_the_heap_is_frozen_once(self) -> None:
        import gc

        from graceful.http import site_choice

        frozen: list[bool] = []
        self.patch(site_choice, "_heap_frozen", False)
        self.patch(gc, "freeze", lambda: frozen.append(True))
        site_choice.freeze_heap()
        site_choice.freeze_heap()
        self.assertEqual(frozen, [True])


class TimerForTests(SynchronousTestCase):
    """
    A channel's keep-alive check goes on the asyncio loop itself where the
    reactor runs on one, else through the reactor's callLater.
    """

    def test_asyncio_reactor(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)

        class OnALoop:
            _asyncioEventloop = loop

        self.assertEqual(timer_for(OnALoop()), loop.call_later)

    def test_other_reactor(self) -> None:
        clock = Clock()
        self.assertEqual(timer_for(clock), clock.callLater)


class ReactorLikeTransport(StringTransport):
    """
    What the direct close needs of a reactor's TCP transport: its write
    buffers and its own close.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self.connected = True
        self.calls: list[str] = []

    def stopReading(self) -> None:
        self.calls.append("stopReading")

    def startWriting(self) -> None:
        self.calls.append("startWriting")

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        super().loseConnection()

    def connectionLost(self, reason: object) -> None:
        self.calls.append("connectionLost")
        self.connected = False


class DirectCloseTests(ChannelCase):
    """
    A response written whole to a reactor transport, on a connection that
    ends with it, closes the connection on the loop's next pass, without
    loseConnection's round through the reactor's writers.
    """

    def channel(self) -> tuple[NativeChannel, ReactorLikeTransport]:
        transport = ReactorLikeTransport()
        channel = self.site.buildProtocol(None)
        assert isinstance(channel, NativeChannel)
        channel.makeConnection(transport)
        channel._direct = True  # as for the reactor's own TCP transport
        return channel, transport

    def test_closed_on_the_next_pass(self) -> None:
        channel, transport = self.channel()
        channel.dataReceived(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.calls, ["stopReading"])
        self.clock.advance(0)
        self.assertEqual(transport.calls, ["stopReading", "connectionLost"])

    def test_written_meanwhile_is_flushed_first(self) -> None:
        channel, transport = self.channel()
        channel.dataReceived(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        transport.dataBuffer = b"late"
        self.clock.advance(0)
        self.assertEqual(transport.calls, ["stopReading", "startWriting"])

    def test_lost_meanwhile(self) -> None:
        channel, transport = self.channel()
        channel.dataReceived(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        transport.connected = False
        self.clock.advance(0)
        self.assertEqual(transport.calls, ["stopReading"])

    def test_buffered_goes_through_lose_connection(self) -> None:
        """
        What the socket did not take is written first, by the transport.
        """
        channel, transport = self.channel()
        transport.dataBuffer = b"pending"
        channel.dataReceived(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        self.assertEqual(transport.calls, ["loseConnection"])
