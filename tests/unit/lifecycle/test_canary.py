"""
Unit tests of L{graceful.lifecycle.canary}: the judgement, the old
process's canary window (through a runtime serving alone, with a fake new
process) and the new process's side (with a fake old process).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graceful._errors import ConfigError, RestartRefused
from graceful._settings import check_canary
from graceful.handoff.messages import (
    Accepted,
    CanaryCounts,
    CanaryStart,
    CountsRequest,
    Ready,
    Rollback,
)
from graceful.handoff.pipes import RestartFailed
from graceful.lifecycle.canary import CANARY_VARIABLE, COUNTS_TIMEOUT, Candidate, Counts, judge
from graceful.testing import FakeOldProcess

from ..runtime_case import NEW_PID, PID, _RuntimeCase


class JudgeTests(SynchronousTestCase):
    def test_ratio_counts_resets_as_failures(self) -> None:
        self.assertEqual(Counts(responses=90, errors=5, resets=10).ratio, 0.15)
        self.assertEqual(Counts().ratio, 0.0)

    def test_above_the_allowance_fails(self) -> None:
        verdict = judge(Counts(100, 1), Counts(100, 50), 0.01)
        self.assertFalse(verdict.passed)
        self.assertEqual(verdict.ratios, (0.01, 0.5))
        self.assertIn("canary error ratio 0.5000", verdict.reason)
        self.assertIn("against the old generation's 0.0100", verdict.reason)

    def test_within_the_allowance_passes(self) -> None:
        self.assertTrue(judge(Counts(100, 10), Counts(100, 11), 0.01).passed)
        self.assertFalse(judge(Counts(100, 10), Counts(100, 12), 0.01).passed)

    def test_too_few_requests_pass_and_say_so(self) -> None:
        verdict = judge(Counts(100), Counts(19, 19), 0.01)
        self.assertTrue(verdict.passed)
        self.assertIn("too few requests to judge (under 20)", verdict.reason)

    def test_settings_are_checked(self) -> None:
        self.assertEqual(check_canary(30, 0), (30.0, 0.0))
        for seconds, ratio, named in [
            (-1, 0.01, "canary_seconds"),
            (float("nan"), 0.01, "canary_seconds"),
            ("30", 0.01, "canary_seconds"),
            (30, 1.5, "canary_max_error_ratio"),
            (30, -0.1, "canary_max_error_ratio"),
        ]:
            error = self.assertRaises(ConfigError, check_canary, seconds, ratio)
            self.assertIn(named, str(error))


class CanaryWindowTests(_RuntimeCase):
    """
    The old process: with canary_seconds, a ready new process serves beside
    it for the window; then it hands over, or rolls back.
    """

    def setUp(self) -> None:
        super().setUp()
        self.runtime.settings.canary_seconds = 30.0
        self.runtime.settings.canary_max_error_ratio = 0.01
        self.server, self.app, self.port = self.serve("s1", 8100, 41)
        self.site = self.server.site
        assert self.site is not None

    def open_window(self) -> object:
        result = self.runtime.restart()
        self.spawner.last.report_ready(Ready(canary=True))
        return result

    def old_answers(self, count: int, errors: int = 0) -> None:
        assert self.site is not None
        self.site.responses += count
        self.site.server_errors += errors

    def test_off_by_default(self) -> None:
        self.runtime.settings.canary_seconds = 0.0
        result = self.runtime.restart()
        self.assertEqual(self.spawner.calls[0]["extra_environ"], {CANARY_VARIABLE: "0"})
        self.spawner.last.report_ready()
        self.assertEqual(self.successResultOf(result), NEW_PID)
        self.assertEqual(self.spawner.last.sent, [])

    def test_ready_opens_the_window(self) -> None:
        """
        The new process is asked to hold its ports; once ready it is told to
        accept, and the old one goes on accepting: restarting, not draining.
        """
        result = self.open_window()
        self.assertEqual(self.spawner.calls[0]["extra_environ"], {CANARY_VARIABLE: "1"})
        self.assertEqual(self.spawner.last.sent, [CanaryStart()])
        self.assertNoResult(result)
        self.assertTrue(self.port.reading and self.port.listening)
        self.assertTrue(self.runtime.restarting)
        self.assertFalse(self.runtime.draining)
        self.assertEqual(self.spawner.last.accepted, [])
        self.assertLogged(f"{PID}: process {NEW_PID} serves beside this one for 30s (canary)")
        self.reactor.advance(29.9)
        self.assertEqual(self.spawner.last.sent, [CanaryStart()])
        self.reactor.advance(0.1)
        self.assertEqual(self.spawner.last.sent, [CanaryStart(), CountsRequest()])

    def test_a_failing_canary_rolls_back(self) -> None:
        result = self.open_window()
        self.old_answers(40)
        self.reactor.advance(30)
        self.spawner.last.say(CanaryCounts(responses=40, errors=20, resets=0))
        failure = self.failureResultOf(result, RestartFailed)  # type: ignore[arg-type]
        reason = str(failure.value)
        self.assertIn("canary error ratio 0.5000 (20 5xx, 0 reset, of 40)", reason)
        self.assertIn("against the old generation's 0.0000 (0 5xx, 0 reset, of 40)", reason)
        self.assertEqual(self.spawner.last.sent[-1], Rollback(reason))
        self.assertEqual(self.spawner.last.kills, 0)  # it drains, as an old one does
        record = self.runtime.core.history.last
        assert record is not None
        self.assertEqual(
            (record.ok, record.error, record.canary_old_error_ratio, record.canary_new_error_ratio),
            (False, reason, 0.0, 0.5),
        )
        self.assertEqual(self.runtime.core.history.failed_restarts, 1)
        self.assertFalse(self.runtime.restarting)
        self.assertFalse(self.runtime.draining)
        self.assertFalse(self.exited)
        self.assertTrue(self.port.reading and self.port.listening)
        self.assertLogged(f"{PID}: restart rolled back, still serving: {reason}")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # Its exit, once drained, changes nothing; the next restart may start.
        self.spawner.last.exit(0)
        self.assertEqual(self.runtime.core.history.failed_restarts, 1)
        self.runtime.restart()
        self.assertEqual(len(self.spawner.calls), 2)

    def test_ports_not_handed_over_come_back_once_it_left(self) -> None:
        """
        A set_graceful(False) port, closed for the new process to bind, is
        bound again once the rolled-back process has exited, not while it
        still holds it.
        """
        server, _, _ = self.serve("s2", 0, 42, graceful=False)
        self.addCleanup(server.stop_accepting)
        result = self.open_window()
        self.reactor.advance(30)
        self.spawner.last.say(CanaryCounts(responses=40, errors=20))
        self.failureResultOf(result, RestartFailed)  # type: ignore[arg-type]
        self.assertEqual(server.listeners, [])
        self.spawner.last.exit(0)
        self.assertNotEqual(server.listeners, [])

    def test_the_old_generations_own_errors_raise_the_bar(self) -> None:
        """
        The comparison is with the old generation's ratio in the same window:
        a backend failing both alike is no reason to roll back.
        """
        self.old_answers(1000)  # before the window: not counted
        result = self.open_window()
        self.old_answers(100, errors=5)
        self.reactor.advance(30)
        self.spawner.last.say(CanaryCounts(responses=40, errors=2, resets=0))
        self.assertEqual(self.successResultOf(result), NEW_PID)  # type: ignore[arg-type]

    def test_a_good_canary_hands_over(self) -> None:
        result = self.open_window()
        self.old_answers(30)
        self.reactor.advance(30)
        self.spawner.last.say(CanaryCounts(responses=50, errors=0, resets=0))
        self.assertEqual(self.successResultOf(result), NEW_PID)  # type: ignore[arg-type]
        [accepted] = self.spawner.last.accepted
        self.assertEqual(
            (accepted.canary_old_error_ratio, accepted.canary_new_error_ratio), (0.0, 0.0)
        )
        record = self.runtime.core.history.last
        assert record is not None
        self.assertEqual((record.ok, record.canary_new_error_ratio), (True, 0.0))
        self.assertLoggedPart(f"{PID}: canary passed: canary error ratio 0.0000")
        self.assertTrue(self.exited)

    def test_too_few_requests_hand_over(self) -> None:
        result = self.open_window()
        self.reactor.advance(30)
        self.spawner.last.say(CanaryCounts(responses=3, errors=3))
        self.assertEqual(self.successResultOf(result), NEW_PID)  # type: ignore[arg-type]
        self.assertLoggedPart("too few requests to judge")

    def test_resets_count_against_the_new_generation(self) -> None:
        result = self.open_window()
        self.reactor.advance(30)
        self.spawner.last.say(CanaryCounts(responses=90, errors=0, resets=10))
        self.failureResultOf(result, RestartFailed)  # type: ignore[arg-type]

    def test_restart_refused_during_the_window(self) -> None:
        first = self.open_window()
        self.failureResultOf(self.runtime.restart(), RestartRefused)
        self.assertEqual(len(self.spawner.calls), 1)
        self.assertNoResult(first)

    def test_shutdown_during_the_window_drains_both(self) -> None:
        result = self.open_window()
        self.runtime.shutdown()
        self.assertIsInstance(self.spawner.last.sent[-1], Rollback)
        # Flushed, with the pipe closed, before the exit: else the canary
        # reads the pipe's end as our death, and takes over.
        self.assertEqual(self.spawner.last.releases, 1)
        self.failureResultOf(result, RestartFailed)  # type: ignore[arg-type]
        self.assertTrue(self.exited)
        self.assertFalse(self.port.listening)
        self.reactor.advance(60)  # the window's end changes nothing now
        self.assertNotIn(CountsRequest(), self.spawner.last.sent)

    def test_a_new_process_that_dies_in_the_window(self) -> None:
        result = self.open_window()
        self.spawner.last.exit(1)
        failure = self.failureResultOf(result, RestartFailed)  # type: ignore[arg-type]
        self.assertIn(f"new process {NEW_PID} exited with status 1 during the canary window", str(failure.value))
        self.assertFalse(self.exited)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_silent_new_process_is_rolled_back(self) -> None:
        result = self.open_window()
        self.reactor.advance(30)
        self.reactor.advance(COUNTS_TIMEOUT)
        failure = self.failureResultOf(result, RestartFailed)  # type: ignore[arg-type]
        self.assertIn("did not report its canary counts", str(failure.value))
        self.assertIsInstance(self.spawner.last.sent[-1], Rollback)

    def test_a_release_without_canaries_takes_over_at_once(self) -> None:
        """
        A new process that did not say it holds its ports (a release before
        canaries) serves already: hand over as without a canary.
        """
        result = self.runtime.restart()
        self.spawner.last.report_ready(Ready())
        self.assertEqual(self.successResultOf(result), NEW_PID)


class CandidateTests(_RuntimeCase):
    """
    The new process, asked to be a canary: it holds its ports after its
    ready until told, reports its counts, and drains when rolled back.
    """

    def setUp(self) -> None:
        super().setUp()
        self.old = FakeOldProcess()
        self.runtime.old_process = self.old  # type: ignore[assignment]
        self.runtime.environ[CANARY_VARIABLE] = "1"
        self.server, self.app, self.port = self.serve("s1", 8100, 41)
        self.runtime.serving_started()

    def test_holds_its_ports_until_told(self) -> None:
        self.assertEqual(self.old.reported, ["ready"])
        self.assertEqual(self.old.ready_facts, Ready(canary=True))
        self.assertFalse(self.port.reading)
        self.assertNotIn(CANARY_VARIABLE, self.runtime.environ)  # not passed on
        self.old.tell(CanaryStart())
        self.assertTrue(self.port.reading)

    def test_reports_its_counts(self) -> None:
        self.old.tell(CanaryStart())
        site = self.server.site
        assert site is not None
        site.responses, site.server_errors, site.resets = 30, 4, 2
        self.old.tell(CountsRequest())
        self.assertEqual(self.old.sent, [CanaryCounts(responses=30, errors=4, resets=2)])

    def test_refuses_to_restart_during_the_window(self) -> None:
        """
        A restart signal sent to the whole group reaches the canary too: it
        is refused there, as in the old process, until the hand-over.
        """
        self.old.tell(CanaryStart())
        self.failureResultOf(self.runtime.restart(), RestartRefused)
        self.assertEqual(self.spawner.calls, [])
        self.old.accept(Accepted(restarts=1))
        self.old.release()
        self.runtime.restart()
        self.assertEqual(len(self.spawner.calls), 1)

    def test_rolled_back_it_drains_and_exits(self) -> None:
        self.old.tell(CanaryStart())
        self.old.tell(Rollback("canary error ratio 0.5"))
        self.assertTrue(self.runtime.draining)
        self.assertFalse(self.port.listening)
        self.assertTrue(self.exited)
        self.assertLoggedPart(f"{PID}: rolled back by the old generation (canary error ratio 0.5)")
        self.failureResultOf(self.runtime.restart(), RestartRefused)
        self.assertEqual(self.spawner.calls, [])

    def test_a_rollback_while_it_shuts_down_changes_nothing(self) -> None:
        """
        Both got SIGTERM (systemd stops the whole unit): the old one's
        rollback reaches a canary already leaving, which leaves once.
        """
        self.old.tell(CanaryStart())
        self.runtime.shutdown()
        self.old.tell(Rollback("shutdown asked for during the canary window"))
        self.assertFalse(any("rolled back by the old generation" in line for line in self.log))
        self.assertEqual(self.runtime.core.exited, True)

    def test_accepts_once_handed_over(self) -> None:
        self.old.accept(Accepted(restarts=1))
        self.assertTrue(self.port.reading)

    def test_accepts_if_the_old_generation_dies(self) -> None:
        self.old.close()
        self.assertTrue(self.port.reading)
        self.assertLoggedPart("is gone; taking over")

    def test_a_plain_restart_holds_nothing(self) -> None:
        runtime = self.make_runtime()
        runtime.old_process = FakeOldProcess()  # type: ignore[assignment]
        runtime.environ[CANARY_VARIABLE] = "0"
        self.assertIsNone(Candidate.requested(runtime.core))
