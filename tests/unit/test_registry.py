"""
Unit tests for the public API of C{graceful} (C{graceful/__init__.py}):
named singletons on the process runtime, the process-wide settings and the
process's control.  A runtime on a L{MemoryReactorClock} stands in for the
process's own.  The servers it hands out are tested in
C{tests/unit/http/test_server.py}.
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import graceful as g
from graceful._errors import ConfigError
from graceful._process import reset_for_tests
from graceful.process.runtime import Runtime
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

    def test_set_preload(self) -> None:
        self.assertTrue(self.runtime.settings.preload)
        g.set_preload(False)
        self.assertFalse(self.runtime.settings.preload)
        error = self.assertRaises(ConfigError, g.set_preload, "no")  # type: ignore[arg-type]
        self.assertEqual(str(error), "preload must be true or false, not 'no'")

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

    def test_timeouts_refuse(self) -> None:
        """
        As the config keys: a timeout that is not a finite number above 0
        would make a restart or a drain that never ends (or never begins).
        """
        for bad in (0, -1, float("inf"), float("nan")):
            for setter, name in ((g.set_drain_timeout, "drain_timeout"),
                                 (g.set_ready_timeout, "ready_timeout")):
                error = self.assertRaises(ConfigError, setter, bad)
                self.assertEqual(str(error), f"{name} must be above 0 and finite, not {bad!r}")
        settings = self.runtime.settings
        self.assertEqual((settings.drain_timeout, settings.ready_timeout), (30.0, 15.0))

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


class AccessLogAndLimitTests(_Installed):
    """
    C{set_access_log()} and C{set_limit_concurrency()}: the C{access_log},
    C{access_log_format} and C{limit_concurrency} keys in code, as a
    server's site serves them.
    """

    def connection(self) -> Any:
        from .http.test_routing import HTTPConnection

        server = g.server("s1")
        if server.site is None:
            server.site = server._build_site()
            # As a port does: the log's date is kept from here on.
            server.site.doStart()
            self.addCleanup(server.site.doStop)
        return HTTPConnection(server.site)

    def test_access_log_file_in_json(self) -> None:
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        log = folder / "access.log"
        g.set_access_log(str(log), format="json")
        g.server("s1").route("/hello", lambda request: "hi")
        self.connection().request("/hello")
        [line] = log.read_text().splitlines()
        entry = json.loads(line)
        self.assertEqual((entry["method"], entry["path"], entry["status"]), ("GET", "/hello", 200))

    def test_access_log_off(self) -> None:
        g.set_access_log("-")
        self.assertIsNotNone(self.runtime.access_log())
        g.set_access_log(None)
        self.assertIsNone(self.runtime.access_log())

    def test_bad_access_log(self) -> None:
        for call, message in [
            (lambda: g.set_access_log("-", format="apache"),
             "access_log_format must be one of twisted, combined, json, not 'apache'"),
            (lambda: g.set_access_log("/nonexistent/dir/access.log"),
             "access_log: directory not found: /nonexistent/dir"),
            (lambda: g.set_access_log(1),  # type: ignore[arg-type]
             'access_log must be "-", a file path or None, not 1'),
        ]:
            self.assertEqual(str(self.assertRaises(ConfigError, call)), message)
        self.assertEqual((self.runtime.settings.access_log,
                          self.runtime.settings.access_log_format), (None, "twisted"))

    def test_limit_concurrency_answers_503_beyond_it(self) -> None:
        g.set_limit_concurrency(1)
        waiting: Deferred[str] = Deferred()
        g.server("s1").route("/slow", lambda request: waiting)
        first, second = self.connection(), self.connection()
        first.request("/slow")
        second.request("/slow")
        response = second.only_response()
        self.assertEqual((response.status, response.header("retry-after")), (503, "1"))
        self.assertEqual(first.responses(), [])

    def test_limit_concurrency_refusals_in_the_metrics(self) -> None:
        from graceful.admin.metrics import exposition

        g.set_limit_concurrency(1)
        g.server("s1").route("/slow", lambda request: Deferred())
        connections = [self.connection() for _ in range(3)]
        for connection in connections:
            connection.request("/slow")
        text = exposition(self.runtime, None)[0].decode()
        self.assertIn('graceful_refused_total{reason="limit_concurrency",server="s1"} 2.0', text)

    def test_bad_limit(self) -> None:
        for value in (-1, 1.5, True):
            error = self.assertRaises(ConfigError, g.set_limit_concurrency, value)
            self.assertEqual(str(error), f"limit_concurrency must be 0 (no limit) or more, not {value!r}")
        self.assertEqual(self.runtime.settings.limit_concurrency, 0)


class WSGIThreadsTests(_Installed):
    """
    C{set_wsgi_threads()}: the C{wsgi_threads} key in code.
    """

    def test_set(self) -> None:
        g.set_wsgi_threads(2)
        self.assertEqual(self.runtime.settings.wsgi_threads, 2)

    def test_bad(self) -> None:
        for value in (0, -1, 1.5, True, "4"):
            error = self.assertRaises(ConfigError, g.set_wsgi_threads, value)
            self.assertEqual(str(error),
                             f"wsgi_threads must be a whole number of 1 or more, not {value!r}")
        self.assertEqual(self.runtime.settings.wsgi_threads, 16)
