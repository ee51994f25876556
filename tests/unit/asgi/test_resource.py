"""
ASGI apps as resources: the http scope, the body and response flow, and the
lifespan, on an asyncio loop driven by hand and a graceful site over an
in-memory transport.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import alsoProvides

from graceful.asgi.resource import BODY_BUFFER, BODY_CHUNK, ASGIRequest, ASGIResource, Lifespan, LifespanFailed
from graceful._config import classify_app
from graceful.http.site import DrainingSite
from graceful._errors import ConfigError
from graceful.http.routing import Router

from graceful.testing import FakeOldProcess

from ..runtime_case import _RuntimeCase


class TLSStringTransport(StringTransport):
    """
    What a TLS connection looks like to a request (ISSLTransport is a TCP
    transport too).
    """

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def settle(loop: asyncio.AbstractEventLoop, rounds: int = 50) -> None:
    """
    Run the loop's ready callbacks, a bounded number of rounds, no timers.
    """
    for _ in range(rounds):
        loop.run_until_complete(asyncio.sleep(0))


class Harness:
    """
    One connection to a graceful site that mounts C{app} at C{prefix}.
    """

    def __init__(
        self, test: SynchronousTestCase, app: Any, prefix: str = "/", tls: bool = False,
        peer: Any = None, access_log: Any = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        test.addCleanup(self.loop.close)
        router = Router()
        self.resource = ASGIResource(app, prefix, loop=self.loop)
        router.mount(prefix, self.resource)
        self.site = DrainingSite(router, reactor=MemoryReactorClock(), access_log=access_log)
        self.site.requestFactory = ASGIRequest
        self.transport = (TLSStringTransport if tls else StringTransport)(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8100),
            peerAddress=peer or IPv4Address("TCP", "10.0.0.7", 51000),
        )
        if tls:
            alsoProvides(self.transport, ISSLTransport)
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.channel.dataReceived(data)
        settle(self.loop)
        return self.transport.value()


class Recorder:
    """
    An ASGI app that reads the whole body in messages and answers with its
    length, keeping the scope and the messages it received.
    """

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        size = 0
        while True:
            message = await receive()
            self.messages.append(message)
            size += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"x-size", str(size).encode())]})
        await send({"type": "http.response.body", "body": b"ok"})


class ScopeTests(SynchronousTestCase):
    """
    The http scope, as uvicorn builds it.
    """

    def scope_of(self, request: bytes, **kwargs: Any) -> dict[str, Any]:
        app = Recorder()
        response = Harness(self, app, **kwargs).send(request)
        self.assertIn(b" 201 ", response.split(b"\r\n")[0])
        return app.scopes[0]

    def test_fields(self) -> None:
        scope = self.scope_of(
            b"GET /caf%C3%A9/a%2Fb?q=a%20b&x=%2F HTTP/1.1\r\nHost: example.com\r\n"
            b"X-Two: 1\r\nx-two: 2\r\nUser-Agent: t\r\n\r\n"
        )
        self.assertEqual(scope["type"], "http")
        self.assertEqual(scope["asgi"]["version"], "3.0")
        self.assertEqual(scope["http_version"], "1.1")
        self.assertEqual(scope["method"], "GET")
        self.assertEqual(scope["scheme"], "http")
        self.assertEqual(scope["path"], "/café/a/b")
        self.assertEqual(scope["raw_path"], b"/caf%C3%A9/a%2Fb")
        self.assertEqual(scope["query_string"], b"q=a%20b&x=%2F")
        self.assertEqual(scope["root_path"], "")
        self.assertEqual(scope["client"], ["10.0.0.7", 51000])
        self.assertEqual(scope["server"], ["127.0.0.1", 8100])
        headers = scope["headers"]
        self.assertIn((b"host", b"example.com"), headers)
        self.assertIn((b"user-agent", b"t"), headers)
        self.assertEqual([v for n, v in headers if n == b"x-two"], [b"1", b"2"])
        for name, value in headers:
            self.assertEqual(name, name.lower())
            self.assertIsInstance(value, bytes)

    def test_headers_in_wire_order(self) -> None:
        """
        Headers reach the app in the order they came, not grouped by name.
        """
        scope = self.scope_of(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nA: 3\r\nHost: h\r\n\r\n")
        self.assertEqual(
            scope["headers"], [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"host", b"h")]
        )

    def test_headers_changed_after_arrival_are_grouped(self) -> None:
        """
        Headers set or removed after they arrived are taken as they are
        now (grouped): the wire order no longer says what is there.
        """
        from graceful.asgi.resource import WireOrderHeaders
        from graceful.asgi.scope import build_http_scope

        request = ASGIRequest(DummyChannel(), False)
        headers = request.requestHeaders
        assert isinstance(headers, WireOrderHeaders)
        for name, value in ((b"A", b"1"), (b"B", b"2"), (b"A", b"3")):
            headers.addRawHeader(name, value)
        headers.setRawHeaders(b"b", [b"9"])
        request.uri, request.method, request.clientproto = b"/", b"GET", b"HTTP/1.1"
        scope = build_http_scope(request, "", {})
        self.assertEqual(scope["headers"], [(b"a", b"1"), (b"a", b"3"), (b"b", b"9")])

    def test_headers_in_wire_order_with_a_streamed_body(self) -> None:
        scope = self.scope_of(
            b"POST / HTTP/1.1\r\nA: 1\r\nHost: h\r\nContent-Length: 2\r\nA: 3\r\n\r\nhi"
        )
        self.assertEqual(
            scope["headers"],
            [(b"a", b"1"), (b"host", b"h"), (b"content-length", b"2"), (b"a", b"3")],
        )

    def test_extensions(self) -> None:
        """
        HTTP/1.1 requests are offered response trailers; HTTP/1.0 ones none.
        """
        scope = self.scope_of(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(scope["extensions"], {"http.response.trailers": {}})
        scope = self.scope_of(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(scope["extensions"], {})

    def test_tls_asked_once_per_connection(self) -> None:
        """
        Whether a connection is TLS is asked once, not per request (each
        answer is a zope interface lookup).
        """
        app = Recorder()
        harness = Harness(self, app, tls=True)
        asked: list[bool] = []
        is_secure = harness.channel.isSecure
        harness.channel.isSecure = lambda: asked.append(True) or is_secure()  # type: ignore[method-assign]
        for _ in range(3):
            harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual([scope["scheme"] for scope in app.scopes], ["https"] * 3)
        self.assertEqual(len(asked), 1)

    def test_https_and_ipv6(self) -> None:
        scope = self.scope_of(
            b"POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
            tls=True,
            peer=IPv6Address("TCP", "::1", 40000),
        )
        self.assertEqual(scope["scheme"], "https")
        self.assertEqual(scope["http_version"], "1.0")
        self.assertEqual(scope["method"], "POST")
        self.assertEqual(scope["client"], ["::1", 40000])

    def test_root_path_of_a_mount(self) -> None:
        scope = self.scope_of(b"GET /api/v1/items?a=1 HTTP/1.1\r\nHost: h\r\n\r\n", prefix="/api/")
        self.assertEqual(scope["root_path"], "/api")
        # The whole path, the prefix included (as uvicorn and Starlette have it).
        self.assertEqual(scope["path"], "/api/v1/items")
        self.assertEqual(scope["query_string"], b"a=1")

    def test_state_is_copied_per_request(self) -> None:
        seen = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(dict(scope["state"]))
            scope["state"]["mine"] = True
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body"})

        harness = Harness(self, app)
        harness.resource.lifespan.state["db"] = "pool"
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 2)
        self.assertEqual(seen, [{"db": "pool"}, {"db": "pool"}])
        self.assertEqual(harness.resource.lifespan.state, {"db": "pool"})


class BridgeFlowTests:
    """
    What both ASGI bridges (twisted.web's and the native channel's) do
    alike with a request's flow; each bridge's C{FlowTests} runs these on
    its own harness.
    """

    def harness(self, app: Any, **options: Any) -> Any:
        raise NotImplementedError

    def test_reading_pauses_while_the_app_does_not_receive(self) -> None:
        """
        Past BODY_BUFFER bytes waiting for the app, the connection is not
        read; the app's receive() resumes it.
        """
        gate: asyncio.Future[None] | None = None
        sizes: list[int] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            nonlocal gate
            gate = asyncio.get_running_loop().create_future()
            await gate
            while True:
                message = await receive()
                sizes.append(len(message["body"]))
                if not message["more_body"]:
                    break
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})

        harness = self.harness(app)
        size = BODY_BUFFER * 3
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
        harness.send(b"x" * (BODY_BUFFER // 2))
        self.assertEqual(harness.transport.producerState, "producing")
        harness.send(b"x" * BODY_BUFFER)
        self.assertEqual(harness.transport.producerState, "paused")
        assert gate is not None
        gate.set_result(None)
        settle(harness.loop)
        self.assertEqual(harness.transport.producerState, "producing")
        response = harness.send(b"x" * (size - BODY_BUFFER - BODY_BUFFER // 2))
        self.assertEqual(sum(sizes), size)
        self.assertTrue(response.startswith(b"HTTP/1.1 204 "))

    def test_send_waits_while_the_transport_is_full(self) -> None:
        """
        send() waits while the transport's buffer is over its high-water
        mark (the transport paused its producer), and goes on once it
        drained.
        """
        gate: asyncio.Future[None] | None = None
        sent: list[int] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            nonlocal gate
            gate = asyncio.get_running_loop().create_future()
            await gate
            await send({"type": "http.response.start", "status": 200})
            for i in range(5):
                await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
                sent.append(i)
            await send({"type": "http.response.body", "body": b""})

        harness = self.harness(app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.channel.pauseProducing()  # what the transport calls when full
        assert gate is not None
        gate.set_result(None)
        settle(harness.loop)
        self.assertEqual(sent, [])
        self.assertEqual(harness.transport.value().count(b"x" * 1000), 1)
        harness.channel.resumeProducing()
        settle(harness.loop)
        self.assertEqual(sent, [0, 1, 2, 3, 4])
        self.assertTrue(harness.transport.value().endswith(b"0\r\n\r\n"))
        self.assertEqual(harness.site.in_flight, 0)

    def test_error_after_start_sends_what_was_sent_then_closes(self) -> None:
        """
        An app that raises after its response started: the client gets the
        bytes already sent, with no last chunk, and a close (not a reset);
        the access log has the request's line.
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise ValueError("boom")

        lines: list[str] = []
        harness = self.harness(app, access_log=lines.append)
        response = harness.send(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "))
        self.assertTrue(response.endswith(b"\r\n\r\n4\r\npart\r\n"))
        self.assertTrue(harness.transport.disconnecting)
        self.assertFalse(harness.transport.disconnected)  # not aborted
        self.assertEqual(len(lines), 1)
        self.assertIn('"GET /x HTTP/1.1" 200 4', lines[0])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_returned_without_response(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            return None

        response = self.harness(app).send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "))


class FlowTests(BridgeFlowTests, SynchronousTestCase):
    """
    The body to receive(), the app's messages to the response.
    """

    def harness(self, app: Any, **options: Any) -> Any:
        return Harness(self, app, **options)

    def test_body_in_chunks(self) -> None:
        app = Recorder()
        body = b"x" * (BODY_CHUNK * 2 + 10)
        response = Harness(self, app).send(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertIn(b"x-size: %d" % len(body), response.lower())
        self.assertEqual(b"".join(m["body"] for m in app.messages), body)
        self.assertEqual([m["more_body"] for m in app.messages][-1], False)

    def test_body_in_chunks_from_a_whole_request(self) -> None:
        """
        A request twisted.web read whole (its plain Request) is handed over
        in BODY_CHUNK pieces.
        """
        app = Recorder()
        body = b"x" * (BODY_CHUNK * 2 + 10)
        harness = Harness(self, app)
        harness.site.requestFactory = Request
        harness.channel.requestFactory = Request
        response = harness.send(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertIn(b"x-size: %d" % len(body), response.lower())
        self.assertEqual(
            [(len(m["body"]), m["more_body"]) for m in app.messages],
            [(BODY_CHUNK, True), (BODY_CHUNK, True), (10, False)],
        )

    def test_body_reaches_the_app_as_it_arrives(self) -> None:
        """
        The app starts once the headers are in and receives each piece of
        the body as it comes, not once all of it arrived.
        """
        app = Recorder()
        harness = Harness(self, app)
        harness.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 30000\r\n\r\n")
        self.assertEqual(len(app.scopes), 1)
        harness.send(b"a" * 10000)
        self.assertEqual(app.messages, [{"type": "http.request", "body": b"a" * 10000, "more_body": True}])
        harness.send(b"b" * 10000)
        self.assertEqual(app.messages[-1], {"type": "http.request", "body": b"b" * 10000, "more_body": True})
        response = harness.send(b"c" * 10000)
        self.assertEqual(app.messages[-1]["more_body"], False)
        self.assertEqual(b"".join(m["body"] for m in app.messages), b"a" * 10000 + b"b" * 10000 + b"c" * 10000)
        self.assertIn(b"x-size: 30000", response.lower())
        self.assertEqual(harness.site.in_flight, 0)

    def test_chunked_body_reaches_the_app_as_it_arrives(self) -> None:
        app = Recorder()
        harness = Harness(self, app)
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        harness.send(b"5\r\nhello\r\n")
        self.assertEqual(app.messages, [{"type": "http.request", "body": b"hello", "more_body": True}])
        response = harness.send(b"6\r\n world\r\n0\r\n\r\n")
        self.assertEqual(b"".join(m["body"] for m in app.messages), b"hello world")
        self.assertIn(b"x-size: 11", response.lower())

    def test_answer_before_the_body_keeps_the_connection(self) -> None:
        """
        An app that answers before the body has all arrived: its response is
        sent, the rest of the body is read and dropped, and the connection
        serves its next request.
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-length", b"3")]})
            await send({"type": "http.response.body", "body": b"big"})

        harness = Harness(self, app)
        response = harness.send(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 20000\r\n\r\n" + b"x" * 5000
        )
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "))
        self.assertTrue(response.endswith(b"\r\n\r\nbig"))
        self.assertEqual(harness.site.in_flight, 1)
        harness.transport.clear()
        harness.send(b"x" * 15000)
        self.assertEqual(harness.site.in_flight, 0)
        response = harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "))
        self.assertFalse(harness.transport.disconnecting)

    def test_render_failing_before_the_body_keeps_the_connection(self) -> None:
        """
        A streamed request whose render fails (twisted.web answers 500 at
        once): the rest of its body is read as body, not as the next
        request, and the connection goes on.
        """
        class Broken(ASGIResource):
            def render(self, request: Any) -> Any:
                if request.method == b"POST":
                    raise RuntimeError("render failed")
                return super().render(request)

        harness = Harness(self, Recorder())
        harness.resource.__class__ = Broken
        response = harness.send(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n" + b"GET /x HTTP/1.1\r\n"
        )
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        harness.transport.clear()
        response = harness.send(b"Host: h\r\n\r\n" + b"x" * 12 + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 201 "), response)
        self.assertEqual(response.count(b"HTTP/1.1"), 1)
        self.assertEqual(harness.site.in_flight, 0)

    def test_empty_body(self) -> None:
        app = Recorder()
        Harness(self, app).send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(app.messages, [{"type": "http.request", "body": b"", "more_body": False}])

    def test_streamed_response(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        harness = Harness(self, app)
        response = harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(body, b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n")
        self.assertEqual(harness.site.in_flight, 0)

    def test_disconnect(self) -> None:
        """
        Once the body is read, receive() waits; it answers http.disconnect
        when the client goes away, and what the app sends then goes nowhere.
        """
        received: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            received.append(await receive())
            received.append(await receive())
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"late"})

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual([m["type"] for m in received], ["http.request"])
        self.assertEqual(harness.site.in_flight, 1)
        harness.channel.connectionLost(Failure(ConnectionError("gone")))
        settle(harness.loop)
        self.assertEqual([m["type"] for m in received], ["http.request", "http.disconnect"])
        self.assertEqual(harness.transport.value(), b"")

    def test_pending_receive_when_the_response_ends(self) -> None:
        """
        A receive() still waiting when the app ends its response returns
        http.disconnect (as uvicorn): a watcher task does not hang.
        """
        received: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()

            async def watch() -> None:
                received.append(await receive())

            watcher = asyncio.ensure_future(watch())
            await asyncio.sleep(0)
            self.assertEqual(received, [])
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"done"})
            await watcher

        harness = Harness(self, app)
        response = harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.endswith(b"4\r\ndone\r\n0\r\n\r\n"))
        self.assertEqual(received, [{"type": "http.disconnect"}])

    def test_trailers(self) -> None:
        """
        A chunked HTTP/1.1 response ends with the trailers the app sent.
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert "http.response.trailers" in scope["extensions"]
            await send({"type": "http.response.start", "status": 200, "trailers": True,
                        "headers": [(b"trailer", b"x-checksum")]})
            await send({"type": "http.response.body", "body": b"data", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            await send({"type": "http.response.trailers",
                        "headers": [(b"x-checksum", b"abc")], "more_trailers": True})
            await send({"type": "http.response.trailers", "headers": [(b"x-more", b"1")]})

        harness = Harness(self, app)
        response = harness.send(b"GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n")
        self.assertTrue(
            response.endswith(b"\r\n\r\n4\r\ndata\r\n0\r\nx-checksum: abc\r\nx-more: 1\r\n\r\n"),
            response,
        )
        self.assertEqual(harness.site.in_flight, 0)
        # The connection goes on: the next response is whole.
        harness.transport.clear()
        response = harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.endswith(b"0\r\nx-checksum: abc\r\nx-more: 1\r\n\r\n"))

    def test_trailers_on_a_sized_response_are_dropped(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "trailers": True,
                        "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"data"})
            await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})

        harness = Harness(self, app)
        response = harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.endswith(b"\r\n\r\ndata"))
        self.assertEqual(harness.site.in_flight, 0)

    def test_error_before_start_is_500(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise ValueError("boom")

        response = Harness(self, app).send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "))
        self.assertTrue(response.endswith(b"Internal Server Error\n"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_asgi2_app(self) -> None:
        class App2:
            def __init__(self, scope: Any) -> None:
                self.scope = scope

            async def __call__(self, receive: Any, send: Any) -> None:
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": self.scope["path"].encode()})

        response = Harness(self, App2).send(b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.endswith(b"4\r\n/two\r\n0\r\n\r\n"))
        self.assertNotIn(b"content-type", response.lower())

    def test_drain_closes_after_response(self) -> None:
        """
        A request in flight when the site drains ends with Connection: close.
        """
        gate: asyncio.Future[None] | None = None

        async def app(scope: Any, receive: Any, send: Any) -> None:
            nonlocal gate
            gate = asyncio.get_running_loop().create_future()
            await gate
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"done"})

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        drained = harness.site.drain()
        assert gate is not None
        gate.set_result(None)
        response = harness.send(b"")
        self.assertIn(b"Connection: close", response)
        self.assertTrue(response.endswith(b"4\r\ndone\r\n0\r\n\r\n"))
        harness.channel.connectionLost(Failure(ConnectionError("closed")))
        self.assertIsNone(self.successResultOf(drained))


class LifespanTests(SynchronousTestCase):
    """
    Startup and shutdown, in order, and what makes startup fail.
    """

    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)

    def run_deferred(self, d: Deferred[Any]) -> Any:
        settle(self.loop)
        return d

    def test_order_and_state(self) -> None:
        events: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert scope["type"] == "lifespan"
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["pool"] = "open"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    events.append("returned")
                    return

        lifespan = Lifespan(app, self.loop)
        started = self.run_deferred(lifespan.startup())
        self.assertIsNone(self.successResultOf(started))
        self.assertEqual(events, ["lifespan.startup"])
        self.assertEqual(lifespan.state, {"pool": "open"})
        first = self.run_deferred(lifespan.shutdown())
        second = lifespan.shutdown()
        self.assertIsNone(self.successResultOf(first))
        self.assertIs(first, second)
        settle(self.loop)
        self.assertEqual(events, ["lifespan.startup", "lifespan.shutdown", "returned"])

    def test_unsupported(self) -> None:
        """
        An app that raises before it receives anything has no lifespan: it is
        served without, and its shutdown is skipped.
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert scope["type"] == "http"

        lifespan = Lifespan(app, self.loop)
        self.assertIsNone(self.successResultOf(self.run_deferred(lifespan.startup())))
        self.assertFalse(lifespan.supported)
        self.assertIsNone(self.successResultOf(lifespan.shutdown()))

    def test_returns_at_once(self) -> None:
        """
        An app that returns on a scope it does not serve, before it asks
        for a message, has no lifespan either (a common hello-world ASGI app).
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return

        lifespan = Lifespan(app, self.loop)
        self.assertIsNone(self.successResultOf(self.run_deferred(lifespan.startup())))
        self.assertFalse(lifespan.supported)

    def test_returns_after_startup(self) -> None:
        """
        Returning after it received C{lifespan.startup}, with no answer,
        fails the startup.
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()

        failure = self.failureResultOf(
            self.run_deferred(Lifespan(app, self.loop).startup()), LifespanFailed
        )
        self.assertEqual(str(failure.value), "the app returned")

    def test_startup_failed(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database"})

        failure = self.failureResultOf(
            self.run_deferred(Lifespan(app, self.loop).startup()), LifespanFailed
        )
        self.assertEqual(str(failure.value), "no database")

    def test_startup_raises(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            raise OSError("connection refused")

        failure = self.failureResultOf(
            self.run_deferred(Lifespan(app, self.loop).startup()), LifespanFailed
        )
        self.assertEqual(str(failure.value), "OSError: connection refused")

    def test_startup_raises_logs_the_traceback(self) -> None:
        """
        An app that raises in its startup: the log has the whole traceback,
        down to the app's line (as uvicorn prints it), the reason its last line.
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            raise OSError("connection refused")

        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        failure = self.failureResultOf(
            self.run_deferred(Lifespan(app, self.loop).startup()), LifespanFailed
        )
        self.assertEqual(str(failure.value), "OSError: connection refused")
        text = "\n".join(formatEvent(e) for e in logged)
        self.assertIn("Traceback (most recent call last)", text)
        self.assertIn('raise OSError("connection refused")', text)

    def test_startup_failed_with_a_traceback(self) -> None:
        """
        Starlette sends the whole traceback as the message: the one-line
        reason is its last line (the exception), the log has all of it.
        """
        message = (
            "Traceback (most recent call last):\n"
            '  File "app.py", line 3, in startup\n'
            "    connect()\n"
            "ValueError: no database\n"
        )

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.startup.failed", "message": message})

        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        failure = self.failureResultOf(
            self.run_deferred(Lifespan(app, self.loop).startup()), LifespanFailed
        )
        self.assertEqual(str(failure.value), "ValueError: no database")
        self.assertEqual(failure.value.message, message)
        self.assertIn(message, "\n".join(formatEvent(e) for e in logged))

    def test_task_ended_after_startup(self) -> None:
        """
        An app whose lifespan returns right after startup: its shutdown
        fires at once, with no error logged (as uvicorn).
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.startup.complete"})

        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        lifespan = Lifespan(app, self.loop)
        self.successResultOf(self.run_deferred(lifespan.startup()))
        self.assertIsNone(self.successResultOf(self.run_deferred(lifespan.shutdown())))
        self.assertEqual([e for e in logged if e.get("log_level") == LogLevel.error], [])

    def test_task_raised_after_startup(self) -> None:
        """
        A lifespan that raises after startup is logged when it does; its
        shutdown then fires at once.
        """
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.startup.complete"})
            raise RuntimeError("pool died")

        lifespan = Lifespan(app, self.loop)
        self.successResultOf(self.run_deferred(lifespan.startup()))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(self.successResultOf(self.run_deferred(lifespan.shutdown())))

    def test_never_answers(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await asyncio.get_running_loop().create_future()

        started = self.run_deferred(Lifespan(app, self.loop).startup())
        self.assertNoResult(started)
        started.cancel()
        settle(self.loop)
        self.failureResultOf(started)


async def asgi3(scope: Any, receive: Any, send: Any) -> None:
    pass


class ClassifyTests(SynchronousTestCase):
    """
    A config's app: ASGI is told apart from a resource and WSGI.
    """

    where = "g.toml: servers.s.app"

    def test_asgi_function(self) -> None:
        self.assertEqual(classify_app(asgi3, self.where, "m:asgi3"), ("asgi", asgi3))

    def test_asgi_instance_and_factory(self) -> None:
        app = Recorder()
        self.assertEqual(classify_app(app, self.where, "m:a"), ("asgi", app))
        self.assertEqual(classify_app(lambda: app, self.where, "m:f"), ("asgi", app))

    def test_three_arguments_not_async(self) -> None:
        def three(a: Any, b: Any, c: Any) -> None:
            pass

        error = self.assertRaises(ConfigError, classify_app, three, self.where, "m:three")
        self.assertEqual(
            str(error),
            "g.toml: servers.s.app: 'm:three' is not a twisted.web resource, a WSGI app, "
            "an ASGI app, or a zero-argument factory of one (it is function)",
        )


class FakeLifespan:
    """
    A lifespan whose startup and shutdown the test fires.
    """

    def __init__(self) -> None:
        self.started: Deferred[None] = Deferred()
        self.stopped: Deferred[None] = Deferred()
        self.shutdowns = 0

    def startup(self) -> Deferred[None]:
        return self.started

    def shutdown(self) -> Deferred[None]:
        self.shutdowns += 1
        return self.stopped


class LifespanRuntimeTests(_RuntimeCase):
    """
    The process reports ready only once its apps started, fails to start
    when one does not, and runs their shutdown once drained.
    """

    def setUp(self) -> None:
        super().setUp()
        self.lifespan = FakeLifespan()
        self.runtime.lifespans.append(self.lifespan)
        self.exits = self.environment.exits
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_ready_after_startup(self) -> None:
        self.runtime.serving_started()
        self.assertFalse(self.runtime.apps_started)
        self.lifespan.started.callback(None)
        self.assertTrue(self.runtime.apps_started)

    def test_signals_during_a_slow_startup(self) -> None:
        """
        The signals are handled from the start: a SIGTERM while the apps
        start drains and exits, rather than killing the process outright.
        """
        self.runtime.serving_started()
        self.environment.send_signal(signal.SIGTERM)
        self.reactor.advance(0)
        self.assertTrue(self.runtime.draining)
        self.assertEqual(self.lifespan.shutdowns, 1)
        self.lifespan.stopped.callback(None)
        self.assertTrue(self.exited)
        self.lifespan.started.callback(None)  # late: nothing is reported
        self.assertFalse(self.runtime.apps_started)

    def test_startup_failure_exits_1(self) -> None:
        self.runtime.serving_started()
        self.lifespan.started.errback(LifespanFailed("no database"))
        self.assertEqual(self.exits, [1])
        self.assertEqual(
            self.stderr.getvalue(), "graceful: error: ASGI lifespan startup failed: no database\n"
        )

    def test_startup_failure_reported_to_the_old_process(self) -> None:
        """
        A new generation whose app fails to start tells the old process
        why: the reason its failed restart is reported with.
        """
        old = FakeOldProcess()
        self.runtime.old_process = old
        self.runtime.serving_started()
        self.lifespan.started.errback(LifespanFailed("no database"))
        self.assertEqual(old.reported, ["error ASGI lifespan startup failed: no database"])
        self.assertEqual(self.exits, [1])

    def test_startup_timeout(self) -> None:
        self.runtime.settings.ready_timeout = 5
        self.runtime.serving_started()
        self.reactor.advance(4.9)
        self.assertEqual(self.exits, [])
        self.reactor.advance(0.2)
        self.assertEqual(self.exits, [1])
        self.assertIn("did not finish within ready_timeout (5s)", self.stderr.getvalue())

    def test_shutdown_once_drained(self) -> None:
        self.serve("s1", 8100, 10)
        self.runtime.serving_started()
        self.lifespan.started.callback(None)
        self.runtime.shutdown()
        self.assertEqual(self.lifespan.shutdowns, 1)
        self.assertFalse(self.exited)
        self.lifespan.stopped.callback(None)
        self.assertTrue(self.exited)
        self.assertEqual(self.lifespan.shutdowns, 1)


    def test_shutdown_cut_at_drain_timeout(self) -> None:
        """
        A lifespan shutdown that does not finish within drain_timeout is cut
        there, and the log says so.
        """
        self.runtime.settings.drain_timeout = 5
        self.serve("s1", 8100, 10)
        self.runtime.serving_started()
        self.lifespan.started.callback(None)
        self.runtime.shutdown()
        self.reactor.advance(4.9)
        self.assertFalse(self.exited)
        self.reactor.advance(0.2)
        self.assertTrue(self.exited)
        self.assertLogged(
            f"{self.runtime.pid}: ASGI lifespan shutdown did not finish within drain_timeout"
        )

class WrongReactorTests(SynchronousTestCase):
    """
    An ASGI app when another reactor is installed already (as in this test
    process): one line saying what to do.
    """

    def test_config(self) -> None:
        import twisted.internet.reactor  # noqa: F401  (installed, not asyncio)

        from graceful._config import apply_config, parse_config
        from graceful.process.runtime import Runtime

        config = parse_config(
            {"servers": {"web": {"app": "tests.unit.asgi.test_resource:asgi3", "ports": [0]}}}, Path("g.toml")
        )
        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=1)
        error = self.assertRaises(ConfigError, apply_config, config, runtime)
        self.assertEqual(
            str(error),
            "g.toml: servers.web.app: ASGI apps need Twisted's asyncio reactor, but "
            "twisted.internet.reactor was imported before this app (by an app listed "
            "above, or twistd -r): list the ASGI servers first",
        )
