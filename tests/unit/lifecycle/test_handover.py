"""
Unit tests of L{graceful.lifecycle.handover}, through a runtime serving
alone: restart, hand over, fail and go on serving, and the older and
newer generations going away, on a L{MemoryReactorClock} with a fake new
process in place of a real one.
"""

from __future__ import annotations

import signal

from attrs import define
from twisted.application.service import Service
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from graceful._errors import RestartRefused
from graceful.handoff.pipes import RestartFailed
from graceful.handoff.messages import Accepted
from graceful.testing import FakeNewProcess, FakeOldProcess

from ..http.test_routing import HTTPConnection
from ..runtime_case import PID, NEW_PID, OLD_PID, INTERPRETER, ARGUMENTS, CWD, _RuntimeCase


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

    def test_failed_restart_reason_logged_once(self) -> None:
        """
        A stderr that only says the reason again is not logged a second
        time under it.
        """
        result = self.runtime.restart()
        reason = f"new process {NEW_PID} exited with status 1: ASGI lifespan startup failed: no"
        self.spawner.last.report_failure(reason, "graceful: error: ASGI lifespan startup failed: no")
        self.failureResultOf(result, RestartFailed)
        self.assertEqual(
            [line for line in self.log if "ASGI lifespan startup failed" in line],
            [f"{PID}: restart failed, still serving: {reason}"],
        )

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
