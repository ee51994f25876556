"""
Unit tests for the public API of C{graceful} (C{graceful/__init__.py}) and
the L{Server} it hands out: named singletons on the process runtime, the
process-wide settings, and how a server's ports are declared.  A runtime on
a L{MemoryReactorClock} stands in for the process's own.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

import graceful as g
from graceful._errors import ConfigError
from graceful._process import reset_for_tests
from graceful.process.runtime import Runtime
from graceful.http.server import DEFAULT_ADMIN_PREFIX
from graceful.handoff.supervision import NoPidfile, Pidfile

from graceful.testing import MemoryEnvironment

_runtime_module = importlib.import_module("graceful.process.runtime")


class _Installed(SynchronousTestCase):
    """
    A fresh process runtime for each test, the previous one put back after.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.environment = MemoryEnvironment()
        self.runtime = Runtime(
            self.reactor, {}, 123, arguments=["app.py"], environment=self.environment
        )
        previous = reset_for_tests(self.runtime)
        self.addCleanup(reset_for_tests, previous)


class RegistryTests(_Installed):
    """
    C{graceful.server(name)}: one server per name, everywhere in the
    process.
    """

    def test_named_singleton(self) -> None:
        s1 = g.server("s1")
        self.assertIs(g.server("s1"), s1)
        self.assertIsNot(g.server("s2"), s1)
        self.assertEqual((s1.name, g.server("s2").name), ("s1", "s2"))
        self.assertIs(s1.runtime, self.runtime)
        self.assertEqual(list(self.runtime.servers), ["s1", "s2"])

    def test_default_name(self) -> None:
        self.assertIs(g.server(), g.server("default"))
        self.assertEqual(g.server().name, "default")

    def test_bad_names(self) -> None:
        for name in ("", "a:b", "a/b", "tab\there"):
            self.assertRaises(ConfigError, g.server, name)
        self.assertEqual(self.runtime.servers, {})

    def test_fresh_runtime_fresh_servers(self) -> None:
        s1 = g.server("s1")
        reset_for_tests(Runtime(reactor=MemoryReactorClock(), environ={}, pid=1))
        self.assertIsNot(g.server("s1"), s1)

    def test_exports(self) -> None:
        for name in g.__all__:
            self.assertTrue(hasattr(g, name), name)
        self.assertTrue(issubclass(g.RestartFailed, Exception))


class SettingsTests(_Installed):
    """
    The process-wide settings set from code.
    """

    def test_set_workers(self) -> None:
        g.set_workers(4)
        self.assertEqual(self.runtime.settings.workers, 4)

    def test_set_workers_refuses(self) -> None:
        for count in (0, -1, True, 1.5, "2", None):
            error = self.assertRaises(ConfigError, g.set_workers, count)  # type: ignore[arg-type]
            self.assertIn(repr(count), str(error))
        self.assertEqual(self.runtime.settings.workers, 1)

    def test_worker_limits(self) -> None:
        g.set_max_requests(1000, jitter=50)
        g.set_max_worker_memory(512)
        g.set_worker_timeout(3)
        settings = self.runtime.settings
        self.assertEqual(
            (settings.max_requests, settings.max_requests_jitter, settings.max_worker_memory),
            (1000, 50, 512),
        )
        self.assertEqual(settings.worker_timeout, 3)

    def test_worker_limits_refuse(self) -> None:
        for bad in (-1, True, "2", None):
            for setter, name in (
                (g.set_max_requests, "max_requests"),
                (lambda v: g.set_max_requests(10, jitter=v), "max_requests_jitter"),
                (g.set_max_worker_memory, "max_worker_memory"),
                (g.set_worker_timeout, "worker_timeout"),
            ):
                error = self.assertRaises(ConfigError, setter, bad)
                self.assertIn(name, str(error))
                self.assertIn(repr(bad), str(error))
        settings = self.runtime.settings
        self.assertEqual((settings.max_requests, settings.worker_timeout), (0, 30))

    def test_timeouts(self) -> None:
        g.set_drain_timeout(3)
        g.set_ready_timeout(2)
        settings = self.runtime.settings
        self.assertEqual((settings.drain_timeout, settings.ready_timeout), (3.0, 2.0))
        self.assertIsInstance(settings.drain_timeout, float)

    def test_set_directory(self) -> None:
        g.set_directory(Path("/srv/app/current"))  # type: ignore[arg-type]
        self.assertEqual(self.runtime.settings.directory, "/srv/app/current")

    def test_set_pidfile(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="graceful-registry-"))
        self.addCleanup(shutil.rmtree, folder, True)
        g.set_pidfile(str(folder / "app.pid"))
        self.assertEqual(self.runtime.pidfile, Pidfile(folder / "app.pid"))
        g.set_pidfile(None)
        self.assertIsInstance(self.runtime.pidfile, NoPidfile)

    def test_add_service_and_on_drain(self) -> None:
        service = Service()
        g.add_service(service)
        self.assertEqual(list(self.runtime.services), [service])
        callback = lambda: None  # noqa: E731
        g.on_drain(callback)
        self.assertEqual(self.runtime.core.drain_callbacks, [callback])


class ProcessControlTests(_Installed):
    """
    C{graceful.restart} and C{graceful.shutdown} act on the process; the
    program itself may restart into any executable.
    """

    def setUp(self) -> None:
        super().setUp()
        self.spawner = self.environment.spawner

    def test_restart_is_trusted(self) -> None:
        self.runtime.settings.allowed_executables = []
        result = g.restart("/opt/next/app")
        self.assertEqual(self.spawner.calls[0]["command"], ["/opt/next/app", "app.py"])
        self.spawner.last.report_ready()
        self.assertEqual(self.successResultOf(result), self.spawner.last.pid)

    def test_server_restart(self) -> None:
        result = g.server("s1").restart()
        self.assertEqual(len(self.spawner.calls), 1)
        self.spawner.last.report_ready()
        self.successResultOf(result)

    def test_shutdown(self) -> None:
        self.successResultOf(g.shutdown())
        self.assertTrue(self.reactor.hasStopped)
        self.assertTrue(self.runtime.draining)

    def test_server_shutdown(self) -> None:
        self.successResultOf(g.server("s1").shutdown())
        self.assertTrue(self.reactor.hasStopped)


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
        from .http.test_routing import get

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
        from .http.test_routing import get

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


class WorkersAfterStartTests(SynchronousTestCase):
    """
    set_workers() after a server started would turn a serving process into
    a master halfway: refused with a clear error.
    """

    def test_set_workers_after_start_is_refused(self) -> None:
        import graceful
        from graceful._process import reset_for_tests
        from graceful.process.runtime import Runtime
        from twisted.internet.testing import MemoryReactorClock

        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=123)
        previous = reset_for_tests(runtime)
        self.addCleanup(reset_for_tests, previous)
        server = graceful.server("web")
        server.set_host("127.0.0.1")
        server.set_port(0)
        server.prepare()
        self.addCleanup(server.release_prepared)
        with self.assertRaises(graceful.ConfigError) as caught:
            graceful.set_workers(2)
        self.assertIn("before the first start()", str(caught.exception))
