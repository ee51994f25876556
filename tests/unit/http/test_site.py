"""
Unit tests for L{graceful.http.site}: a L{DrainingSite} over in-memory
connections and a L{Clock}.  Draining answers what is in flight with
C{Connection: close}, gives idle keep-alive connections C{idle_grace} seconds
to send one more request, closes everything, and then fires.
"""

from __future__ import annotations

import socket

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from graceful.http.site import (
    HANDOVER_IDLE_GRACE,
    IDLE_GRACE,
    PENDING_RECHECK,
    DrainingSite,
    handover_idle_grace,
    unread_bytes,
)

from .test_routing import HTTPConnection

GRACE = 2.0


class App(Resource):
    """
    C{/slow} stays in flight until the test answers it; anything else is
    answered at once.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Request] = []

    status = 200

    def render_GET(self, request: Request) -> bytes | int:
        if request.path == b"/slow":
            self.pending.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return b"fast"

    # What users lose on a reused connection are non-idempotent requests.
    render_POST = render_GET

    def answer(self, body: bytes = b"slow") -> None:
        request = self.pending.pop(0)
        request.write(body)
        request.finish()


class DrainTests(SynchronousTestCase):
    """
    What each kind of connection sees when the site drains.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = App()
        self.access: list[str] = []
        self.site = DrainingSite(
            self.app,
            server_name="s1",
            access_log=self.access.append,
            idle_grace=GRACE,
            reactor=self.clock,
        )

    def connect(self) -> HTTPConnection:
        connection = HTTPConnection(self.site)
        self.addCleanup(connection.lose)
        return connection

    def test_defaults(self) -> None:
        site = DrainingSite(Resource())
        self.assertEqual((site.server_name, site.idle_grace), ("default", IDLE_GRACE))
        self.assertFalse(site.draining)

    def test_keep_alive_before_draining(self) -> None:
        connection = self.connect()
        connection.request("/fast")
        connection.request("/fast")
        responses = connection.responses()
        self.assertEqual([r.body for r in responses], [b"fast", b"fast"])
        self.assertEqual([r.header("connection") for r in responses], [None, None])
        self.assertFalse(connection.closing)

    def test_request_in_flight(self) -> None:
        """
        A request in flight when draining starts is answered with
        C{Connection: close}, then its connection closes.
        """
        connection = self.connect()
        connection.request("/slow")
        self.assertEqual(self.site.in_flight, 1)
        drained = self.site.drain()
        self.assertNoResult(drained)
        self.assertEqual(connection.transport.value(), b"")
        self.assertFalse(connection.closing)
        self.app.answer()
        response = connection.only_response()
        self.assertEqual((response.status, response.body), (200, b"slow"))
        self.assertEqual(response.header("connection"), "close")
        self.assertTrue(connection.closing)
        self.assertNoResult(drained)
        connection.lose()
        self.successResultOf(drained)
        self.assertEqual(self.site.in_flight, 0)

    def start_response(self, connection: HTTPConnection, length: bool = False) -> None:
        """
        Send a request to C{/slow} and the first part of its answer: its
        headers go out before the drain, chunked or with a length.
        """
        connection.request("/slow")
        if length:
            self.app.pending[-1].setHeader(b"Content-Length", b"9")
        self.app.pending[-1].write(b"part ")

    def test_response_already_started(self) -> None:
        """
        A response whose headers went out before draining cannot say
        C{Connection: close}, so its client may reuse the connection the
        moment it ends: that next request is answered, with C{Connection:
        close}, rather than lost to a close.
        """
        chunked, with_length = self.connect(), self.connect()
        self.start_response(chunked)
        self.start_response(with_length, length=True)
        drained = self.site.drain()
        for connection in (chunked, with_length):
            self.app.answer(b"rest")
            self.assertEqual(connection.only_response().body, b"part rest")
            self.assertFalse(connection.closing)
            connection.request("/fast", method="POST")
            first, second = connection.responses()
            self.assertIsNone(first.header("connection"))
            self.assertEqual((second.status, second.body), (200, b"fast"))
            self.assertEqual(second.header("connection"), "close")
            self.assertTrue(connection.closing)
            connection.lose()
        self.successResultOf(drained)

    def test_response_already_started_next_request_already_sent(self) -> None:
        """
        A request that came in while the started response was still being
        written is answered after it, with C{Connection: close}.
        """
        connection = self.connect()
        self.start_response(connection)
        drained = self.site.drain()
        connection.request("/fast")
        self.app.answer(b"rest")
        first, second = connection.responses()
        self.assertEqual((first.body, second.body), (b"part rest", b"fast"))
        self.assertEqual(second.header("connection"), "close")
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_response_already_started_then_silent(self) -> None:
        """
        The grace for the next request starts when the response ends,
        however long it took; a connection still silent then is closed.
        """
        connection = self.connect()
        self.start_response(connection)
        drained = self.site.drain()
        self.clock.advance(GRACE * 3)
        self.assertFalse(connection.closing)
        self.app.answer(b"rest")
        self.clock.advance(GRACE - 0.01)
        self.assertFalse(connection.closing)
        self.clock.advance(0.02)
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected)  # a FIN, not an abort
        self.assertEqual(len(connection.responses()), 1)
        connection.lose()
        self.successResultOf(drained)

    def test_response_already_started_grace_within_timeout(self) -> None:
        """
        A response that ends late in the drain leaves its connection only
        the grace there is before C{drain_timeout} would reset it.
        """
        connection = self.connect()
        self.start_response(connection)
        self.site.drain(timeout=5.0)  # idle connections closed by 4.0
        self.clock.advance(3.5)
        self.app.answer(b"rest")
        self.clock.advance(0.49)
        self.assertFalse(connection.closing)
        self.clock.advance(0.02)
        self.assertTrue(connection.closing)

    def test_response_already_started_client_leaves(self) -> None:
        """
        A client that leaves during such a response leaves no timer behind.
        """
        connection = self.connect()
        self.start_response(connection)
        drained = self.site.drain()
        connection.lose()
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_half_a_request_line(self) -> None:
        """
        A connection that sent the first bytes of a request line when the
        drain began has its request answered, not dropped.
        """
        connection = self.connect()
        connection.send(b"POST /fa")
        drained = self.site.drain()
        connection.send(b"st HTTP/1.1\r\nHost: test\r\n\r\n")
        response = connection.only_response()
        self.assertEqual((response.body, response.header("connection")), (b"fast", "close"))
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_idle_connection_sends_within_grace(self) -> None:
        connection = self.connect()
        connection.request("/fast")
        drained = self.site.drain()
        self.clock.advance(GRACE - 0.1)
        self.assertFalse(connection.closing)
        connection.request("/fast")
        first, second = connection.responses()
        self.assertIsNone(first.header("connection"))
        self.assertEqual((second.body, second.header("connection")), (b"fast", "close"))
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_slow_request_within_grace_is_not_cut(self) -> None:
        """
        The grace limits the wait for a request, not the time to answer it.
        """
        connection = self.connect()
        drained = self.site.drain()
        connection.request("/slow")
        self.clock.advance(GRACE * 10)
        self.assertFalse(connection.closing)
        self.app.answer()
        self.assertEqual(connection.only_response().header("connection"), "close")
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_idle_connection_closed_after_grace(self) -> None:
        connection = self.connect()
        connection.request("/fast")
        drained = self.site.drain()
        self.clock.advance(GRACE - 0.01)
        self.assertFalse(connection.closing)
        self.clock.advance(0.02)
        self.assertTrue(connection.closing)
        self.assertEqual(len(connection.responses()), 1)
        self.assertNoResult(drained)
        connection.lose()
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_never_used_connection_closed_after_grace(self) -> None:
        connection = self.connect()
        self.site.drain()
        self.clock.advance(GRACE)
        self.assertTrue(connection.closing)
        self.assertEqual(connection.transport.value(), b"")

    def test_connection_made_while_draining(self) -> None:
        """
        A connection the listening socket accepted just before it closed is
        drained from its start.
        """
        drained = self.site.drain()
        self.successResultOf(drained)
        connection = self.connect()
        connection.request("/fast")
        self.assertEqual(connection.only_response().header("connection"), "close")
        self.assertTrue(connection.closing)

    def test_connection_made_while_draining_and_silent(self) -> None:
        self.site.drain()
        connection = self.connect()
        self.clock.advance(GRACE)
        self.assertTrue(connection.closing)

    def test_partial_request(self) -> None:
        """
        A connection that sent part of a request is not idle: its request is
        answered, with C{Connection: close}.
        """
        connection = self.connect()
        connection.send(b"GET /fast HTTP/1.1\r\nHo")
        drained = self.site.drain()
        self.clock.advance(GRACE * 2)
        self.assertFalse(connection.closing)
        connection.send(b"st: test\r\n\r\n")
        response = connection.only_response()
        self.assertEqual((response.body, response.header("connection")), (b"fast", "close"))
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_nothing_to_drain(self) -> None:
        self.successResultOf(self.site.drain())
        self.assertTrue(self.site.draining)

    def test_fires_when_last_connection_closes(self) -> None:
        busy, idle = self.connect(), self.connect()
        busy.request("/slow")
        first, second = self.site.drain(), self.site.drain()
        self.clock.advance(GRACE)
        self.assertTrue(idle.closing)
        idle.lose()
        self.assertNoResult(first)
        self.app.answer()
        busy.lose()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.site.channels, set())

    def test_closing_without_draining_fires_nothing(self) -> None:
        connection = self.connect()
        connection.lose()
        self.assertEqual(self.site.channels, set())
        self.assertFalse(self.site.draining)

    def test_abort(self) -> None:
        busy, idle = self.connect(), self.connect()
        busy.request("/slow")
        drained = self.site.drain()
        self.assertEqual(self.site.abort(), 2)
        for connection in (busy, idle):
            self.assertTrue(connection.transport.disconnected)  # aborted
        busy.lose()
        idle.lose()
        self.successResultOf(drained)
        self.assertEqual(self.site.abort(), 0)

    def test_in_flight(self) -> None:
        first, second, third = self.connect(), self.connect(), self.connect()
        self.assertEqual(self.site.in_flight, 0)
        first.request("/slow")
        second.request("/slow")
        third.request("/fast")
        self.assertEqual(self.site.in_flight, 2)
        self.app.answer()
        self.assertEqual(self.site.in_flight, 1)
        second.lose()
        self.assertEqual(self.site.in_flight, 0)

    def test_requests_served_and_access_log(self) -> None:
        connection = self.connect()
        connection.request("/fast")
        connection.request("/other?x=1")
        self.assertEqual(self.site.requests_served, 2)
        self.assertEqual(len(self.access), 2)
        self.assertIn('"GET /fast HTTP/1.1" 200 4', self.access[0])
        self.assertIn('"GET /other?x=1 HTTP/1.1" 200', self.access[1])

    def test_counts_responses_5xx_and_resets(self) -> None:
        """
        What a canary window compares: finished responses, those with a 5xx
        status, and connections lost with a request unanswered.
        """
        self.app.status = 503
        connection = self.connect()
        connection.request("/fast")
        self.app.status = 200
        connection.request("/fast")
        lost = self.connect()
        lost.request("/slow")
        lost.lose()
        self.assertEqual((self.site.responses, self.site.server_errors, self.site.resets), (2, 1, 1))

    def test_own_address_asked_once_per_connection(self) -> None:
        """
        Every request knows the address it came in on, and the socket is
        asked for it once per connection (a getsockname() each), not once per
        request.
        """
        connection = self.connect()
        asked: list[object] = []
        own = connection.transport.getHost

        def get_host() -> object:
            asked.append(None)
            return own()

        connection.transport.getHost = get_host  # type: ignore[method-assign]
        seen: list[object] = []
        self.app.render_GET = lambda request: seen.append(request.getHost()) or b"ok"  # type: ignore[method-assign]
        for _ in range(3):
            connection.request("/fast")
        self.assertEqual(seen, [own()] * 3)
        self.assertEqual(len(asked), 1)

    def test_no_access_log(self) -> None:
        site = DrainingSite(self.app, reactor=self.clock)
        connection = HTTPConnection(site)
        connection.request("/fast")
        self.assertEqual(connection.only_response().body, b"fast")
        connection.lose()

    def test_ordinary_timeout_without_draining(self) -> None:
        """
        Outside a drain an idle connection keeps the site's own timeout.
        """
        connection = self.connect()
        connection.request("/fast")
        self.clock.advance(GRACE * 10)
        self.assertFalse(connection.closing)
        self.clock.advance(self.site.timeOut)
        self.assertTrue(connection.closing)


