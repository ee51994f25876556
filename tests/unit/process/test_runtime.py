"""
Unit tests for the lifecycle of L{graceful.process.runtime.Runtime}: restart,
hand over, fail and go on serving, shut down, drain, pidfile and sd_notify,
all on a L{MemoryReactorClock} with a fake new process in place of a real one.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from graceful.http.site import IDLE_GRACE, handover_idle_grace
from graceful._errors import ExecutableNotAllowed, RestartRefused
from graceful.handoff.pipes import PassedSocket, RestartFailed
from graceful.handoff.messages import Accepted, Released, Retire
from graceful.process.runtime import PIDFILE_VARIABLE, Runtime
from graceful.http.server import Listener, Server
from graceful._sockets import InheritedSocket, InheritedSockets, ListenSpec
from graceful.handoff.supervision import NoPidfile, SystemdNotifier
from graceful.testing import FakeNewProcess, FakeOldProcess, FakePort, FakeSpawner, MemoryEnvironment

from ..http.test_site import App
from ..http.test_routing import HTTPConnection

# Not "from graceful import _runtime": graceful/__init__.py binds that name
# to graceful._process.runtime, a function, which hides the module.
_runtime = importlib.import_module("graceful.process.runtime")
_environment = importlib.import_module("graceful.handoff.environment")

PID = 123
NEW_PID = 456
OLD_PID = 77
INTERPRETER = ["/usr/bin/python3", "-X", "dev"]
ARGUMENTS = ["app.py", "--flag"]
CWD = "/srv/app"



# -- fakes ---------------------------------------------------------------------


@define
class FakeParentDeathSignal:
    """
    Stands for L{graceful.handoff.supervision.ParentDeathSignal}: records what was
    armed; the test says who our parent is.
    """

    parent: int = OLD_PID
    armed: list[int] = field(factory=list)

    def arm(self, signum: int) -> bool:
        self.armed.append(signum)
        return True

    def parent_pid(self) -> int:
        return self.parent


class StoppableService(Service):
    """
    A service whose stop the test finishes.
    """

    def __init__(self) -> None:
        self.stopping: Deferred[None] | None = None

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.stopping = Deferred()
        return self.stopping


class ThreadedMemoryReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} runs on its next turn.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.callLater(0, f, *args, **kwargs)


# -- the base ------------------------------------------------------------------


class _RuntimeCase(SynchronousTestCase):
    """
    A runtime on a memory reactor, with the spawn replaced and the log kept.
    """

    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactor()
        self.reactor.running = True
        self.environment = MemoryEnvironment(spawner=FakeSpawner(next_pid=NEW_PID))
        self.spawner = self.environment.spawner
        self.runtime = self.make_runtime()
        self.log: list[str] = []
        observer = lambda event: self.log.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def make_runtime(self, **kwargs: Any) -> Runtime:
        return Runtime(
            self.reactor,
            {"PATH": "/bin"},
            PID,
            interpreter=list(INTERPRETER),
            arguments=list(ARGUMENTS),
            cwd=CWD,
            forward_stderr=lambda data: None,
            environment=self.environment,
            **kwargs,
        )

    @property
    def signal_handlers_installed(self) -> int:
        return 1 if signal.SIGUSR1 in self.environment.handlers else 0

    def temp_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="graceful-life-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def assertLogged(self, line: str) -> None:
        self.assertIn(line, self.log)

    def assertLoggedPart(self, fragment: str) -> None:
        self.assertTrue(
            any(fragment in line for line in self.log), f"{fragment!r} not in {self.log!r}"
        )

    @property
    def exited(self) -> bool:
        return bool(self.reactor.hasStopped)

    def serve(
        self, name: str, port: int, fd: int, graceful: bool = True
    ) -> tuple[Server, App, FakePort]:
        """
        A server as if started: a draining site and a listening port.
        """
        from graceful.http.site import DrainingSite

        server = self.runtime.server(name)
        server.set_port(port)
        server.set_graceful(graceful)
        app = App()
        server.site = DrainingSite(app, server_name=name, reactor=self.reactor)
        fake = FakePort(fd, port)
        server.listeners.append(Listener(ListenSpec(name, False, port), fake))  # type: ignore[arg-type]
        return server, app, fake

    def restart_and_fail(self, reason: str = "boom") -> Deferred[int]:
        result = self.runtime.restart()
        self.spawner.last.report_failure(reason)
        self.failureResultOf(result, RestartFailed)
        return result


# -- the tests -----------------------------------------------------------------


class RestartTests(_RuntimeCase):
    """
    restart -> ready -> hand over and exit; one restart at a time; a failed
    restart leaves the process serving, ready for the next one.
    """

    def test_restart_starts_new_process(self) -> None:
        self.runtime.settings.ready_timeout = 7.0
        result = self.runtime.restart()
        [call] = self.spawner.calls
        self.assertEqual(call["command"], INTERPRETER + ARGUMENTS)
        self.assertEqual(call["cwd"], CWD)
        self.assertEqual(call["generation"], 2)
        self.assertEqual(call["ready_timeout"], 7.0)
        self.assertIs(call["environ"], self.runtime.environ)
        self.assertEqual(call["sockets"], [])
        self.assertNoResult(result)
        self.assertTrue(self.runtime.restarting)
        self.assertFalse(self.runtime.draining)
        self.assertFalse(self.exited)
        self.assertLogged(f"{PID}: server reloading")

    def test_restart_enters_directory(self) -> None:
        self.runtime.settings.directory = "/srv/app/current"
        self.runtime.restart()
        self.assertEqual(self.spawner.calls[0]["cwd"], "/srv/app/current")

    def test_ready_hands_over_and_exits(self) -> None:
        result = self.runtime.restart()
        self.reactor.advance(2.5)
        self.spawner.last.report_ready()
        self.assertEqual(self.successResultOf(result), NEW_PID)
        self.assertTrue(self.runtime.draining)
        self.assertFalse(self.runtime.restarting)
        record = self.runtime.core.history.last
        assert record is not None
        self.assertEqual((record.ok, record.error, record.handoff_seconds), (True, None, 2.5))
        self.assertEqual((self.runtime.core.history.restarts, self.runtime.core.history.failed_restarts), (1, 0))
        [accepted] = self.spawner.last.accepted
        self.assertEqual(
            (accepted.restarts, accepted.failed_restarts, accepted.handoff_seconds),
            (1, 0, 2.5),
        )
        self.assertEqual(self.spawner.last.releases, 1)
        self.assertTrue(self.exited)
        self.assertLogged(f"{PID}: all servers shutdown")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.successResultOf(self.runtime.shutdown())  # already gone

    def test_restart_refused_while_one_runs(self) -> None:
        first = self.runtime.restart()
        second = self.runtime.restart()
        failure = self.failureResultOf(second, RestartRefused)
        self.assertIn("already running", str(failure.value))
        self.assertEqual(len(self.spawner.calls), 1)
        self.assertLoggedPart("restart refused")
        self.spawner.last.report_ready()
        self.assertEqual(self.successResultOf(first), NEW_PID)

    def test_restart_refused_while_leaving(self) -> None:
        self.runtime.settings.drain_timeout = 5
        _, app, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(self.runtime.servers["s1"].site)
        connection.request("/slow")
        self.runtime.shutdown()
        failure = self.failureResultOf(self.runtime.restart(), RestartRefused)
        self.assertIn("shutting down", str(failure.value))
        self.assertEqual(self.spawner.calls, [])

    def test_failed_restart_goes_on_serving(self) -> None:
        result = self.runtime.restart()
        process = self.spawner.last
        process.report_failure(
            f"new process {NEW_PID} exited with status 1: boom", "Traceback\nValueError: boom"
        )
        failure = self.failureResultOf(result, RestartFailed)
        reason = f"new process {NEW_PID} exited with status 1: boom"
        self.assertEqual(str(failure.value), reason)
        record = self.runtime.core.history.last
        assert record is not None
        self.assertEqual((record.ok, record.error), (False, reason))
        self.assertEqual((self.runtime.core.history.restarts, self.runtime.core.history.failed_restarts), (0, 1))
        self.assertEqual(process.kills, 1)
        self.assertFalse(self.runtime.restarting)
        self.assertFalse(self.runtime.draining)
        self.assertFalse(self.exited)
        self.assertLogged(f"{PID}: restart failed, still serving: {reason}")
        self.assertLogged(f"{PID}: new process stderr:\nTraceback\nValueError: boom")

    def test_restart_after_failure(self) -> None:
        self.restart_and_fail()
        result = self.runtime.restart()
        self.assertEqual(len(self.spawner.calls), 2)
        self.assertEqual(self.spawner.calls[1]["generation"], 2)
        self.spawner.last.report_ready()
        self.assertEqual(self.successResultOf(result), NEW_PID + 1)
        self.assertEqual((self.runtime.core.history.restarts, self.runtime.core.history.failed_restarts), (1, 1))
        self.assertEqual(self.spawner.last.accepted[0].failed_restarts, 1)
        self.assertTrue(self.exited)

    def test_spawn_error(self) -> None:
        self.spawner.error = OSError("No such file or directory")
        result = self.runtime.restart()
        self.reactor.advance(0)
        failure = self.failureResultOf(result, RestartFailed)
        self.assertEqual(
            str(failure.value), "cannot start new process: No such file or directory"
        )
        self.assertFalse(self.runtime.restarting)
        self.spawner.error = None
        self.runtime.restart()
        self.assertEqual(len(self.spawner.processes), 1)

    def test_shutdown_during_restart(self) -> None:
        restarted = self.runtime.restart()
        process = self.spawner.last
        shut = self.runtime.shutdown()
        self.assertGreaterEqual(process.kills, 1)
        failure = self.failureResultOf(restarted, RestartFailed)
        self.assertIn("shutdown", str(failure.value))
        self.successResultOf(shut)
        self.assertTrue(self.exited)
        self.assertEqual(process.releases, 0)
        self.assertLogged(f"{PID}: server shutting down")
        self.assertLogged(f"{PID}: all servers shutdown")

    def test_shutdown_twice(self) -> None:
        self.runtime.settings.drain_timeout = 5
        self.serve("s1", 8100, 41)
        connection = HTTPConnection(self.runtime.servers["s1"].site)
        connection.request("/slow")
        first, second = self.runtime.shutdown(), self.runtime.shutdown()
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.reactor.advance(5)
        self.reactor.advance(0)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.log.count(f"{PID}: server shutting down"), 1)


class ExecutableTests(_RuntimeCase):
    """
    What a restart may execute: the same command line, anything the program
    itself asks for, and from outside only C{allowed_executables}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.folder = self.temp_dir()
        self.allowed = self.folder / "release-2" / "app"
        self.allowed.parent.mkdir()
        self.allowed.write_text("#!/bin/sh\n")
        self.link = self.folder / "current"
        self.link.symlink_to(self.allowed)
        self.runtime.settings.allowed_executables = [str(self.allowed)]

    def test_check_executable(self) -> None:
        """
        What is run is the allowed entry as the operator wrote it, even when
        the request named it another way.
        """
        self.assertEqual(self.runtime.check_executable(str(self.allowed)), str(self.allowed))
        self.assertEqual(self.runtime.check_executable(str(self.link)), str(self.allowed))
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, "/usr/bin/evil"
        )
        self.assertIn("'/usr/bin/evil'", str(error))

    def test_nothing_allowed_by_default(self) -> None:
        self.runtime.settings.allowed_executables = []
        self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(self.allowed))

    def test_untrusted_restart_refused(self) -> None:
        result = self.runtime.restart("/usr/bin/evil", trusted=False)
        self.failureResultOf(result, ExecutableNotAllowed)
        self.assertEqual(self.spawner.calls, [])
        self.assertFalse(self.runtime.restarting)
        self.runtime.restart()
        self.assertEqual(len(self.spawner.calls), 1)

    def test_untrusted_restart_allowed(self) -> None:
        self.runtime.restart(str(self.link), trusted=False)
        self.assertEqual(self.spawner.calls[0]["command"], [str(self.allowed), *ARGUMENTS])

    def test_swapped_link_runs_the_allowed_file(self) -> None:
        """
        A client's link that names the allowed file at the check and is
        swapped to another script right after: the allowed file is what
        runs, never the link.
        """
        other = self.folder / "evil"
        other.write_text("#!/bin/sh\n")
        chosen = self.runtime.check_executable(str(self.link))
        self.link.unlink()
        self.link.symlink_to(other)
        self.assertEqual(chosen, str(self.allowed))
        self.assertNotEqual(os.path.realpath(chosen), os.path.realpath(self.link))
        self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(self.link))

    def test_allowed_file_others_may_change(self) -> None:
        """
        An allowed file, or its folder, that group or others may write is
        refused, saying which and why.
        """
        self.allowed.chmod(0o775)
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, str(self.allowed)
        )
        self.assertIn(f"file {self.allowed} is writable by group or others", str(error))
        self.allowed.chmod(0o755)
        self.allowed.parent.chmod(0o777)
        self.addCleanup(self.allowed.parent.chmod, 0o755)
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, str(self.link)
        )
        self.assertIn(f"folder {self.allowed.parent} is writable", str(error))
        self.allowed.parent.chmod(0o755)
        self.assertEqual(self.runtime.check_executable(str(self.link)), str(self.allowed))

    def test_allowed_link_in_a_writable_folder(self) -> None:
        """
        An allowed entry that is a link is as safe as the folder holding
        it: anyone who may write there may swap it.
        """
        shared = self.folder / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        self.addCleanup(shared.chmod, 0o755)
        link = shared / "current"
        link.symlink_to(self.allowed)
        self.runtime.settings.allowed_executables = [str(link)]
        error = self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(link))
        self.assertIn(f"folder {shared} is writable", str(error))

    def test_allowed_file_of_another_user(self) -> None:
        real_stat = os.stat

        def stat(path: Any, *args: Any, **kw: Any) -> Any:
            result = real_stat(path, *args, **kw)
            if str(path) == str(self.allowed):
                return os.stat_result((result.st_mode, 0, 0, 1, 4321, 0, 0, 0, 0, 0))
            return result

        self.patch(os, "stat", stat)
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, str(self.allowed)
        )
        self.assertIn("belongs to uid 4321", str(error))

    def test_trusted_restart_runs_anything(self) -> None:
        self.runtime.restart("/opt/other/app", trusted=True)
        self.assertEqual(self.spawner.calls[0]["command"], ["/opt/other/app", *ARGUMENTS])

    def test_python_script(self) -> None:
        self.runtime.restart("/srv/app/release-2/app.py", trusted=True)
        self.assertEqual(
            self.spawner.calls[0]["command"],
            [sys.executable, "/srv/app/release-2/app.py", *ARGUMENTS],
        )


