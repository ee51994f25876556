"""
Unit tests of the canary restart with workers (L{graceful.workers.canary}):
the old master keeps every worker while one worker of the new master serves
beside them, judges from its workers' reports, and rolls back or lets the
new master replace its workers; the new master starts one worker, holds the
other slots until the verdict, and drains it when rolled back.  On a memory
reactor with L{graceful.testing}'s fakes.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from graceful._status import ProcessStatus, ServerStatus
from graceful.handoff.messages import (
    Accepted,
    CanaryCounts,
    CanaryPassed,
    CanaryStart,
    CountsRequest,
    Error,
    Ready,
    Retire,
    Rollback,
    SlotServes,
    Started,
    Status,
)
from graceful.handoff.pipes import RestartFailed
from graceful.lifecycle.canary import CANARY_VARIABLE, Counts
from graceful.process.runtime import Runtime
from graceful.testing import FakeNewProcess, FakeOldProcess
from graceful.workers.canary import counting_workers
from graceful.workers.master import MasterRole

from .test_master import MASTER, MasterCase


def answered(worker: FakeNewProcess, ok: int, errors: int = 0, resets: int = 0) -> None:
    """
    The worker reports (its heartbeat) that it answered this many requests
    since it started.
    """
    server = ServerStatus(
        name="web", requests=ok + errors, responses={"2xx": ok, "5xx": errors}, resets=resets
    )
    worker.say(Status(ProcessStatus(pid=worker.pid, role="worker", generation=2, started_at=0.0, uptime=1.0, servers=(server,))))


class CountingTests(MasterCase):
    def test_counts_since_the_window_opened_from_the_reports(self) -> None:
        """
        What the old master's workers answered in the window: each one's
        reports since it opened, a worker started meanwhile from zero, and a
        worker gone meanwhile with its last report.
        """
        runtime, role = self.master()
        self.workers_up()
        old0, old1 = self.spawned
        answered(old0, 100, 1)
        answered(old1, 50)
        assert role.group is not None
        since = counting_workers(lambda: role.group.workers if role.group else [])
        self.assertEqual(since(), Counts())
        answered(old0, 130, 2, resets=1)
        old1.exit(1)  # died; its slot is refilled after a back-off
        self.reactor.advance(1)
        [again] = self.spawned[2:]
        again.report_ready()
        answered(again, 10, 10)
        self.assertEqual(since(), Counts(responses=51, errors=11, resets=1))


class OldMasterTests(MasterCase):
    """
    The old master: with canary_seconds, its workers all serve on while one
    worker of the new master serves beside them for the window.
    """

    def window(self) -> tuple[Runtime, Deferred[int], FakeNewProcess]:
        runtime, role = self.master()
        runtime.settings.canary_seconds = 30.0
        runtime.settings.canary_max_error_ratio = 0.01
        self.workers_up()
        answered(self.spawned[0], 1000, 50)  # before the window: not counted
        result = runtime.restart()
        new_master = self.spawned[2]
        new_master.say(Started())
        new_master.report_ready(Ready(canary=True))
        return runtime, result, new_master

    def test_one_new_worker_serves_beside_all_of_ours(self) -> None:
        runtime, result, new_master = self.window()
        old0, old1 = self.spawned[:2]
        self.assertEqual(self.environment.spawner.calls[2]["extra_environ"], {CANARY_VARIABLE: "1"})
        self.assertEqual(new_master.sent, [CanaryStart()])
        self.assertIn(
            f"{MASTER}: a worker of new master {new_master.pid} serves beside this one for "
            "30s (canary)",
            self.messages,
        )
        self.assertNotIn(Retire(), old0.sent + old1.sent)
        self.assertTrue(runtime.restarting)
        self.assertFalse(runtime.draining)
        self.assertNoResult(result)
        self.reactor.advance(30)
        self.assertEqual(new_master.sent, [CanaryStart(), CountsRequest()])

    def test_a_failing_canary_rolls_back(self) -> None:
        """
        The new worker's 5xx share is far above our workers': the new master
        is told to roll back, none of our workers was retired, and the
        status, history and log give both ratios.
        """
        runtime, result, new_master = self.window()
        old0, old1 = self.spawned[:2]
        answered(old0, 1040, 50)
        answered(old1, 40)
        self.reactor.advance(30)
        new_master.say(CanaryCounts(responses=40, errors=20, resets=0))
        reason = str(self.failureResultOf(result, RestartFailed).value)
        self.assertIn("canary error ratio 0.5000 (20 5xx, 0 reset, of 40)", reason)
        self.assertIn("against the old generation's 0.0000 (0 5xx, 0 reset, of 80)", reason)
        self.assertEqual(new_master.sent[-1], Rollback(reason))
        self.assertIn(f"{MASTER}: restart rolled back, still serving: {reason}", self.messages)
        self.assertNotIn(Retire(), old0.sent + old1.sent)
        self.assertFalse(runtime.restarting or runtime.draining)
        status = runtime.status().to_json()
        last = status["last_restart"]
        self.assertEqual(
            (last["ok"], last["canary_old_error_ratio"], last["canary_new_error_ratio"]),
            (False, 0.0, 0.5),
        )
        [record] = runtime.core.history.log.to_json()
        self.assertEqual(
            (record["outcome"], record["canary"]),
            ("failed", {"old_error_ratio": 0.0, "new_error_ratio": 0.5, "passed": False}),
        )
        new_master.exit(0)
        self.assertEqual(len(self.spawned), 3, "no slot of ours needs a new worker")

    def test_a_good_canary_lets_the_new_master_replace_our_workers(self) -> None:
        """
        Passed, the new master is told so; our workers drain one slot at a
        time as its workers serve, and the hand-over completes once it says
        it is ready again.
        """
        runtime, result, new_master = self.window()
        old0, old1 = self.spawned[:2]
        answered(old0, 1040, 50)
        self.reactor.advance(30)
        new_master.say(CanaryCounts(responses=40, errors=0, resets=0))
        self.assertEqual(new_master.sent[-1], CanaryPassed())
        self.assertIn(
            f"{MASTER}: new master {new_master.pid} replaces the other workers", self.messages
        )
        self.assertNoResult(result)
        self.assertEqual(new_master.accepted, [])
        new_master.say(SlotServes(0))
        self.assertIn(Retire(), old0.sent)
        self.assertNotIn(Retire(), old1.sent)
        new_master.say(SlotServes(1))
        self.assertIn(Retire(), old1.sent)
        new_master.say(Ready())
        self.assertEqual(self.successResultOf(result), new_master.pid)
        [accepted] = new_master.accepted
        self.assertEqual(
            (accepted.canary_old_error_ratio, accepted.canary_new_error_ratio), (0.0, 0.0)
        )
        self.assertTrue(runtime.draining)
        [record] = runtime.core.history.log.to_json()
        self.assertEqual(record["canary"], {"old_error_ratio": 0.0, "new_error_ratio": 0.0, "passed": True})

    def test_a_new_master_that_fails_after_passing_gives_the_slots_back(self) -> None:
        runtime, result, new_master = self.window()
        old0, old1 = self.spawned[:2]
        self.reactor.advance(30)
        new_master.say(CanaryCounts(responses=40))
        new_master.say(SlotServes(0))
        old0.exit(0)
        new_master.say(Error("the workers did not come up: worker 2 exited with status 1"))
        reason = str(self.failureResultOf(result, RestartFailed).value)
        self.assertEqual(reason, "the workers did not come up: worker 2 exited with status 1")
        self.assertIn(f"{MASTER}: restart rolled back, still serving: {reason}", self.messages)
        new_master.exit(1)
        [again] = self.spawned[3:]
        self.assertEqual(self.environment.spawner.calls[3]["extra_environ"]["GRACEFUL_WORKER"], "0")
        again.report_ready()
        self.assertNotIn(Retire(), old1.sent)

    def test_a_new_master_that_stalls_after_passing_is_rolled_back(self) -> None:
        runtime, result, new_master = self.window()
        self.reactor.advance(30)
        new_master.say(CanaryCounts(responses=40))
        self.reactor.advance(runtime.settings.ready_timeout - 1)
        new_master.say(SlotServes(0))  # progress: a step has its own ready_timeout
        self.reactor.advance(runtime.settings.ready_timeout - 1)
        self.assertNoResult(result)
        self.reactor.advance(1)
        reason = str(self.failureResultOf(result, RestartFailed).value)
        self.assertIn(f"new master {new_master.pid} did not replace the other workers", reason)

    def test_a_canary_worker_that_dies_rolls_back(self) -> None:
        runtime, result, new_master = self.window()
        why = "canary worker 2000 exited with status 1 during the canary window"
        new_master.say(Error(why))
        self.assertEqual(str(self.failureResultOf(result, RestartFailed).value), why)
        self.assertEqual(new_master.sent[-1], Rollback(why))

    def test_a_new_single_process_takes_over_at_once(self) -> None:
        """
        A new config with one worker makes the new process serve alone: it
        held its ports as a canary, and once passed takes over at once.
        """
        runtime, role = self.master()
        runtime.settings.canary_seconds = 30.0
        self.workers_up()
        result = runtime.restart()
        new = self.spawned[2]
        new.report_ready(Ready(canary=True))
        self.assertIn(f"{MASTER}: process {new.pid} serves beside this one for 30s (canary)", self.messages)
        self.reactor.advance(30)
        new.say(CanaryCounts(responses=40))
        self.assertEqual(self.successResultOf(result), new.pid)
        self.assertNotIn(CanaryPassed(), new.sent)


class NewMasterTests(MasterCase):
    """
    The new master, asked to be a canary.
    """

    def new_master(self, workers: int = 2) -> tuple[Runtime, MasterRole, FakeOldProcess]:
        self.old = FakeOldProcess()
        runtime = Runtime(
            self.reactor,
            {CANARY_VARIABLE: "1"},
            MASTER,
            environment=self.environment,
            forward_stderr=lambda data: None,
            old_process=self.old,  # type: ignore[arg-type]
            generation=2,
        )
        runtime.settings.workers = workers
        runtime.settings.worker_timeout = 0
        runtime.settings.preload = False  # exec'd workers; forked ones: test_template
        server = runtime.server("web")
        server.set_port(8100)
        from graceful.http.server import HeldSocket
        from graceful._sockets import ListenSpec

        from .test_master import _Held

        server._prepared.append(HeldSocket(ListenSpec("web", False, 8100), 41, _Held(41), 2))
        runtime.serving_started()
        role = runtime._the_role()
        assert isinstance(role, MasterRole)
        return runtime, role, self.old

    def test_one_worker_serves_and_the_others_wait(self) -> None:
        runtime, role, old = self.new_master(workers=3)
        self.assertNotIn(CANARY_VARIABLE, runtime.environ)  # not passed to the workers
        [first] = self.spawned
        first.report_ready()
        self.assertEqual(old.sent, [Started()])
        self.assertEqual((old.reported, old.ready_facts), (["ready"], Ready(canary=True)))
        self.assertEqual(len(self.spawned), 1)
        self.assertIn(
            f"{MASTER}: worker {first.pid} (slot 0) serves beside the old generation; "
            "the other slots wait for the canary's verdict",
            self.messages,
        )
        self.reactor.advance(300)
        self.assertEqual(len(self.spawned), 1)
        self.assertTrue(runtime.restarting)

    def test_reports_its_workers_counts(self) -> None:
        runtime, role, old = self.new_master()
        [first] = self.spawned
        first.report_ready()
        old.tell(CanaryStart())
        answered(first, 30, 4, resets=2)
        old.tell(CountsRequest())
        self.assertEqual(old.sent[-1], CanaryCounts(responses=34, errors=4, resets=2))

    def test_passed_it_replaces_the_old_workers_in_turn(self) -> None:
        runtime, role, old = self.new_master(workers=3)
        self.spawned[0].report_ready()
        old.tell(CanaryPassed())
        self.assertEqual(old.sent, [Started(), SlotServes(0)])
        self.spawned[1].report_ready()
        self.spawned[2].report_ready()
        self.assertEqual(old.sent, [Started(), SlotServes(0), SlotServes(1), SlotServes(2)])
        self.assertEqual(old.reported, ["ready", "ready"])
        self.assertEqual(old.ready_facts, Ready())
        old.accept(Accepted(restarts=1, canary_old_error_ratio=0.0, canary_new_error_ratio=0.0))
        old.release()
        self.assertFalse(runtime.restarting)

    def test_rolled_back_it_drains_its_worker_and_exits(self) -> None:
        runtime, role, old = self.new_master()
        [first] = self.spawned
        first.report_ready()
        old.tell(Rollback("canary error ratio 0.5"))
        self.assertIn(
            f"{MASTER}: rolled back by the old generation (canary error ratio 0.5); draining",
            self.messages,
        )
        self.assertIn(Retire(), first.sent)
        self.assertTrue(runtime.draining)
        self.assertNotIn(SlotServes(0), old.sent)
        runtime.shutdown()  # SIGTERM meanwhile: it is leaving already
        first.exit(0)
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(len(self.spawned), 1)

    def test_its_worker_dying_in_the_window_fails_the_canary(self) -> None:
        """
        Its answers in flight were lost, and a worker started in its place
        would count from nothing: the old generation hears why, and rolls
        back; the slot is not filled again.
        """
        runtime, role, old = self.new_master()
        [first] = self.spawned
        first.report_ready()
        first.exit(1)
        why = f"canary worker {first.pid} exited with status 1 during the canary window"
        self.assertEqual(old.sent[-1], Error(why))
        self.assertIn(f"{MASTER}: {why}", self.messages)
        self.reactor.advance(60)
        self.assertEqual(len(self.spawned), 1)
        old.tell(Rollback(why))
        self.assertTrue(self.reactor.hasStopped)

    def test_the_old_master_dies_in_the_window(self) -> None:
        """
        Nobody is left to judge: the new master starts every other slot and
        takes over.
        """
        runtime, role, old = self.new_master(workers=3)
        self.spawned[0].report_ready()
        old.close()
        self.assertEqual(len(self.spawned), 3)
        self.spawned[1].report_ready()
        self.spawned[2].report_ready()
        self.assertFalse(runtime.restarting)

    def test_an_old_process_serving_alone_hands_over_at_once(self) -> None:
        """
        The old generation served alone: once the canary passed it hands
        over without a word of the slots; the other workers start then.
        """
        runtime, role, old = self.new_master()
        self.spawned[0].report_ready()
        old.accept(Accepted(restarts=1))
        self.assertEqual(len(self.spawned), 2)



class RollTests(MasterCase):
    """
    A master that is PID 1 rolls its workers: with canary_seconds, its
    first new worker serves beside every old one for the window, and the
    roll replaces them only if it passed.
    """

    def roll(self) -> tuple[Runtime, Deferred[int], FakeNewProcess]:
        self.environment.spawner.next_pid = 1000
        runtime = Runtime(
            self.reactor, {}, 1, environment=self.environment, forward_stderr=lambda d: None
        )
        runtime.settings.workers = 2
        runtime.settings.worker_timeout = 0
        runtime.settings.preload = False  # exec'd workers; forked ones: test_template
        runtime.settings.canary_seconds = 30.0
        server = runtime.server("web")
        server.set_port(8100)
        from graceful.http.server import HeldSocket
        from graceful._sockets import ListenSpec

        from .test_master import _Held

        server._prepared.append(HeldSocket(ListenSpec("web", False, 8100), 41, _Held(41), 2))
        runtime.serving_started()
        self.workers_up()
        answered(self.spawned[0], 100)  # before the window: not counted
        result = runtime.restart()
        new = self.spawned[2]
        new.report_ready()
        return runtime, result, new

    def test_a_failing_new_worker_rolls_back(self) -> None:
        runtime, result, new = self.roll()
        old0, old1 = self.spawned[:2]
        self.assertIn(
            f"1: new worker {new.pid} (slot 0) serves beside the others for 30s (canary)",
            self.messages,
        )
        self.assertTrue(runtime.restarting)
        answered(old0, 140)
        answered(old1, 40)
        answered(new, 20, 20)
        self.reactor.advance(30)
        reason = str(self.failureResultOf(result, RestartFailed).value)
        self.assertIn("canary error ratio 0.5000 (20 5xx, 0 reset, of 40)", reason)
        self.assertIn("against the old generation's 0.0000 (0 5xx, 0 reset, of 80)", reason)
        self.assertIn(f"1: restart rolled back, still serving: {reason}", self.messages)
        self.assertIn(Retire(), new.sent)
        self.assertNotIn(Retire(), old0.sent + old1.sent)
        self.assertEqual(len(self.spawned), 3)
        last = runtime.status().to_json()["last_restart"]
        self.assertEqual(
            (last["ok"], last["canary_old_error_ratio"], last["canary_new_error_ratio"]),
            (False, 0.0, 0.5),
        )
        [record] = runtime.core.history.log.to_json()
        self.assertEqual(
            (record["kind"], record["outcome"], record["canary"]),
            ("roll", "failed", {"old_error_ratio": 0.0, "new_error_ratio": 0.5, "passed": False}),
        )

    def test_a_good_new_worker_lets_the_roll_go_on(self) -> None:
        runtime, result, new = self.roll()
        old0, old1 = self.spawned[:2]
        answered(old0, 140)
        answered(new, 40)
        self.assertNotIn(Retire(), old0.sent)
        self.reactor.advance(30)
        self.assertIn(Retire(), old0.sent)
        self.assertNotIn(Retire(), old1.sent)
        self.spawned[3].report_ready()
        self.assertIn(Retire(), old1.sent)
        self.assertEqual(self.successResultOf(result), 1)
        last = runtime.status().to_json()["last_restart"]
        self.assertEqual(
            (last["ok"], last["canary_old_error_ratio"], last["canary_new_error_ratio"]),
            (True, 0.0, 0.0),
        )

    def test_a_new_worker_that_exits_in_the_window_rolls_back(self) -> None:
        runtime, result, new = self.roll()
        new.exit(1)
        self.reactor.advance(30)
        reason = str(self.failureResultOf(result, RestartFailed).value)
        self.assertEqual(reason, f"canary worker {new.pid} exited during the canary window")
        self.assertNotIn(Retire(), self.spawned[0].sent + self.spawned[1].sent)