KEEP_ALIVE = 5.0


class KeepAliveTests(SynchronousTestCase):
    """
    C{keep_alive}: an idle keep-alive connection is closed that long after
    its last response, quietly; a request being received, and a drain,
    keep their own timeouts.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = App()
        self.site = DrainingSite(
            self.app, idle_grace=GRACE * 5, keep_alive=KEEP_ALIVE, reactor=self.clock
        )

    def connect(self, transport: StringTransport | None = None) -> HTTPConnection:
        connection = (
            HTTPConnection(self.site) if transport is None else HTTPConnection(self.site, transport)
        )
        self.addCleanup(connection.lose)
        return connection

    def test_idle_connection_closed_after_keep_alive(self) -> None:
        connection = self.connect()
        connection.request("/fast")
        self.clock.advance(KEEP_ALIVE - 0.01)
        self.assertFalse(connection.closing)
        self.clock.advance(0.02)
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected)  # a FIN, not an abort
        self.assertEqual(connection.only_response().header("connection"), None)

    def test_each_response_starts_it_again(self) -> None:
        connection = self.connect()
        connection.request("/fast")
        self.clock.advance(KEEP_ALIVE - 1)
        connection.request("/fast")
        self.clock.advance(KEEP_ALIVE - 1)
        self.assertFalse(connection.closing)
        self.assertEqual(len(connection.responses()), 2)

    def test_slow_response_is_not_cut(self) -> None:
        connection = self.connect()
        connection.request("/slow")
        self.clock.advance(KEEP_ALIVE * 10)
        self.assertFalse(connection.closing)
        self.app.answer()
        self.assertEqual(connection.only_response().body, b"slow")

    def test_request_being_received_gets_the_site_timeout(self) -> None:
        """
        The keep-alive timeout is for the wait between requests: once the
        next one starts arriving, silence is measured against C{timeOut}.
        """
        connection = self.connect()
        connection.request("/fast")
        self.clock.advance(KEEP_ALIVE - 1)
        connection.send(b"GET /fast HTTP/1.1\r\n")
        self.clock.advance(KEEP_ALIVE * 2)
        self.assertFalse(connection.closing)
        connection.send(b"Host: test\r\n\r\n")
        self.assertEqual(len(connection.responses()), 2)
        self.assertFalse(connection.closing)

    def test_new_connection_gets_the_site_timeout(self) -> None:
        connection = self.connect()
        self.clock.advance(KEEP_ALIVE * 2)
        self.assertFalse(connection.closing)
        self.clock.advance(self.site.timeOut)
        self.assertTrue(connection.closing)

    def test_unread_request_is_answered_not_reset(self) -> None:
        transport = SocketTransport()
        self.addCleanup(transport.close)
        connection = self.connect(transport)
        connection.request("/fast")
        transport.peer.sendall(b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n")
        self.clock.advance(KEEP_ALIVE)
        self.assertFalse(connection.closing)
        connection.send(transport.socket.recv(1000))
        self.assertEqual(len(connection.responses()), 2)
        self.assertFalse(connection.closing)

    def test_drain_gives_its_own_grace(self) -> None:
        """
        A drain that starts while a connection waits gives it the drain's
        grace (here longer than the keep-alive), and its next request is
        answered with C{Connection: close}.
        """
        connection = self.connect()
        connection.request("/fast")
        self.clock.advance(KEEP_ALIVE - 1)
        drained = self.site.drain()
        self.clock.advance(GRACE * 5 - 0.01)
        self.assertFalse(connection.closing)
        connection.request("/fast")
        self.assertEqual(connection.responses()[1].header("connection"), "close")
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_none_keeps_twisted_web_timeout(self) -> None:
        site = DrainingSite(self.app, reactor=self.clock)
        self.assertIsNone(site.keep_alive)
        connection = HTTPConnection(site)
        self.addCleanup(connection.lose)
        connection.request("/fast")
        self.clock.advance(KEEP_ALIVE * 2)
        self.assertFalse(connection.closing)


class SocketTransport(StringTransport):
    """
    A StringTransport whose handle is a real socket, as a TCP transport's
    is: the end of a socket pair whose other end plays the client's kernel.
    """

    def __init__(self) -> None:
        super().__init__()
        self.socket, self.peer = socket.socketpair()

    def getHandle(self) -> socket.socket:
        return self.socket

    def close(self) -> None:
        self.socket.close()
        self.peer.close()


class Wrapper:
    """
    A transport over another one, as TLS is over TCP.
    """

    def __init__(self, transport: object) -> None:
        self.transport = transport

    def getHandle(self) -> object:
        return object()  # TLS's handle is its OpenSSL connection


class IdleAtHandoverTests(SynchronousTestCase):
    """
    At a hand-over an idle keep-alive connection waits for its next
    request, which is answered with C{Connection: close}; closing it is what
    races that request, so it closes only when the longer grace runs out,
    and never while a request it sent is unread in the kernel.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = App()
        self.site = DrainingSite(self.app, idle_grace=GRACE, reactor=self.clock)

    def connect(self, transport: StringTransport | None = None) -> HTTPConnection:
        connection = (
            HTTPConnection(self.site) if transport is None else HTTPConnection(self.site, transport)
        )
        self.addCleanup(connection.lose)
        return connection

    def test_handover_grace(self) -> None:
        """
        The hand-over grace is L{HANDOVER_IDLE_GRACE}, ending before
        C{drain_timeout} aborts what is left.
        """
        self.assertGreater(HANDOVER_IDLE_GRACE, IDLE_GRACE)
        self.assertEqual(handover_idle_grace(30.0), HANDOVER_IDLE_GRACE)
        self.assertEqual(handover_idle_grace(5.0), 4.0)
        self.assertEqual(handover_idle_grace(0.5), 0.0)

    def test_request_after_the_short_grace_is_answered(self) -> None:
        """
        A request sent later than the shutdown grace, within the hand-over
        one, is answered (with C{Connection: close}), not cut.
        """
        connection = self.connect()
        connection.request("/fast")
        drained = self.site.drain(idle_grace=GRACE * 5)
        self.clock.advance(GRACE * 4)
        self.assertFalse(connection.closing)
        connection.request("/fast", method="POST")
        first, second = connection.responses()
        self.assertEqual((second.status, second.body), (200, b"fast"))
        self.assertEqual(second.header("connection"), "close")
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_silent_connection_closed_when_the_grace_ends(self) -> None:
        connection = self.connect()
        connection.request("/fast")
        self.site.drain(idle_grace=GRACE * 5)
        self.clock.advance(GRACE * 5 - 0.01)
        self.assertFalse(connection.closing)
        self.clock.advance(0.02)
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected)  # a FIN, not an abort

    def test_connection_made_later_gets_the_same_grace(self) -> None:
        self.site.drain(idle_grace=GRACE * 5)
        connection = self.connect()
        self.clock.advance(GRACE * 4)
        self.assertFalse(connection.closing)
        self.clock.advance(GRACE)
        self.assertTrue(connection.closing)

    def test_closed_at_once(self) -> None:
        """
        A grace of 0 closes idle connections at the hand-over itself.
        """
        connection = self.connect()
        connection.request("/fast")
        self.site.drain(idle_grace=0)
        self.clock.advance(0)
        self.assertTrue(connection.closing)

    def test_unread_request_is_answered_not_reset(self) -> None:
        """
        A request that reached the kernel just as the grace ends keeps the
        connection open until the reactor reads it; it is then answered.
        """
        transport = SocketTransport()
        self.addCleanup(transport.close)
        connection = self.connect(transport)
        drained = self.site.drain()
        transport.peer.sendall(b"POST /fast HTTP/1.1\r\nHost: test\r\n\r\n")
        self.clock.advance(GRACE)
        self.assertFalse(connection.closing)
        self.clock.advance(PENDING_RECHECK)
        self.assertFalse(connection.closing)  # still unread
        # The reactor reads it:
        connection.send(transport.socket.recv(1000))
        response = connection.only_response()
        self.assertEqual((response.body, response.header("connection")), (b"fast", "close"))
        self.assertTrue(connection.closing)
        connection.lose()
        self.successResultOf(drained)

    def test_nothing_unread_closes(self) -> None:
        transport = SocketTransport()
        self.addCleanup(transport.close)
        connection = self.connect(transport)
        self.site.drain()
        self.clock.advance(GRACE)
        self.assertTrue(connection.closing)

    def test_partial_request_at_grace_end_is_not_cut(self) -> None:
        """
        A request whose first bytes came during the grace gets the site's
        ordinary timeout to arrive whole.
        """
        connection = self.connect()
        drained = self.site.drain()
        self.clock.advance(GRACE / 2)
        connection.send(b"GET /fast HTTP/1.1\r\n")
        self.clock.advance(GRACE)
        self.assertFalse(connection.closing)
        connection.send(b"Host: test\r\n\r\n")
        self.assertEqual(connection.only_response().header("connection"), "close")
        connection.lose()
        self.successResultOf(drained)

    def test_unread_bytes(self) -> None:
        """
        L{unread_bytes} looks at the socket under a wrapping transport, and
        says no for EOF, for a transport without a socket, and for nothing.
        """
        transport = SocketTransport()
        self.addCleanup(transport.close)
        self.assertFalse(unread_bytes(transport))
        transport.peer.sendall(b"G")
        self.assertTrue(unread_bytes(transport))
        self.assertTrue(unread_bytes(Wrapper(transport)))
        self.assertEqual(transport.socket.recv(10), b"G")  # only peeked
        transport.peer.shutdown(socket.SHUT_WR)
        self.assertFalse(unread_bytes(Wrapper(transport)))
        self.assertFalse(unread_bytes(StringTransport()))
        self.assertFalse(unread_bytes(None))


