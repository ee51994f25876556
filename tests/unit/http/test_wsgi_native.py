"""
WSGI apps on the native channel (L{graceful.http.wsgi_native}): the
environ, the body read from C{wsgi.input}, a list answered in one reactor
call, a streamed body with back pressure, C{wsgi.file_wrapper}, and an app
that raises.  The app's "thread" is run by the test, after the bytes it
reads have arrived; the reactor runs what the thread hands it at once.
"""

from __future__ import annotations

import io
from typing import Any, Callable

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from graceful._settings import Settings
from graceful.http.native_site import NativeSite, prefix_dispatch
from graceful.http.proxy import site_root
from graceful.http.site_choice import native_front
from graceful.http.wsgi_native import FileWrapper, NativeWSGI


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
        lock = call._lock

        class Condition:
            def __enter__(self) -> None:
                lock.__enter__()

            def __exit__(self, *exc: Any) -> None:
                lock.__exit__(*exc)

            def notify_all(self) -> None:
                pass

            def wait(self) -> None:
                events.append("wait")
                lock.__exit__(None, None, None)
                try:
                    harness.channel.resumeProducing()  # the buffer drained
                finally:
                    lock.__enter__()

        call._lock = Condition()
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
