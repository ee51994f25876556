"""
Unit tests of L{graceful.lifecycle.restart_log}: the restart history as a
restart moves, written by the old process (began, ready or failed) and
carried on by the new one (handed over, verify, released, exited), through
runtimes on a memory reactor with L{graceful.testing}'s fakes.
"""

from __future__ import annotations

from graceful._history import RestartLog, RestartRecord, VerifyResult
from graceful.handoff.messages import Accepted, decode, encode
from graceful.lifecycle.restart_log import EXIT_POLL, EXIT_POLL_MARGIN
from graceful.testing import FakeOldProcess

from ..runtime_case import NEW_PID, OLD_PID, PID, _RuntimeCase


class OldProcessTests(_RuntimeCase):
    """
    The process that restarts writes each restart: when it began, the new
    pid, when it was ready or why it failed; and passes the whole history
    on as it hands over.
    """

    def test_failed_then_handed_over(self) -> None:
        self.environment.wall = 100.0
        self.restart_and_fail("new process 456 exited with status 1: ImportError")
        self.environment.wall = 200.0
        result = self.runtime.restart()
        self.environment.wall = 201.5
        self.spawner.last.report_ready()
        self.successResultOf(result)
        failed, ok = self.runtime.core.history.log.records
        self.assertEqual(
            (failed.generation, failed.old_pid, failed.new_pid, failed.started, failed.ready),
            (2, PID, NEW_PID, 100.0, None),
        )
        self.assertEqual(
            (failed.outcome, failed.reason),
            ("failed", "new process 456 exited with status 1: ImportError"),
        )
        self.assertEqual((ok.generation, ok.started, ok.ready, ok.outcome), (2, 200.0, 201.5, "ok"))
        [accepted] = self.spawner.last.accepted
        self.assertEqual(accepted.history, self.runtime.core.history.log.to_json())

    def test_verify_failure_is_its_result(self) -> None:
        self.restart_and_fail("verify s1 /healthz answered 503: Service Unavailable")
        [record] = self.runtime.core.history.log.records
        self.assertEqual(
            record.verify,
            VerifyResult(False, "verify s1 /healthz answered 503: Service Unavailable"),
        )

    def test_shutdown_during_restart_fails_it(self) -> None:
        result = self.runtime.restart()
        self.runtime.shutdown()
        self.failureResultOf(result)
        [record] = self.runtime.core.history.log.records
        self.assertEqual(record.outcome, "failed")
        self.assertIn("shutdown", record.reason or "")

    def test_history_survives_the_pipe(self) -> None:
        """
        The history rides in the C{accepted} line as JSON, and reads back
        the same.
        """
        self.restart_and_fail("boom")
        self.runtime.restart()
        self.spawner.last.report_ready()
        [accepted] = self.spawner.last.accepted
        message = decode(encode(accepted).decode())
        assert isinstance(message, Accepted) and message.history is not None
        self.assertEqual(RestartLog.from_json(message.history), self.runtime.core.history.log)


def _passed_on(generation: int = 2) -> list[dict[str, object]]:
    log = RestartLog()
    log.begin(RestartRecord(generation, OLD_PID, 10.0, new_pid=9, outcome="failed", reason="x"))
    log.begin(RestartRecord(generation, OLD_PID, 20.0, new_pid=PID, ready=21.0, outcome="ok"))
    return log.to_json()


class NewProcessTests(_RuntimeCase):
    """
    The new process carries the history on and writes the rest of its own
    restart: handed over, verify, released, and the old one's exit.
    """

    def setUp(self) -> None:
        super().setUp()
        self.old = FakeOldProcess(pid=OLD_PID)
        self.environment.parent = OLD_PID
        self.runtime = self.make_runtime(old_process=self.old, generation=2)
        self.serve("s1", 8100, 41)

    def take_over(self, *verify: str) -> RestartRecord:
        self.runtime.serving_started()
        if verify:  # as if they had answered: the process serves now
            self.runtime.server("s1").set_verify(*verify)
        self.environment.wall = 22.0
        self.old.accept(Accepted(restarts=1, failed_restarts=1, at=21.2, history=_passed_on()))
        failed, mine = self.runtime.core.history.log.records
        self.assertEqual((failed.reason, mine.new_pid), ("x", PID))
        return mine

    def test_handed_over(self) -> None:
        """
        At the old process's time of the hand-over, as its other times are
        (the new process may read the message after the release).
        """
        mine = self.take_over()
        self.assertEqual((mine.ready, mine.handed_over, mine.verify), (21.0, 21.2, None))

    def test_handed_over_without_a_time(self) -> None:
        self.runtime.serving_started()
        self.environment.wall = 22.0
        self.old.accept(Accepted(restarts=1, history=_passed_on()))
        self.assertEqual(self.runtime.core.history.log.records[-1].handed_over, 22.0)

    def test_verify_paths_passed(self) -> None:
        mine = self.take_over("/healthz", "/ready")
        self.assertEqual(mine.verify, VerifyResult(True, "s1 /healthz, s1 /ready"))

    def test_released_then_exited(self) -> None:
        mine = self.take_over()
        self.environment.wall = 23.0
        self.old.release(at=22.5)
        self.assertEqual((mine.released, mine.exited), (22.5, None))
        self.reactor.advance(EXIT_POLL)
        self.environment.wall = 30.0
        self.environment.parent = 1  # it exited: we are reparented
        self.reactor.advance(EXIT_POLL)
        self.assertEqual(mine.exited, 30.0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_exit_watch_is_bounded(self) -> None:
        mine = self.take_over()
        self.old.release(at=22.5)
        self.reactor.advance(self.runtime.settings.drain_timeout + EXIT_POLL_MARGIN + 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertIsNone(mine.exited)

    def test_old_process_died(self) -> None:
        mine = self.take_over()
        self.environment.wall = 25.0
        self.old.close()
        self.assertEqual((mine.released, mine.exited), (None, 25.0))

    def test_unreadable_history_logged(self) -> None:
        self.runtime.serving_started()
        self.old.accept(Accepted(history=[{"generation": "two"}]))
        self.assertEqual(self.runtime.core.history.log.records, [])
        self.assertLoggedPart("the restart history passed on is unreadable")

    def test_from_an_older_release(self) -> None:
        self.runtime.serving_started()
        self.old.accept(Accepted(restarts=1))
        self.assertEqual(self.runtime.core.history.log.records, [])