class RequestValidationTests(SynchronousTestCase):
    """
    Requests the channel refuses before the site sees them: an HTTP/1.1
    request without exactly one C{Host} (400), and headers too large (431)
    or a request line too long (414); each refusal closes the connection.
    """

    def setUp(self) -> None:
        self.app = App()
        self.seen: list[bytes] = []
        render = self.app.render_GET

        def seen(request: Request) -> bytes | int:
            self.seen.append(request.uri)
            return render(request)

        self.app.render_GET = seen  # type: ignore[method-assign]
        self.site = DrainingSite(self.app, reactor=Clock())

    def answer(self, *data: bytes) -> tuple[int, str | None, HTTPConnection]:
        connection = HTTPConnection(self.site)
        self.addCleanup(connection.lose)
        for part in data:
            connection.send(part)
        response = connection.only_response()
        return response.status, response.header("connection"), connection

    def assertRefused(self, status: int, *data: bytes) -> None:
        code, close, connection = self.answer(*data)
        self.assertEqual((code, close), (status, "close"))
        self.assertTrue(connection.closing)
        self.assertEqual(self.seen, [])

    def test_http11_without_host(self) -> None:
        self.assertRefused(400, b"GET /fast HTTP/1.1\r\n\r\n")

    def test_http11_with_two_hosts(self) -> None:
        self.assertRefused(400, b"GET /fast HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")

    def test_http11_without_host_with_body(self) -> None:
        """
        Nothing after the refused request is read as another request.
        """
        self.assertRefused(
            400,
            b"POST /fast HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
            b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n",
        )

    def test_http11_without_host_expecting_continue(self) -> None:
        """
        The refusal is all the client gets: no C{100 Continue} before it.
        """
        code, _, connection = self.answer(
            b"POST /fast HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        self.assertEqual(code, 400)
        self.assertTrue(connection.transport.value().startswith(b"HTTP/1.1 400 "))

    def test_http10_without_host(self) -> None:
        code, _, _ = self.answer(b"GET /fast HTTP/1.0\r\n\r\n")
        self.assertEqual((code, self.seen), (200, [b"/fast"]))

    def test_http11_with_host(self) -> None:
        code, close, connection = self.answer(b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n")
        self.assertEqual((code, close, connection.closing), (200, None, False))

    def test_one_mebibyte_header_line(self) -> None:
        big = b"X-Big: " + b"a" * 2**20
        self.assertRefused(431, b"GET /fast HTTP/1.1\r\nHost: test\r\n" + big + b"\r\n\r\n")

    def test_long_header_line_arriving_in_pieces(self) -> None:
        pieces = [b"GET /fast HTTP/1.1\r\nHost: test\r\nX-Big: "] + [b"a" * 4096] * 8
        self.assertRefused(431, *pieces)

    def test_header_block_too_large(self) -> None:
        lines = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
        self.assertRefused(431, b"GET /fast HTTP/1.1\r\nHost: test\r\n" + lines + b"\r\n")

    def test_too_many_headers(self) -> None:
        lines = b"".join(b"X-%d: a\r\n" % i for i in range(600))
        self.assertRefused(431, b"GET /fast HTTP/1.1\r\nHost: test\r\n" + lines + b"\r\n")

    def test_request_line_too_long(self) -> None:
        self.assertRefused(414, b"GET /" + b"a" * 2**17 + b" HTTP/1.1\r\nHost: test\r\n\r\n")

    def test_other_bad_requests_still_400(self) -> None:
        self.assertRefused(400, b"GET /fast HTTP/1.1\r\nHost: test\r\nno colon\r\n\r\n")

    def test_after_a_good_request(self) -> None:
        """
        A refusal on a kept-alive connection follows the earlier answers.
        """
        connection = HTTPConnection(self.site)
        self.addCleanup(connection.lose)
        connection.send(b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n")
        connection.send(b"GET /fast HTTP/1.1\r\n\r\n")
        first, second = connection.responses()
        self.assertEqual((first.status, second.status), (200, 400))
        self.assertTrue(connection.closing)
