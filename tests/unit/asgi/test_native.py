"""
ASGI apps on the native HTTP/1.1 channel (L{graceful.asgi.native}): the
scope, the body streamed both ways with back pressure, trailers, errors
before and after the response started, and the drain; on an asyncio loop
driven by hand and a native site over an in-memory transport.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from graceful.asgi.native import NativeASGI
from graceful.asgi.resource import BODY_BUFFER, Lifespan
from graceful._settings import Settings
from graceful.http.native_site import NativeSite, prefix_dispatch
from graceful.http.proxy import site_root
from graceful.http.site_choice import native_front
from graceful.http.routing import Router

from .test_resource import BridgeFlowTests, Recorder, settle


class Harness:
    """
    One connection to a native site serving C{app} at C{prefix}.
    """

    def __init__(self, test: SynchronousTestCase, app: Any, prefix: str = "",
                 access_log: Any = None, peer: Any = None, front: Any = None) -> None:
        self.loop = asyncio.new_event_loop()
        test.addCleanup(self.loop.close)
        self.lifespan = Lifespan(app, self.loop)
        glue = NativeASGI(app, prefix, self.lifespan, self.loop)
        self.clock = Clock()
        self.site = NativeSite(
            Router(), prefix_dispatch([(prefix.encode(), front(glue) if front else glue)]),
            reactor=self.clock, access_log=access_log,
        )
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8100),
            peerAddress=peer or IPv4Address("TCP", "10.0.0.7", 51000),
        )
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """
        C{data} arrives, read in a callback of the running loop as the
        asyncio reactor reads.
        """
        errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: errors.append(context))
        self.loop.call_soon(self.channel.dataReceived, data)
        settle(self.loop)
        self.loop.set_exception_handler(None)
        for context in errors:
            raise AssertionError(context.get("message")) from context.get("exception")
        return self.transport.value()


class ScopeTests(SynchronousTestCase):
    def test_fields(self) -> None:
        app = Recorder()
        harness = Harness(self, app)
        harness.lifespan.state["db"] = "x"
        harness.send(b"GET /a%20b?q=1 HTTP/1.1\r\nHost: h\r\nB: 1\r\nA: 2\r\nb: 3\r\n\r\n")
        [scope] = app.scopes
        self.assertEqual(scope["type"], "http")
        self.assertEqual(scope["asgi"], {"version": "3.0", "spec_version": "2.3"})
        self.assertEqual((scope["http_version"], scope["method"], scope["scheme"]), ("1.1", "GET", "http"))
        self.assertEqual((scope["path"], scope["raw_path"], scope["query_string"]),
                         ("/a b", b"/a%20b", b"q=1"))
        self.assertEqual(scope["root_path"], "")
        self.assertEqual(scope["headers"], [(b"host", b"h"), (b"b", b"1"), (b"a", b"2"), (b"b", b"3")])
        self.assertEqual(scope["client"], ["10.0.0.7", 51000])
        self.assertEqual(scope["server"], ["127.0.0.1", 8100])
        self.assertEqual(scope["state"], {"db": "x"})
        self.assertIsNot(scope["state"], harness.lifespan.state)
        self.assertEqual(scope["extensions"], {"http.response.trailers": {}})

    def test_http10_has_no_trailers(self) -> None:
        app = Recorder()
        Harness(self, app).send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual((app.scopes[0]["http_version"], app.scopes[0]["extensions"]), ("1.0", {}))

    def test_unix_socket_has_no_addresses(self) -> None:
        app = Recorder()
        Harness(self, app, peer=UNIXAddress(None)).send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIsNone(app.scopes[0]["client"])

    def test_behind_a_trusted_proxy(self) -> None:
        """
        From a trusted peer (proxy_headers on), the client, scheme and Host
        the proxy forwarded, as twisted.web's path gives them; from another
        peer, the connection's own.
        """
        app = Recorder()
        request = (b"GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-For: 1.2.3.4\r\n"
                   b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: example.test\r\n\r\n")
        for allow in ("10.0.0.7", "127.0.0.1"):
            front = native_front(site_root(Router(), Settings(proxy_headers=True,
                                                              forwarded_allow_ips=[allow])))
            Harness(self, app, front=front).send(request)
        trusted, untrusted = app.scopes
        self.assertEqual((trusted["client"], trusted["scheme"], trusted["headers"][0]),
                         (["1.2.3.4", 0], "https", (b"host", b"example.test")))
        self.assertEqual((untrusted["client"], untrusted["scheme"], untrusted["headers"][0]),
                         (["10.0.0.7", 51000], "http", (b"host", b"inner")))

    def test_server_of_a_bound_port_read_once(self) -> None:
        """
        Connections accepted on a port bound to one address have that
        address as their C{server}, read once for the port rather than
        from each connection.
        """
        self.assertEqual(self.servers("127.0.0.1"), ([["127.0.0.1", 8100]] * 2, 1))

    def test_server_of_a_wildcard_port(self) -> None:
        """
        On a port bound to every address, each connection's C{server} is its
        own local address.
        """
        self.assertEqual(self.servers("0.0.0.0"), ([["127.0.0.1", 8100]] * 2, 2))

    def test_server_of_a_closed_port(self) -> None:
        """
        A connection whose port has closed since (a drain) is answered, its
        C{server} read from the connection.
        """
        self.assertEqual(self.servers(None), ([["127.0.0.1", 8100]] * 2, 2))

    def servers(self, bound: str | None) -> tuple[list[Any], int]:
        """
        The C{server} of two connections accepted on a port bound to
        C{bound}, and how many times a connection was asked its address.
        """
        asked: list[int] = []

        class Port:
            def getHost(self) -> IPv4Address:
                if bound is None:
                    raise AttributeError("'Port' object has no attribute 'socket'")
                return IPv4Address("TCP", bound, 8100)

        port = Port()

        class Accepted(StringTransport):
            server = port

            def getHost(self) -> Any:
                asked.append(1)
                return super().getHost()

        app = Recorder()
        harness = Harness(self, app)
        for _ in range(2):
            transport = Accepted(hostAddress=IPv4Address("TCP", "127.0.0.1", 8100),
                                 peerAddress=IPv4Address("TCP", "10.0.0.7", 51000))
            harness.channel = harness.site.buildProtocol(None)
            harness.channel.makeConnection(transport)
            harness.transport = transport
            harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        return [scope["server"] for scope in app.scopes], len(asked)

    def test_root_path_of_a_mount(self) -> None:
        app = Recorder()
        Harness(self, app, prefix="/api").send(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual((app.scopes[0]["path"], app.scopes[0]["root_path"]), ("/api/x", "/api"))


class FlowTests(BridgeFlowTests, SynchronousTestCase):
    def harness(self, app: Any, **options: Any) -> Any:
        return Harness(self, app, **options)

    def test_body_reaches_the_app_as_it_arrives(self) -> None:
        app = Recorder()
        harness = Harness(self, app)
        harness.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
        self.assertEqual(app.messages, [{"type": "http.request", "body": b"abc", "more_body": True}])
        response = harness.send(b"def")
        self.assertEqual(app.messages[-1], {"type": "http.request", "body": b"def", "more_body": False})
        self.assertTrue(response.startswith(b"HTTP/1.1 201 Created\r\nx-size: 6\r\n"))

    def test_streamed_response_is_chunked(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        response = Harness(self, app).send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertIn(b"transfer-encoding: chunked", head)
        self.assertNotIn(b"content-type", head.lower())
        self.assertEqual(body, b"4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n")

    def test_trailers(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
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

    def test_disconnect(self) -> None:
        messages: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            messages.append(await receive())
            messages.append(await receive())

        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.channel.connectionLost()
        settle(harness.loop)
        self.assertEqual(messages[-1], {"type": "http.disconnect"})
        self.assertEqual(harness.site.channels, set())

    def test_error_before_start_is_500(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise ValueError("boom")

        harness = Harness(self, app)
        response = harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "))
        self.assertTrue(response.endswith(b"Internal Server Error\n"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertFalse(harness.transport.disconnecting)

    def test_keep_alive_then_drain(self) -> None:
        app = Recorder()
        harness = Harness(self, app)
        harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertFalse(harness.transport.disconnecting)
        harness.transport.clear()
        harness.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.site.drain()
        settle(harness.loop)
        self.assertIn(b"connection: close", harness.transport.value())
        self.assertTrue(harness.transport.disconnecting)


class MemoryTests(SynchronousTestCase):
    def test_request_freed_without_the_cyclic_gc(self) -> None:
        """
        Once a request is answered and its app done, nothing of it is left
        in a reference cycle: it is freed at once, not by the garbage
        collector (whose collections cost a Connection: close request ~5 us).
        """
        class Marker:
            "Lives as long as the request's scope, which its cycle holds."

        cycles: list[weakref.ref[Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["marker"] = marker = Marker()
            cycles.append(weakref.ref(marker))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

        harness = Harness(self, app)
        gc.disable()
        self.addCleanup(gc.enable)
        for _ in range(2):
            harness.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(harness.transport.value().count(b"200 OK"), 2)
        self.assertEqual([cycle() for cycle in cycles], [None, None])