class DrainTests(_RuntimeCase):
    """
    Leaving: stop accepting, answer what is in flight, exit when nothing is
    left or at C{drain_timeout}.
    """

    def test_sockets_passed_to_new_process(self) -> None:
        _, _, port1 = self.serve("s1", 8100, 41)
        _, _, port2 = self.serve("s2", 8300, 42, graceful=False)
        self.runtime.restart()
        self.assertEqual(
            self.spawner.calls[0]["sockets"], [PassedSocket(41, "s1/http/8100/0")]
        )
        self.assertTrue(port1.listening)
        self.assertFalse(port2.listening)
        self.assertEqual(self.runtime.servers["s2"].listeners, [])

    def test_handover_drains_in_flight(self) -> None:
        server, app, port = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/slow")
        restarted = self.runtime.restart()
        self.assertTrue(port.listening)
        self.spawner.last.report_ready()
        self.successResultOf(restarted)
        self.assertFalse(port.listening)
        self.assertFalse(self.exited)
        self.assertLogged(f"{PID}: finishing 1 request(s) in flight")
        app.answer()
        self.assertEqual(connection.only_response().header("connection"), "close")
        self.assertTrue(connection.closing)
        self.assertFalse(self.exited)
        connection.lose()
        self.assertTrue(self.exited)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_drain_timeout_aborts(self) -> None:
        self.runtime.settings.drain_timeout = 5.0
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/slow")
        shut = self.runtime.shutdown()
        self.reactor.advance(4.9)
        self.assertFalse(connection.transport.disconnected)
        self.assertNoResult(shut)
        self.reactor.advance(0.1)
        self.assertTrue(connection.transport.disconnected)  # aborted
        self.assertLogged(
            f"{PID}: drain_timeout of 5s reached: aborted 1 connection(s): 1 http/1.1"
        )
        self.reactor.advance(0)
        self.assertTrue(self.exited)
        self.successResultOf(shut)

    def test_idle_connections_closed(self) -> None:
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/fast")
        self.runtime.shutdown()
        self.reactor.advance(server.site.idle_grace)  # type: ignore[union-attr]
        self.assertTrue(connection.closing)
        connection.lose()
        self.assertTrue(self.exited)

    def test_idle_connections_wait_for_their_next_request_at_handover(self) -> None:
        """
        With a successor serving, an idle keep-alive connection is kept
        past the shutdown grace, to have its next request answered, and
        closed (a FIN) before drain_timeout would abort it.
        """
        self.runtime.settings.drain_timeout = 5.0
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/fast")
        self.hand_over()
        self.reactor.advance(IDLE_GRACE * 2)
        self.assertFalse(connection.closing)
        connection.request("/fast")
        self.assertEqual(connection.responses()[-1].header("connection"), "close")
        self.assertTrue(connection.closing)
        connection.lose()
        self.assertTrue(self.exited)

    def test_silent_idle_connection_closed_before_drain_timeout(self) -> None:
        self.runtime.settings.drain_timeout = 5.0
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/fast")
        self.hand_over()
        self.reactor.advance(handover_idle_grace(5.0))
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected)  # not aborted
        connection.lose()
        self.assertTrue(self.exited)

    def hand_over(self) -> None:
        restarted = self.runtime.restart()
        self.spawner.last.report_ready()
        self.successResultOf(restarted)

    def test_on_drain_callbacks(self) -> None:
        called: list[str] = []
        self.runtime.on_drain(lambda: called.append("first"))
        self.runtime.on_drain(lambda: 1 // 0)
        self.runtime.on_drain(lambda: called.append("third"))
        self.runtime.restart()
        self.assertEqual(called, [])
        self.spawner.last.report_ready()
        self.assertEqual(called, ["first", "third"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(self.exited)

    def test_services_stop_before_new_process_is_released(self) -> None:
        service = StoppableService()
        self.runtime.add_service(service)
        self.runtime.services.startService()
        self.runtime.restart()
        self.assertTrue(service.running)
        self.spawner.last.report_ready()
        self.assertFalse(service.running)
        self.assertEqual(self.spawner.last.releases, 0)
        self.assertFalse(self.exited)
        assert service.stopping is not None
        service.stopping.callback(None)
        self.assertEqual(self.spawner.last.releases, 1)
        self.assertTrue(self.exited)

    def test_service_that_never_stops(self) -> None:
        self.runtime.settings.drain_timeout = 3
        service = StoppableService()
        self.runtime.add_service(service)
        self.runtime.services.startService()
        shut = self.runtime.shutdown()
        self.reactor.advance(3)
        self.reactor.advance(0)
        self.assertTrue(self.exited)
        self.successResultOf(shut)


class PidfileTests(_RuntimeCase):
    """
    The pidfile names the serving process: us, then the new process once it
    is ready; we remove it at exit only if it still names us.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.temp_dir() / "app.pid"
        self.runtime.set_pidfile(str(self.path))

    def content(self) -> str:
        return self.path.read_text().strip()

    def test_set_pidfile(self) -> None:
        self.assertEqual(self.runtime.environ[PIDFILE_VARIABLE], str(self.path.absolute()))
        self.runtime.set_pidfile(None)
        self.assertNotIn(PIDFILE_VARIABLE, self.runtime.environ)
        self.assertIsInstance(self.runtime.pidfile, NoPidfile)

    def test_written_when_serving(self) -> None:
        self.runtime.serving_started()
        self.assertEqual(self.content(), str(PID))

    def test_names_new_process_after_handoff(self) -> None:
        self.runtime.serving_started()
        self.runtime.restart()
        self.assertEqual(self.content(), str(PID))
        self.spawner.last.report_ready()
        self.assertEqual(self.content(), str(NEW_PID))
        self.assertTrue(self.exited)
        self.assertEqual(self.content(), str(NEW_PID))

    def test_kept_after_failed_restart(self) -> None:
        self.runtime.serving_started()
        self.restart_and_fail()
        self.assertEqual(self.content(), str(PID))

    def test_removed_at_shutdown(self) -> None:
        self.runtime.serving_started()
        self.successResultOf(self.runtime.shutdown())
        self.assertFalse(self.path.exists())

    def test_not_removed_when_naming_another(self) -> None:
        self.path.write_text("999\n")
        self.successResultOf(self.runtime.shutdown())
        self.assertEqual(self.content(), "999")

    def test_not_written_by_new_generation(self) -> None:
        """
        A process a restart made leaves the pidfile to the old one, which
        writes it once we report ready.
        """
        self.runtime.old_process = FakeOldProcess()
        self.runtime.serving_started()
        self.assertFalse(self.path.exists())


class NotifyTests(_RuntimeCase):
    """
    sd_notify messages to a real datagram socket in a temporary folder.
    """

    def setUp(self) -> None:
        super().setUp()
        address = str(self.temp_dir() / "notify")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.socket.close)
        self.socket.bind(address)
        self.socket.setblocking(False)
        self.runtime.notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": address})  # type: ignore[assignment]

    def messages(self) -> list[dict[str, str]]:
        received = []
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return received
            received.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def test_ready_when_serving(self) -> None:
        self.runtime.serving_started()
        self.assertEqual(self.messages(), [{"READY": "1", "MAINPID": str(PID), "STATUS": "serving"}])

    def test_restart(self) -> None:
        self.runtime.restart()
        [reloading] = self.messages()
        self.assertEqual(reloading["RELOADING"], "1")
        self.assertGreater(int(reloading["MONOTONIC_USEC"]), 0)
        self.spawner.last.report_ready()
        self.assertEqual(self.messages(), [{"MAINPID": str(NEW_PID), "READY": "1"}])

    def test_failed_restart(self) -> None:
        result = self.runtime.restart()
        self.messages()
        self.spawner.last.report_failure("it broke")
        self.failureResultOf(result, RestartFailed)
        self.assertEqual(
            self.messages(), [{"READY": "1", "STATUS": "restart failed: it broke"}]
        )

    def test_shutdown(self) -> None:
        self.runtime.shutdown()
        self.assertEqual(self.messages(), [{"STOPPING": "1"}])

    def test_socket_gone(self) -> None:
        self.socket.close()
        self.runtime.shutdown()  # no error: nobody to tell
        self.assertTrue(self.exited)


class ServingStartedTests(_RuntimeCase):
    """
    Once serving: drop unclaimed inherited sockets, install the signals,
    report ready, and start the services when no older generation runs them.
    """

    def test_first_generation(self) -> None:
        service = Service()
        self.runtime.add_service(service)
        self.runtime.serving_started()
        self.runtime.serving_started()
        self.assertEqual(self.signal_handlers_installed, 1)
        self.assertTrue(service.running)

    def test_unclaimed_sockets_closed(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.runtime.inherited = InheritedSockets([InheritedSocket(write, "old/http/8100/0")])
        self.runtime.serving_started()
        self.assertRaises(OSError, os.fstat, write)
        self.assertLogged(f"{PID}: closed inherited socket old/http/8100/0: no server asks for it")

    def test_new_generation(self) -> None:
        old = FakeOldProcess()
        self.runtime.old_process = old
        service = Service()
        self.runtime.add_service(service)
        self.runtime.serving_started()
        self.assertEqual(old.reported, ["ready"])
        self.assertFalse(service.running)
        old.accept(Accepted(restarts=3, failed_restarts=1, handoff_seconds=0.2, at=1.5))
        self.assertEqual((self.runtime.core.history.restarts, self.runtime.core.history.failed_restarts), (3, 1))
        record = self.runtime.core.history.last
        assert record is not None
        self.assertEqual((record.ok, record.at, record.handoff_seconds), (True, 1.5, 0.2))
        old.release(1.0)
        self.assertTrue(service.running)

    def test_services_not_started_when_leaving(self) -> None:
        old = FakeOldProcess()
        self.runtime.old_process = old
        service = Service()
        self.runtime.add_service(service)
        self.runtime.serving_started()
        self.runtime.shutdown()
        old.released.callback(Released())
        self.assertFalse(service.running)

    def test_wait_reports_ready(self) -> None:
        self.reactor.running = False
        self.runtime._log_to_stdout = False
        self.runtime.wait()
        self.assertTrue(self.reactor.hasRun)
        self.assertEqual(self.signal_handlers_installed, 1)

    def test_status(self) -> None:
        self.serve("s1", 8100, 41)
        self.restart_and_fail("no luck")
        status = self.runtime.status().to_json()
        self.assertEqual((status["pid"], status["generation"]), (PID, 1))
        self.assertEqual(
            status["servers"],
            [
                {
                    "name": "s1",
                    "ports": [{"port": 8100, "tls": False}],
                    "in_flight": 0,
                    "requests": 0,
                    "connections": {"http/1.1": 0, "h2": 0, "websocket": 0, "stream": 0},
                }
            ],
        )
        self.assertEqual(
            (status["last_restart"]["ok"], status["last_restart"]["error"]), (False, "no luck")
        )
        self.assertEqual((status["restarts"], status["failed_restarts"]), (0, 1))


class SignalTests(_RuntimeCase):
    """
    SIGUSR1 restarts and the shutdown signals shut down, through the reactor.
    """

    def install(self) -> None:
        self.runtime.install_signal_handlers()

    def deliver(self, name: str) -> None:
        self.environment.send_signal(getattr(signal, name))

    def test_sigusr1_restarts(self) -> None:
        self.install()
        self.deliver("SIGUSR1")
        self.assertEqual(self.spawner.calls, [])  # only scheduled
        self.reactor.advance(0)
        self.assertEqual(len(self.spawner.calls), 1)
        self.deliver("SIGUSR1")  # refused, quietly
        self.reactor.advance(0)
        self.assertEqual(len(self.spawner.calls), 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_sigusr1_held_while_starting_is_dropped(self) -> None:
        """
        A SIGUSR1 that reached this process while it started (held back
        until its handlers were in place) was meant for the process it
        replaces: dropped, with one line, and the next one restarts.
        """
        self.environment.held.add(signal.SIGUSR1)
        self.install()
        self.reactor.advance(0)
        self.assertEqual(self.spawner.calls, [])
        self.assertEqual(self.environment.released, [signal.SIGUSR1])
        self.assertLogged(
            f"{PID}: restart refused: SIGUSR1 arrived while this process was starting"
        )
        self.deliver("SIGUSR1")
        self.reactor.advance(0)
        self.assertEqual(len(self.spawner.calls), 1)

    def test_sigusr1_ignored_once_exiting(self) -> None:
        """
        Once every server is shut down nothing is left to restart, and a
        late SIGUSR1 is ignored rather than left to its default action.
        """
        self.install()
        self.runtime.shutdown()
        self.reactor.advance(0)
        self.assertTrue(self.exited)
        self.assertEqual(self.environment.ignored, [signal.SIGUSR1])
        self.deliver("SIGUSR1")
        self.reactor.advance(0)
        self.assertEqual(self.spawner.calls, [])

    def test_nothing_held_nothing_said(self) -> None:
        self.install()
        self.assertEqual(self.environment.released, [signal.SIGUSR1])
        self.assertFalse(any("SIGUSR1 arrived" in line for line in self.log), self.log)

    def test_shutdown_signals(self) -> None:
        for name in _runtime.SHUTDOWN_SIGNALS:
            self.setUp_runtime_again()
            self.install()
            self.deliver(name)
            self.assertFalse(self.runtime.draining)
            self.reactor.advance(0)
            self.assertTrue(self.runtime.draining, name)
            self.assertTrue(self.exited, name)

    def setUp_runtime_again(self) -> None:
        self.reactor = ThreadedMemoryReactor()
        self.reactor.running = True
        self.environment = MemoryEnvironment()
        self.runtime = self.make_runtime()



class RobustHandoffTests(_RuntimeCase):
    """
    Bugs these tests found in the runtime, fixed: an unwritable pidfile must
    not stop a handoff halfway, and a failed restart reopens the ports of
    servers that are not graceful.
    """

    def test_unwritable_pidfile_does_not_stop_the_handover(self) -> None:
        blocker = self.temp_dir() / "not-a-directory"
        blocker.write_text("")
        self.runtime.set_pidfile(str(blocker / "app.pid"))
        result = self.runtime.restart()
        process = self.spawner.last
        self.addCleanup(lambda: process.ready.addErrback(lambda failure: None))
        process.report_ready()
        self.assertEqual(self.successResultOf(result), NEW_PID)
        self.assertTrue(self.exited)

    def test_failed_restart_reopens_non_graceful_ports(self) -> None:
        server, _, port = self.serve("s2", 0, 42, graceful=False)
        self.restart_and_fail()
        self.assertFalse(port.listening)
        self.assertNotEqual(server.listeners, [])


class OldGenerationGoneTests(_RuntimeCase):
    """
    A process a restart made, whose old process died before it released
    (killed between the restart and the handover, or while it drained):
    the pipe's end says so, and the new process takes over at once.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.temp_dir() / "app.pid"
        self.runtime.set_pidfile(str(self.path))
        self.old = FakeOldProcess()
        self.runtime.old_process = self.old  # type: ignore[assignment]
        self.notified: list[dict[str, object]] = []
        self.runtime.notifier = FakeNotifier(self.notified)  # type: ignore[assignment]
        self.service = Service()
        self.runtime.add_service(self.service)

    def test_takes_over_when_the_old_process_vanishes(self) -> None:
        self.runtime.serving_started()
        self.assertFalse(self.path.exists())
        self.assertFalse(self.service.running)
        self.old.close()
        self.assertEqual(self.path.read_text().strip(), str(PID))
        self.assertEqual(self.notified, [{"mainpid": PID, "ready": 1, "status": "serving"}])
        self.assertTrue(self.service.running)
        self.assertLogged(f"{PID}: previous generation {OLD_PID} is gone; taking over")
        self.assertFalse(self.exited)

    def test_vanished_after_accepting(self) -> None:
        """
        The old process had named us but died draining, before its
        services stopped: ours start now, not never.
        """
        self.path.write_text(f"{PID}\n")
        self.runtime.serving_started()
        self.old.accept(Accepted(restarts=1))
        self.old.close()
        self.assertTrue(self.service.running)
        self.assertEqual(self.path.read_text().strip(), str(PID))

    def test_normal_close_after_release(self) -> None:
        self.runtime.serving_started()
        self.old.release()
        self.assertTrue(self.service.running)
        self.old.close()
        self.assertFalse(self.path.exists())  # the old process writes it
        self.assertEqual(self.notified, [])
        self.assertFalse(any("is gone" in line for line in self.log), self.log)

    def test_not_while_handing_over_to_the_next(self) -> None:
        """
        We already handed over to a newer process: the pidfile is its.
        """
        self.runtime.serving_started()
        self.runtime.restart()
        self.spawner.last.report_ready()
        self.assertEqual(self.path.read_text().strip(), str(NEW_PID))
        self.old.close()
        self.assertEqual(self.path.read_text().strip(), str(NEW_PID))
        self.assertFalse(self.service.running)


@define
class FakeNotifier:
    sent: list[dict[str, object]]

    def notify(self, **fields: object) -> None:
        self.sent.append(fields)


class SuccessorExitTests(_RuntimeCase):
    """
    The process we handed over to dies while we drain: we still exit, and
    say so unless it was a clean exit (its own handover or shutdown).
    """

    def hand_over(self) -> FakeNewProcess:
        server, app, _ = self.serve("s1", 8100, 41)
        HTTPConnection(server.site).request("/slow")
        self.runtime.restart()
        process = self.spawner.last
        process.report_ready()
        self.assertFalse(self.exited)
        return process

    def test_killed_successor_logged(self) -> None:
        process = self.hand_over()
        process.on_exit(Failure(ProcessTerminated(signal=9)))
        self.assertLogged(
            f"{PID}: process {NEW_PID}, which took over, was killed by signal 9 "
            "while this one drains"
        )
        self.reactor.advance(self.runtime.settings.drain_timeout)
        self.reactor.advance(0)
        self.assertTrue(self.exited)

    def test_clean_exit_not_logged(self) -> None:
        process = self.hand_over()
        process.on_exit(Failure(ProcessDone(0)))
        self.assertFalse(any("which took over" in line for line in self.log), self.log)


class WorkerMasterGoneTests(_RuntimeCase):
    """
    A worker whose master died (the control pipe's end, or the kernel's
    SIGTERM from PR_SET_PDEATHSIG) drains and exits, with one line.
    """

    def setUp(self) -> None:
        super().setUp()
        self.master = FakeOldProcess()
        self.environment.parent = OLD_PID
        self.runtime = self.make_runtime(
            worker_slot=0, group_status=None, old_process=self.master
        )
        self.service = Service()
        self.runtime.add_service(self.service)
        _, _, self.port = self.serve("s1", 8100, 41)

    def gone_lines(self) -> list[str]:
        return [line for line in self.log if "is gone" in line]

    def test_watch_master_arms_sigterm(self) -> None:
        assert self.runtime.worker is not None
        self.runtime.worker.watch_master()
        self.assertEqual(self.environment.armed, [signal.SIGTERM])

    def test_armed_for_workers_only(self) -> None:
        fakes: list[FakeParentDeathSignal] = []

        def make() -> FakeParentDeathSignal:
            fakes.append(FakeParentDeathSignal())
            return fakes[-1]

        self.patch(_environment, "parent_death_signal", make)
        Runtime.from_environment({"GRACEFUL_WORKER": "1"}, self.reactor)
        Runtime.from_environment({}, self.reactor)
        self.assertEqual([fake.armed for fake in fakes], [[signal.SIGTERM], []])

    def test_serves_while_the_master_lives(self) -> None:
        self.runtime.serving_started()
        self.assertEqual(self.master.reported, ["ready"])
        self.assertFalse(self.runtime.draining)
        self.assertTrue(self.port.listening)
        self.master.release()
        self.assertTrue(self.service.running)

    def test_drains_and_exits_on_master_eof(self) -> None:
        self.runtime.serving_started()
        self.master.close()
        self.assertTrue(self.runtime.draining)
        self.assertFalse(self.port.listening)
        self.assertFalse(self.service.running)  # the master never released
        self.assertTrue(self.exited)
        self.assertEqual(
            self.gone_lines(), [f"{PID}: the master {OLD_PID} is gone; draining and exiting"]
        )

    def test_retired_by_a_roll_drains_as_replaced(self) -> None:
        self.runtime.serving_started()
        self.master.tell(Retire())
        self.assertTrue(self.runtime.draining)
        self.assertFalse(self.port.listening)
        self.assertEqual(self.worker_status()["drain"]["reason"], "restart")
        self.assertEqual(self.gone_lines(), [])

    def test_sigterm_alone_drains_as_shutdown(self) -> None:
        self.runtime.serving_started()
        self.runtime._shutdown_signalled()
        self.assertEqual(self.worker_status()["drain"]["reason"], "shutdown")

    def test_master_died_before_the_signal_was_armed(self) -> None:
        self.environment.parent = 1  # reparented already
        self.runtime.serving_started()
        self.assertTrue(self.runtime.draining)
        self.master.close()  # the pipe tells it too: still one line
        self.assertEqual(len(self.gone_lines()), 1)
        self.assertTrue(self.exited)

    def worker_status(self) -> dict[str, Any]:
        assert self.runtime.worker is not None
        return self.runtime.worker.own_status().to_json()

    def test_sigterm_from_the_kernel(self) -> None:
        self.runtime.serving_started()
        self.environment.parent = 1
        self.environment.send_signal(signal.SIGTERM)
        self.reactor.advance(0)
        self.assertTrue(self.runtime.draining)
        self.assertEqual(
            self.gone_lines(), [f"{PID}: the master {OLD_PID} is gone; draining and exiting"]
        )

    def test_sigterm_from_the_master(self) -> None:
        """
        A roll retires this worker: a plain drain, no word of a lost master.
        """
        self.runtime.serving_started()
        self.environment.send_signal(signal.SIGTERM)
        self.reactor.advance(0)
        self.assertTrue(self.runtime.draining)
        self.assertEqual(self.gone_lines(), [])
