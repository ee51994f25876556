"""
WSGI apps on the native channel (L{graceful.http.wsgi_native}): the
environ, the body read from C{wsgi.input}, a list answered in one reactor
call, a streamed body with back pressure, C{wsgi.file_wrapper}, and an app
that raises.  The app's "thread" is run by the test, after the bytes it
reads have arrived; the reactor runs what the thread hands it at once.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Callable

from twisted.internet import abstract
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from graceful._settings import Settings
from graceful.http.native_site import NativeSite, prefix_dispatch
from graceful.http.proxy import site_root
from graceful.http.site_choice import native_front
from graceful.http.wsgi_native import FileWrapper, NativeWSGI

from ..test_ends import Accepted, Port


class WaitRuns:
    """
    A stand-in for a WSGI call's condition: each C{wait()} runs C{then}
    (what the reactor's thread would do meanwhile) with the lock released.
    """

    def __init__(self, lock: Any, then: Callable[[], None]) -> None:
        self._lock = lock
        self._then = then

    def __enter__(self) -> None:
        self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def notify_all(self) -> None:
        pass

    def wait(self) -> None:
        self._lock.__exit__(None, None, None)
        try:
            self._then()
        finally:
            self._lock.__enter__()


class Reactor(Clock):
    "Runs what a thread hands it at once, and counts the hand-overs."

    def __init__(self) -> None:
        super().__init__()
        self.from_threads = 0

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.from_threads += 1
        f(*args)


class Pool:
    "The app's threads: each call is run when the test says."

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def callInThread(self, f: Callable[[], None]) -> None:
        self.calls.append(f)

    def run(self) -> None:
        while self.calls:
            self.calls.pop(0)()


class Harness:
    def __init__(self, test: SynchronousTestCase, app: Any, prefix: str = "",
                 host: Any = None, front: Any = None) -> None:
        self.reactor = Reactor()
        self.pool = Pool()
        glue = NativeWSGI(self.reactor, app, prefix, pool=self.pool)
        self.site = NativeSite(Resource(), prefix_dispatch([(prefix.encode(), front(glue) if front else glue)]),
                               reactor=self.reactor)
        self.transport = StringTransport(
            hostAddress=host or IPv4Address("TCP", "127.0.0.1", 8100),
            peerAddress=IPv4Address("TCP", "10.0.0.7", 51000),
        )
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.channel.dataReceived(data)
        return self.transport.value()


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hel", b"lo"]


class WSGITests(SynchronousTestCase):
    def test_environ(self) -> None:
        seen: list[dict[str, Any]] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append(environ)
            return hello(environ, start_response)

        harness = Harness(self, app, prefix="/legacy")
        harness.send(b"GET /legacy/a%20b?x=1 HTTP/1.1\r\nHost: h:81\r\nX-A: 1\r\nx-a: 2\r\n"
                     b"Content-Type: text/plain\r\n\r\n")
        harness.pool.run()
        environ = seen[0]
        self.assertEqual(
            {k: environ[k] for k in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                                     "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR",
                                     "REMOTE_PORT", "HTTP_HOST", "HTTP_X_A", "CONTENT_TYPE",
                                     "wsgi.url_scheme")},
            {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/legacy", "PATH_INFO": "/a b",
             "QUERY_STRING": "x=1", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1",
             "SERVER_PORT": "8100", "REMOTE_ADDR": "10.0.0.7", "REMOTE_PORT": "51000",
             "HTTP_HOST": "h:81", "HTTP_X_A": "1,2", "CONTENT_TYPE": "text/plain",
             "wsgi.url_scheme": "http"},
        )

    def test_server_end_of_a_bound_port_read_once(self) -> None:
        """
        C{SERVER_NAME} and C{SERVER_PORT} of connections accepted on a port
        bound to one address are the port's, read once for it: the app's
        thread does not ask each connection (a getsockname(2) each).
        """
        seen: list[tuple[str, str]] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append((environ["SERVER_NAME"], environ["SERVER_PORT"]))
            return hello(environ, start_response)

        harness = Harness(self, app)
        port = Port("127.0.0.2")
        transports = [Accepted(port, IPv4Address("TCP", "127.0.0.2", 8100)) for _ in range(3)]
        for transport in transports:
            harness.channel = harness.site.buildProtocol(None)
            harness.channel.makeConnection(transport)
            harness.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            harness.pool.run()
        self.assertEqual(seen, [("127.0.0.2", "8100")] * 3)
        self.assertEqual(sum(t.asked for t in transports), 1)

    def test_unix_socket_environ(self) -> None:
        seen: list[dict[str, Any]] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append(environ)
            return hello(environ, start_response)

        harness = Harness(self, app, host=UNIXAddress(b"/run/s.sock"))
        harness.send(b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
        harness.pool.run()
        self.assertEqual((seen[0]["SERVER_NAME"], seen[0]["SERVER_PORT"], seen[0]["REMOTE_ADDR"]),
                         ("example.com", "8080", ""))

    def test_behind_a_trusted_proxy(self) -> None:
        """
        From a trusted peer (proxy_headers on), REMOTE_ADDR, wsgi.url_scheme
        and HTTP_HOST are what the proxy forwarded, as on twisted.web's
        WSGI path; from another peer, the connection's own.
        """
        seen: list[dict[str, Any]] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append(environ)
            return hello(environ, start_response)

        request = (b"GET / HTTP/1.1\r\nHost: inner\r\nForwarded: for=1.2.3.4;proto=https;"
                   b"host=example.test\r\n\r\n")
        for allow in ("10.0.0.7", "127.0.0.1"):
            front = native_front(site_root(Resource(), Settings(proxy_headers=True,
                                                                forwarded_allow_ips=[allow])))
            harness = Harness(self, app, front=front)
            harness.send(request)
            harness.pool.run()
        fields = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST")
        self.assertEqual([tuple(environ[k] for k in fields) for environ in seen],
                         [("1.2.3.4", "0", "https", "example.test"),
                          ("10.0.0.7", "51000", "http", "inner")])

    def test_list_answered_in_one_reactor_call(self) -> None:
        harness = Harness(self, hello)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.pool.run()
        self.assertEqual(harness.reactor.from_threads, 1)
        response = harness.transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"))
        self.assertTrue(response.endswith(b"\r\n\r\nhello"))
        self.assertEqual(harness.site.in_flight, 0)

    def test_iterable_whole_by_content_length_in_one_reactor_call(self) -> None:
        """
        An iterable that is not a list (Flask's, Django's response) whose
        Content-Length its first piece fills goes to the reactor once, and
        its thread does not wait for the write; what it would yield past
        that length is not asked for.
        """
        asked: list[int] = []

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Length", "5")])
            asked.append(1)
            yield b"hello"
            asked.append(2)
            yield b"more"

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        call: Any = next(iter(harness.site.channels)).requests[0].sink

        def waited() -> None:
            self.fail("the app's thread waited for a whole body's write")

        call._condition = WaitRuns(call._lock, waited)
        harness.pool.run()
        self.assertEqual(harness.reactor.from_threads, 1)
        self.assertEqual(asked, [1])
        self.assertTrue(harness.transport.value().endswith(b"\r\n\r\nhello"))
        self.assertEqual(harness.site.in_flight, 0)

    def test_iterable_with_content_length_in_pieces(self) -> None:
        "Pieces short of the Content-Length go one by one, then the rest and the end."
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Length", "5")])
            yield b"hel"
            yield b"loXX"

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.pool.run()
        self.assertEqual(harness.reactor.from_threads, 2)
        self.assertTrue(harness.transport.value().endswith(b"\r\n\r\nhello"))
        self.assertEqual(harness.site.in_flight, 0)

    def test_body_from_wsgi_input(self) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            stream = environ["wsgi.input"]
            first = stream.readline()
            rest = stream.read()
            start_response("200 OK", [])
            return [b"%d %d" % (len(first), len(rest))]

        harness = Harness(self, app)
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nab\ncdefgh")
        harness.pool.run()
        self.assertTrue(harness.transport.value().endswith(b"3\r\n3 6\r\n0\r\n\r\n"))

    def test_streamed_body_waits_while_the_transport_is_full(self) -> None:
        """
        After each piece the app's thread waits while the connection's write
        buffer is over its mark; here the wait is where the reactor drains
        the buffer (the condition's wait() resumes the channel).
        """
        events: list[str] = []

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [])
            for i in range(3):
                events.append(f"piece {i}")
                yield b"x%d" % i

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        call: Any = harness.site.channels and next(iter(harness.site.channels)).requests[0].sink

        def drained() -> None:
            events.append("wait")
            harness.channel.resumeProducing()  # the buffer drained

        call._condition = WaitRuns(call._lock, drained)
        harness.channel.pauseProducing()
        harness.pool.run()
        self.assertEqual(events, ["piece 0", "wait", "piece 1", "piece 2"])
        self.assertTrue(harness.transport.value().endswith(
            b"2\r\nx0\r\n2\r\nx1\r\n2\r\nx2\r\n0\r\n\r\n"))

    def test_file_wrapper(self) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Length", "6")])
            return environ["wsgi.file_wrapper"](io.BytesIO(b"abcdef"), 4)

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.pool.run()
        self.assertTrue(harness.transport.value().endswith(b"\r\n\r\nabcdef"))
        self.assertEqual(list(FileWrapper(io.BytesIO(b"abcdef"), 4)), [b"abcd", b"ef"])

    def test_error_before_start_is_500(self) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            raise ValueError("boom")

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.pool.run()
        self.assertTrue(harness.transport.value().startswith(b"HTTP/1.1 500 "))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_error_after_start_delivers_what_was_sent(self) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [])
            yield b"part"
            raise ValueError("boom")

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.pool.run()
        self.assertTrue(harness.transport.value().endswith(b"\r\n\r\n4\r\npart\r\n"))
        self.assertTrue(harness.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class ThreadPoolSizeTests(SynchronousTestCase):
    """
    The C{wsgi_threads} setting sizes each WSGI app's pool, on the native
    channel and on twisted.web's path alike; no thread starts before the
    app's first request.
    """

    def setUp(self) -> None:
        from ..runtime_case import _RuntimeCase

        case = _RuntimeCase("setUp")
        case.setUp()
        self.addCleanup(case.tearDown)
        self.runtime = case.runtime
        from graceful.admin.pages import add_operational_pages

        self.runtime.operational_pages = add_operational_pages

    def pools(self, http_impl: str) -> list[Any]:
        from graceful.http.routing import WSGIOnAnySocket

        server = self.runtime.server("s")
        server.mount_wsgi("/", hello)
        server.set_http_impl(http_impl)
        site = server._build_site()
        pools = [r.threads.pool for r in server.router._mounts.values()
                 if isinstance(r, WSGIOnAnySocket)]
        if http_impl == "native":
            dispatch = site.dispatch_for(b"/")
            pools.append(dispatch.pool)
        return pools

    def test_default(self) -> None:
        pools = self.pools("native")
        self.assertEqual([p.max for p in pools], [16, 16])

    def test_setting_on_the_native_channel(self) -> None:
        self.runtime.settings.wsgi_threads = 3
        pools = self.pools("native")
        self.assertEqual([p.max for p in pools], [3, 3])
        self.assertEqual([p.started for p in pools], [False, False])

    def test_setting_on_twisted_web(self) -> None:
        self.runtime.settings.wsgi_threads = 5
        [pool] = self.pools("twisted")
        self.assertEqual((pool.max, pool.started), (5, False))


class FakeSocket:
    """
    A non-blocking socket that takes C{room} bytes, then raises EAGAIN
    until the test makes room.
    """

    def __init__(self, room: int) -> None:
        self.room = room
        self.wire = bytearray()

    def fileno(self) -> int:
        return 99

    def send(self, data: bytes) -> int:
        if not self.room:
            raise BlockingIOError()
        taken = bytes(data[:self.room])
        self.wire += taken
        self.room -= len(taken)
        return len(taken)


class SocketTransport(abstract.FileDescriptor):
    """
    A reactor's TCP connection as far as the channel and the file sender
    look: a C{FileDescriptor} with a C{socket}.
    """

    def __init__(self, sock: FakeSocket) -> None:
        super().__init__(MemoryReactor())
        self.socket = sock
        self.connected = 1

    def writeSomeData(self, data: bytes) -> int:
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8100)

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "10.0.0.7", 51000)

    def drain(self, room: int) -> Any:
        """
        The client read: the socket takes C{room} more bytes, and says so;
        what C{doWrite()} returns (the reactor closes the connection on
        C{CONNECTION_DONE}).
        """
        self.socket.room += room
        return self.doWrite()


class FakeSendfile:
    "os.sendfile into a L{FakeSocket}: the file's real bytes, as many as it takes."

    def __init__(self, sock: FakeSocket) -> None:
        self.sock = sock
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, out: int, fd: int, offset: int, count: int) -> int:
        self.calls.append((out, offset, count))
        if not self.sock.room:
            raise BlockingIOError()
        data = os.pread(fd, min(count, self.sock.room), offset)
        self.sock.wire += data
        self.sock.room -= len(data)
        return len(data)


class SendfileHarness(Harness):
    """
    The channel on a socket transport; the app's thread, waiting for its
    file to be sent, lets the test act as the reactor meanwhile (C{reader}).
    """

    def __init__(self, test: SynchronousTestCase, app: Any, room: int,
                 reader: Callable[[SocketTransport], None]) -> None:
        self.reactor = Reactor()
        self.pool = Pool()
        self.sock = FakeSocket(room)
        self.sendfile = FakeSendfile(self.sock)
        glue = NativeWSGI(self.reactor, app, pool=self.pool, sendfile=self.sendfile)
        self.site = NativeSite(Resource(), prefix_dispatch([(b"", glue)]), reactor=self.reactor)
        self.logged: list[tuple[int, int]] = []
        self.site.log = lambda request: self.logged.append(  # type: ignore[method-assign]
            (request.code, request.sentLength))
        self.transport = SocketTransport(self.sock)
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.transport)
        self.reader = reader

    def request(self, raw: bytes) -> bytes:
        self.channel.dataReceived(raw)
        call = self.channel.requests[0].sink
        transport, reader = self.transport, self.reader
        call._condition = WaitRuns(call._lock, lambda: reader(transport))
        self.pool.run()
        return bytes(self.sock.wire)


def file_app(path: str, length: int | None = None, skip: int = 0,
             status: str = "200 OK") -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        f = open(path, "rb")
        opened.append(f)
        f.read(skip)
        headers = [("Content-Type", "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response(status, headers)
        return environ["wsgi.file_wrapper"](f, 4096)

    opened: list[Any] = []
    app.opened = opened  # type: ignore[attr-defined]
    return app


class FileWrapperSendfileTests(SynchronousTestCase):
    """
    C{wsgi.file_wrapper} over a regular file on a plain socket: the head
    and the first block in one send, the rest by sendfile(2) as the socket
    takes it, no more than C{Content-Length}, the file closed at the end or
    when the client goes, the access log's byte count the body's.
    """

    SIZE = 300_000

    def setUp(self) -> None:
        self.content = bytes(range(256)) * (self.SIZE // 256) + b"x" * (self.SIZE % 256)
        fd, self.path = tempfile.mkstemp()
        os.write(fd, self.content)
        os.close(fd)
        self.addCleanup(os.unlink, self.path)

    def split(self, wire: bytes) -> tuple[bytes, bytes]:
        head, _, body = wire.partition(b"\r\n\r\n")
        return head, body

    def test_whole_file_by_sendfile(self) -> None:
        """
        The socket takes 100 KB at a time: sendfile sends what fits, the
        sender waits for the socket to be writable, and goes on.
        """
        drains = []

        def reader(transport: SocketTransport) -> None:
            drains.append(1)
            transport.drain(100_000)

        app = file_app(self.path)
        harness = SendfileHarness(self, app, room=100_000, reader=reader)
        head, body = self.split(harness.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        self.assertEqual(body, self.content)
        self.assertIn(b"\r\ncontent-length: 300000", head)
        self.assertNotIn(b"chunked", head)
        # The first 16 KiB left with the head; sendfile sent the rest.
        self.assertEqual(harness.sendfile.calls[0][1:], (16384, self.SIZE - 16384))
        self.assertGreater(len(harness.sendfile.calls), 1)
        self.assertGreater(len(drains), 1)
        self.assertTrue(app.opened[0].closed)  # type: ignore[attr-defined]
        self.assertEqual(harness.logged, [(200, self.SIZE)])
        # Keep-alive: the connection serves the next request.
        self.assertFalse(harness.transport.disconnecting)
        self.assertEqual(harness.channel.requests, [])

    def test_content_length_is_respected(self) -> None:
        """
        The app says 50000 bytes from where it left the file (offset 10):
        those are sent, and the rest of the file is not.
        """
        app = file_app(self.path, length=50_000, skip=10)
        harness = SendfileHarness(self, app, room=10**9, reader=lambda t: None)
        head, body = self.split(harness.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        self.assertEqual(body, self.content[10:50_010])
        self.assertEqual(head.count(b"ontent-Length"), 1)
        self.assertEqual(harness.logged, [(200, 50_000)])
        self.assertFalse(harness.transport.disconnecting)

    def test_file_shorter_than_content_length_is_cut(self) -> None:
        app = file_app(self.path, length=self.SIZE + 5)
        harness = SendfileHarness(self, app, room=10**9, reader=lambda t: None)
        _, body = self.split(harness.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        self.assertEqual(body, self.content)
        self.assertTrue(harness.transport.disconnecting)
        self.assertTrue(app.opened[0].closed)  # type: ignore[attr-defined]

    def test_client_gone_closes_the_file(self) -> None:
        """
        The client goes away while the socket is full: nothing more is
        sent, and the app's thread closes the file.
        """
        def reader(transport: SocketTransport) -> None:
            transport.connectionLost(Failure(ConnectionDone()))

        app = file_app(self.path)
        harness = SendfileHarness(self, app, room=50_000, reader=reader)
        wire = harness.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        calls = len(harness.sendfile.calls)
        self.assertEqual(len(wire), 50_000)  # what the socket took before the client went
        harness.transport.socket.room = 10**9
        harness.transport.doWrite()
        self.assertEqual(len(harness.sendfile.calls), calls)
        self.assertTrue(app.opened[0].closed)  # type: ignore[attr-defined]

    def test_head_request_sends_no_body(self) -> None:
        app = file_app(self.path)
        harness = SendfileHarness(self, app, room=10**9, reader=lambda t: None)
        wire = harness.request(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(wire.endswith(b"\r\n\r\n"))
        self.assertIn(b"\r\ncontent-length: 300000", wire)
        self.assertEqual(harness.sendfile.calls, [])
        self.assertTrue(app.opened[0].closed)  # type: ignore[attr-defined]

    def test_not_a_plain_socket_reads_the_file(self) -> None:
        """
        On another transport (TLS; here a test's) the file is read in
        blocks, and no more than its Content-Length is sent.
        """
        app = file_app(self.path, length=10_000)
        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.pool.run()
        _, _, body = harness.transport.value().partition(b"\r\n\r\n")
        self.assertEqual(body, self.content[:10_000])
        self.assertFalse(harness.transport.disconnecting)
        self.assertTrue(app.opened[0].closed)  # type: ignore[attr-defined]


class QueuedReactor(Reactor):
    "Runs what a thread hands it when the test says, as a real reactor would, later."

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.queue.append((f, args))

    def run_queue(self) -> None:
        while self.queue:
            f, args = self.queue.pop(0)
            f(*args)


class StreamedBodyOnASocketTests(SynchronousTestCase):
    """
    A streamed body on a socket transport whose reactor runs the thread's
    hand-overs later, as a real one does: the app's thread waits for each
    piece to be written before it asks whether the connection takes more,
    and a response with C{Connection: close} closes once its last bytes
    leave, even when the transport had paused the channel.
    """

    def serve(self, request: bytes, pieces: int,
              whole: bool = False) -> tuple[list[int], SocketTransport, list[Any]]:
        reactor = QueuedReactor()
        pool = Pool()
        queued_at_yield: list[int] = []

        def streamed(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [])
            for _ in range(pieces):
                queued_at_yield.append(len(reactor.queue))
                yield b"x" * 100_000

        def listed(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [])
            return [b"x" * 100_000] * pieces

        app = listed if whole else streamed

        site = NativeSite(Resource(), prefix_dispatch([(b"", NativeWSGI(reactor, app, pool=pool))]),
                          reactor=reactor)
        transport = SocketTransport(FakeSocket(0))
        channel = site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(request)
        call = channel.requests[0].sink
        lock = call._lock
        results: list[Any] = []

        class Condition:
            "The thread's wait: the reactor runs meanwhile, and the client reads."

            def __enter__(self) -> None:
                lock.__enter__()

            def __exit__(self, *exc: Any) -> None:
                lock.__exit__(*exc)

            def notify_all(self) -> None:
                pass

            def wait(self) -> None:
                lock.__exit__(None, None, None)
                try:
                    if reactor.queue:
                        reactor.run_queue()
                    else:
                        results.append(transport.drain(10**6))
                finally:
                    lock.__enter__()

        call._condition = Condition()
        pool.run()
        reactor.run_queue()
        results.append(transport.drain(10**7))
        return queued_at_yield, transport, results

    def test_each_piece_written_before_the_next(self) -> None:
        queued, transport, _ = self.serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 4)
        self.assertEqual(queued, [0, 0, 0, 0])
        self.assertTrue(bytes(transport.socket.wire).endswith(b"\r\n0\r\n\r\n"))

    def test_connection_close_closes_after_a_paused_write(self) -> None:
        """
        A list of 200 KB ends while the transport holds it, over its mark
        (the channel paused as its producer): once it leaves, the
        connection closes.
        """
        _, transport, results = self.serve(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 2, whole=True)
        self.assertTrue(bytes(transport.socket.wire).endswith(b"\r\n0\r\n\r\n"))
        self.assertIsNotNone(results[-1])  # CONNECTION_DONE: the reactor closes it


class FakeThread:
    "A thread that runs only when the test calls L{run}."

    made: list[FakeThread] = []

    def __init__(self, target: Callable[[], None], daemon: bool, name: str) -> None:
        self.target, self.name = target, name
        self.started = self.joined = False
        FakeThread.made.append(self)

    def start(self) -> None:
        self.started = True

    def run(self) -> None:
        self.target()

    def join(self) -> None:
        self.joined = True


class WorkerThreadsTests(SynchronousTestCase):
    """
    The pool starts a thread only when none is idle, never more than its
    C{max}; its threads run all they were given, and end at C{stop()}.
    """

    def setUp(self) -> None:
        FakeThread.made = []

    def test_bounded_and_all_run(self) -> None:
        from graceful.http.wsgi_native import WorkerThreads

        pool = WorkerThreads(2, thread=FakeThread)  # type: ignore[arg-type]
        pool.start()
        done: list[int] = []
        for i in range(5):
            pool.callInThread(done.append, i)
        self.assertEqual([t.started for t in FakeThread.made], [True, True])
        pool._queue.put(None)
        FakeThread.made[0].run()
        self.assertEqual(done, [0, 1, 2, 3, 4])

    def test_stop_drops_work_not_begun_and_waits_for_no_thread(self) -> None:
        """
        As the reactor stops: work still queued is dropped, and no thread is
        joined (one may be waiting for the reactor, which would never stop).
        """
        from graceful.http.wsgi_native import WorkerThreads

        pool = WorkerThreads(2, thread=FakeThread)  # type: ignore[arg-type]
        pool.start()
        done: list[int] = []
        for i in range(5):
            pool.callInThread(done.append, i)
        pool.stop()
        for thread in FakeThread.made:
            thread.run()  # each returns at the end stop() queued for it
        self.assertEqual(done, [])
        self.assertEqual([t.joined for t in FakeThread.made], [False, False])
        self.assertFalse(pool.started)

    def test_idle_thread_reused(self) -> None:
        from graceful.http.wsgi_native import WorkerThreads

        pool = WorkerThreads(4, thread=FakeThread)  # type: ignore[arg-type]
        pool.start()
        done: list[int] = []
        pool.callInThread(done.append, 1)
        pool._queue.put(None)
        FakeThread.made[0].run()  # does its work, counts itself idle
        pool.callInThread(done.append, 2)
        self.assertEqual((len(FakeThread.made), done), (1, [1]))

    def test_failure_is_logged_and_the_thread_goes_on(self) -> None:
        from graceful.http.wsgi_native import WorkerThreads

        pool = WorkerThreads(1, thread=FakeThread)  # type: ignore[arg-type]
        done: list[int] = []
        pool.callInThread(lambda: 1 / 0)
        pool.callInThread(done.append, 1)
        pool._queue.put(None)
        FakeThread.made[0].run()
        self.assertEqual(done, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class HandOverTests(SynchronousTestCase):
    """
    What the app's threads hand the reactor while a flush is pending joins
    that flush: one wake of the reactor for several responses, in order.
    """

    def test_one_wake_for_what_comes_meanwhile(self) -> None:
        reactor = QueuedReactor()
        glue = NativeWSGI(reactor, hello, pool=Pool())
        ran: list[int] = []
        glue.to_reactor(ran.append, 1)
        glue.to_reactor(ran.append, 2)
        self.assertEqual((len(reactor.queue), ran), (1, []))
        reactor.run_queue()
        self.assertEqual(ran, [1, 2])
        glue.to_reactor(ran.append, 3)
        self.assertEqual(len(reactor.queue), 1)
        reactor.run_queue()
        self.assertEqual(ran, [1, 2, 3])

    def test_a_failure_does_not_stop_the_rest(self) -> None:
        reactor = QueuedReactor()
        glue = NativeWSGI(reactor, hello, pool=Pool())
        ran: list[int] = []
        glue.to_reactor(lambda: 1 / 0)  # type: ignore[arg-type,return-value]
        glue.to_reactor(ran.append, 1)
        reactor.run_queue()
        self.assertEqual(ran, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
