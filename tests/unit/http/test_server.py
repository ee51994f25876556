"""
Unit tests for L{graceful.http.server.Server} as C{graceful.server()} hands
it out: how its ports are declared, and the paths it serves, each at most
once.  A runtime on a L{MemoryReactorClock} stands in for the process's own.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

import graceful as g
from graceful._errors import ConfigError
from graceful.http.server import DEFAULT_ADMIN_PREFIX

from ..test_registry import _Installed


class ServerDeclarationTests(_Installed):
    """
    What a server is asked to serve, before it starts.
    """

    def specs(self, name: str = "s1") -> list[tuple[int, bool]]:
        return [(spec.port, spec.tls) for spec in g.server(name).listen_specs()]

    def test_ports(self) -> None:
        s1 = g.server("s1")
        s1.set_port(8100, 8200)
        self.assertEqual(self.specs(), [(8100, False), (8200, False)])
        self.assertEqual(s1.ports, [])  # nothing bound before start()

    def test_bad_ports(self) -> None:
        s1 = g.server("s1")
        s1.set_port(8100)
        for port in (65536, -1, True, "80", 80.0):
            self.assertRaises(ConfigError, s1.set_port, port)
            self.assertRaises(ConfigError, s1.set_https_port, port)
        self.assertEqual(self.specs(), [(8100, False)])

    def test_https_on_set_port_ports(self) -> None:
        """
        With HTTPS enabled and no HTTPS port, the set_port ports serve HTTPS.
        """
        s1 = g.server("s1")
        s1.set_port(8100)
        s1.enable_https("certs/server.crt", "certs/server.key")
        self.assertEqual(self.specs(), [(8100, True)])

    def test_http_and_https_ports(self) -> None:
        s1 = g.server("s1")
        s1.set_port(8100)
        s1.enable_https("c", "k")
        s1.set_https_port(8443, 0)
        self.assertEqual(self.specs(), [(8100, False), (8443, True), (0, True)])
        self.assertEqual(
            [spec.fd_name for spec in s1.listen_specs()],
            ["s1/http/8100/0", "s1/https/8443/0", "s1/https/0/1"],
        )

    def test_prepare_refuses_https_ports_without_certificate(self) -> None:
        s1 = g.server("s1")
        s1.set_https_port(8443)
        error = self.assertRaises(ConfigError, s1.prepare)
        self.assertIn("enable_https", str(error))

    def test_prepare_refuses_no_port(self) -> None:
        error = self.assertRaises(ConfigError, g.server("s1").prepare)
        self.assertIn("set_port", str(error))

    def test_admin(self) -> None:
        s1 = g.server("s1")
        s1.enable_admin()
        self.assertEqual((s1.admin_prefix, s1.admin_token), (DEFAULT_ADMIN_PREFIX, None))
        s1.enable_admin("/ops/", token="t")
        self.assertEqual((s1.admin_prefix, s1.admin_token), ("/ops", "t"))

    def test_graceful_default(self) -> None:
        s1 = g.server("s1")
        self.assertTrue(s1.graceful)
        s1.set_graceful(False)
        self.assertFalse(s1.graceful)

    def test_routes_and_mounts_reach_the_router(self) -> None:
        from .test_routing import get

        s1 = g.server("s1")

        @s1.route("/pid")
        def pid(request: Any) -> str:
            return "123"

        s1.route("/", lambda request: b"root")
        api = Resource()
        api.putChild(b"x", _Text(b"api x"))
        s1.mount("/api", api)
        self.assertEqual(pid(None), "123")
        self.assertEqual(get(s1.router, "/pid").body, b"123")
        self.assertEqual(get(s1.router, "/").body, b"root")
        self.assertEqual(get(s1.router, "/api/x").body, b"api x")


class SamePathTwiceTests(_Installed):
    """
    Two calls serving one path of a server: the second would silently take
    over the first, so it is a one-line ConfigError naming the server and
    the path, and the first goes on serving.
    """

    def assertRefused(self, first: Any, second: Any, message: str) -> None:
        first()
        error = self.assertRaises(ConfigError, second)
        self.assertEqual(str(error), message)
        self.assertNotIn("\n", str(error))

    def test_mount_twice(self) -> None:
        from .test_routing import get

        s1 = g.server("s1")
        self.assertRefused(
            lambda: s1.mount("/api", _Text(b"first")),
            lambda: s1.mount("/api/", _Text(b"second")),
            "server 's1': '/api' is served twice: by mount() and by mount()",
        )
        self.assertEqual(get(s1.router, "/api").body, b"first")

    def test_mount_then_wsgi_or_asgi(self) -> None:
        s1 = g.server("s1")
        s1.mount("/api", _Text(b"api"))
        for call, what in [(s1.mount_wsgi, "mount_wsgi()"), (s1.mount_asgi, "mount_asgi()")]:
            error = self.assertRaises(ConfigError, call, "/api", lambda *args: None)
            self.assertEqual(
                str(error), f"server 's1': '/api' is served twice: by mount() and by {what}"
            )

    def test_wsgi_twice(self) -> None:
        s1 = g.server("s1")
        self.assertRefused(
            lambda: s1.mount_wsgi("/legacy", lambda environ, start: []),
            lambda: s1.mount_wsgi("/legacy", lambda environ, start: []),
            "server 's1': '/legacy' is served twice: by mount_wsgi() and by mount_wsgi()",
        )

    def test_route_on_a_mounted_prefix(self) -> None:
        s2 = g.server("s2")
        self.assertRefused(
            lambda: s2.mount_wsgi("/", lambda environ, start: []),
            lambda: s2.route("/", lambda request: "root"),
            "server 's2': '/' is served twice: by mount_wsgi() and by route()",
        )

    def test_route_twice(self) -> None:
        s1 = g.server("s1")
        self.assertRefused(
            lambda: s1.route("/pid", lambda request: "1"),
            lambda: s1.route("/pid")(lambda request: "2"),
            "server 's1': '/pid' is served twice: by route() and by route()",
        )

    def test_other_servers_and_paths_are_free(self) -> None:
        """
        The same path on two servers, and a route under a mount, are fine.
        """
        g.server("s1").mount("/api", _Text(b"s1"))
        g.server("s2").mount("/api", _Text(b"s2"))
        g.server("s1").route("/api/health", lambda request: "ok")
        g.server("s1").mount("/api/v2", _Text(b"v2"))

    def test_health_page_over_an_app_path(self) -> None:
        """
        The health and admin pages join the router when the server starts:
        one on a path the app serves is refused before anything is bound.
        """
        s1 = g.server("s1")
        s1.set_port(0)
        s1.route("/healthz", lambda request: "app's own")
        s1.enable_health("/healthz")
        error = self.assertRaises(ConfigError, s1.prepare)
        self.assertEqual(
            str(error), "server 's1': '/healthz' is served twice: by route() and by enable_health()"
        )
        self.assertFalse(s1.has_prepared())

    def test_bad_path(self) -> None:
        error = self.assertRaises(ConfigError, g.server("s1").mount, "api", _Text(b""))
        self.assertEqual(
            str(error), "server 's1': mount() needs a path starting with '/', not 'api'"
        )


class _Text(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request: Any) -> bytes:
        return self.body


class ConnectionSettingsTests(_Installed):
    """
    The code calls of C{backlog}, C{timeout_keep_alive}, C{ws_max_size},
    C{ws_ping_interval} and C{http_impl}, and where a server uses them.
    """

    def test_backlog_of_the_sockets_bound(self) -> None:
        from graceful.http import listening

        backlogs: list[int] = []

        def bind(host: str, port: int, backlog: int = 0) -> Any:
            backlogs.append(backlog)
            return real(host, port, backlog)

        real = listening.bind_socket
        self.patch(listening, "bind_socket", bind)
        s1 = g.server("s1")
        s1.set_host("127.0.0.1")
        s1.set_port(0)
        s1.prepare()
        self.addCleanup(s1.release_prepared)
        g.set_backlog(77)
        s2 = g.server("s2")
        s2.set_host("127.0.0.1")
        s2.set_port(0)
        s2.prepare()
        self.addCleanup(s2.release_prepared)
        self.assertEqual(backlogs, [2048, 77])

    def test_keep_alive_reaches_the_site(self) -> None:
        g.set_timeout_keep_alive(2.5)
        s1 = g.server("s1")
        s1.route("/", lambda request: "hi")
        site = s1._build_site()
        self.assertEqual(site.keep_alive, 2.5)

    def test_websocket_options(self) -> None:
        g.set_websocket_options(max_size=1024)
        g.set_websocket_options(ping_interval=0)
        self.assertEqual(
            self.runtime.settings.websocket_options,
            {"maxMessagePayloadSize": 1024, "autoPingInterval": 0.0, "failByDrop": False},
        )

    def test_bad_values(self) -> None:
        for call, message in [
            (lambda: g.set_backlog(0), "backlog must be 1 or more, not 0"),
            (lambda: g.set_backlog(1.5), "backlog must be a whole number, not 1.5"),  # type: ignore[arg-type]
            (lambda: g.set_timeout_keep_alive(float("inf")),
             "timeout_keep_alive must be above 0 and finite, not inf"),
            (lambda: g.set_websocket_options(max_size=-1),
             "ws_max_size must be 0 (no limit) or more, not -1"),
            (lambda: g.set_websocket_options(ping_interval=-1),
             "ws_ping_interval must be 0 (off) or more, not -1"),
            (lambda: g.server("s1").set_http_impl("gevent"),
             "http_impl must be one of auto, twisted, native, httptools, h11, not 'gevent'"),
        ]:
            error = self.assertRaises(ConfigError, call)
            self.assertEqual(str(error), message)
        settings = self.runtime.settings
        self.assertEqual((settings.backlog, settings.timeout_keep_alive), (2048, 5.0))

    def test_http_impl(self) -> None:
        s1 = g.server("s1")
        self.assertEqual(s1.http_impl, "auto")
        s1.set_http_impl("twisted")
        self.assertEqual(s1.http_impl, "twisted")


class AcceptAtMostTests(SynchronousTestCase):
    """
    A port accepts at most so many connections per wakeup, whatever batch
    Twisted's port has grown to.
    """

    def test_each_wakeup(self) -> None:
        from graceful.http.listening import accept_at_most

        class Port:
            numberAccepts = 100
            seen: list[int] = []

            def doRead(self) -> None:
                self.seen.append(self.numberAccepts)
                self.numberAccepts += 20  # as Twisted grows it after a full batch

        port = Port()
        accept_at_most(port, 4)
        port.doRead()
        port.doRead()
        self.assertEqual(port.seen, [4, 4])


class AdoptAcceptsTests(SynchronousTestCase):
    """
    The accept batch a server's ports get: what the server asks for serving
    alone (its ASGI apps' cap), always 1 in a worker.
    """

    def adopted(self, is_worker: bool, accepts: int | None) -> int:
        import socket as _socket

        from graceful._sockets import HeldSocket, ListenSpec
        from graceful.http.listening import ServerSockets

        class Port:
            numberAccepts = 100

            def doRead(self) -> None:
                pass

            def stopReading(self) -> None:
                pass

            def getHost(self) -> Any:
                from twisted.internet.address import IPv4Address

                return IPv4Address("TCP", "127.0.0.1", 8100)

        port = Port()

        class Reactor:
            def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Port:
                return port

        class Host:
            reactor = Reactor()
            pid = 1
            generation = 1

        host = Host()
        host.is_worker = is_worker  # type: ignore[attr-defined]

        class Owner:
            def close(self) -> None:
                pass

        sockets = ServerSockets("s1", host)  # type: ignore[arg-type]
        sockets.prepared.append(
            HeldSocket(ListenSpec("s1", False, 8100), 41, Owner(), _socket.AF_INET)
        )
        sockets.adopt(object(), None, 0o660, None, hold=False, accepts=accepts)
        port.doRead()
        return port.numberAccepts

    def test_asgi_cap(self) -> None:
        self.assertEqual(self.adopted(False, 4), 4)

    def test_twisted_batch(self) -> None:
        self.assertEqual(self.adopted(False, None), 100)

    def test_worker_takes_one(self) -> None:
        self.assertEqual(self.adopted(True, 4), 1)
        self.assertEqual(self.adopted(True, None), 1)
