"""
Unit tests of the master's own upgrade: a restart hands every socket to a
new master, whose workers serve before the old ones drain; a new master
that fails leaves the old one serving.  On a memory reactor with
L{graceful.testing}'s fakes.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff.pipes import ListeningSocket, RestartFailed
from graceful.workers.master import MasterRole
from graceful.handoff.messages import Released, Retire
from graceful.process.runtime import Runtime
from graceful._sockets import ListenSpec
from graceful.testing import FakeOldProcess, FakeSpawner, MemoryEnvironment

MASTER = 100


class _Held:
    """
    A socket the master holds (the test never opens one).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        self.closed = True


class MasterCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.environment = MemoryEnvironment(spawner=FakeSpawner(next_pid=1000))
        self.messages: list[str] = []

        def observe(event: LogEvent) -> None:
            self.messages.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def master(self, workers: int = 2, **kwargs: object) -> tuple[Runtime, MasterRole]:
        runtime = Runtime(
            self.reactor,
            {},
            MASTER,
            environment=self.environment,
            forward_stderr=lambda data: None,
            interpreter=["python"],
            arguments=["app.py"],
            **kwargs,  # type: ignore[arg-type]
        )
        runtime.settings.workers = workers
        runtime.settings.worker_timeout = 0
        runtime.settings.preload = False  # exec'd workers; forked ones: test_template
        server = runtime.server("web")
        server.set_port(8100)
        # As prepare() would leave it: one socket bound, not served.
        from graceful.http.server import HeldSocket

        server._prepared.append(
            HeldSocket(ListenSpec("web", False, 8100), 41, _Held(41), 2)
        )
        runtime.serving_started()
        role = runtime._the_role()
        assert isinstance(role, MasterRole)
        return runtime, role

    @property
    def spawned(self) -> list:  # type: ignore[type-arg]
        return self.environment.spawner.processes

    def workers_up(self) -> None:
        for process in self.spawned:
            if not process.ready.called:
                process.report_ready()


class UpgradeTests(MasterCase):
    def test_first_master_names_itself_once_its_workers_serve(self) -> None:
        runtime, role = self.master()
        self.assertEqual(len(self.spawned), 2)
        self.assertEqual([c["extra_environ"]["GRACEFUL_WORKER"] for c in self.environment.spawner.calls], ["0", "1"])
        self.workers_up()
        self.assertIn(f"{MASTER}: 2 workers serve", self.messages)
        self.assertIn(Released(self.environment.wall), self.spawned[0].sent)
        status = runtime.status().to_json()
        self.assertEqual((status["role"], status["master_generation"]), ("master", 1))

    def test_restart_hands_everything_to_a_new_master(self) -> None:
        """
        The new master inherits the held sockets; only once it serves do the
        old workers hear that they are replaced; the old master exits once
        they are gone, after telling the new one its services stopped.
        """
        runtime, role = self.master()
        self.workers_up()
        old0, old1 = self.spawned
        result = runtime.restart()
        new_master = self.spawned[2]
        call = self.environment.spawner.calls[2]
        self.assertEqual(call["command"], ["python", "app.py"])
        self.assertEqual(call["generation"], 2)
        self.assertEqual(call["sockets"], [ListeningSocket(41, "web/http/8100/0")])
        self.assertNotIn("GRACEFUL_WORKER", call["extra_environ"])
        self.assertTrue(runtime.restarting)
        self.assertNotIn(Retire(), old0.sent)
        new_master.report_ready()
        self.assertEqual(self.successResultOf(result), new_master.pid)
        self.assertIn(Retire(), old0.sent)
        self.assertIn(Retire(), old1.sent)
        self.assertTrue(runtime.draining)
        self.assertEqual(new_master.releases, 0)  # slot 0 still runs the services
        old0.say(Released(5.0))
        self.assertEqual(new_master.releases, 1)
        self.assertFalse(self.reactor.hasStopped)
        old0.exit(0)
        old1.exit(0)
        self.assertTrue(self.reactor.hasStopped)

    def test_failed_new_master_leaves_the_old_one_serving(self) -> None:
        runtime, role = self.master()
        self.workers_up()
        old0, old1 = self.spawned
        result = runtime.restart()
        self.spawned[2].report_failure("new process 1002 exited with status 1: ImportError")
        self.failureResultOf(result, RestartFailed)
        self.assertFalse(runtime.draining or runtime.restarting)
        self.assertNotIn(Retire(), old0.sent)
        self.assertEqual(runtime.status().to_json()["last_restart"]["ok"], False)
        self.assertIn(
            f"{MASTER}: restart failed, still serving: "
            "new process 1002 exited with status 1: ImportError",
            self.messages,
        )

    def test_new_master_holds_services_until_the_old_one_releases(self) -> None:
        old = FakeOldProcess()
        runtime, role = self.master(workers=3, old_process=old, generation=2)
        self.workers_up()
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(old.reported, ["ready"])
        self.assertNotIn(Released(self.environment.wall), self.spawned[0].sent)
        old.release(4.0)
        self.assertIn(Released(self.environment.wall), self.spawned[0].sent)
        self.assertEqual(runtime.status().to_json()["master_generation"], 2)

    def test_new_master_whose_workers_fail(self) -> None:
        old = FakeOldProcess()
        runtime, role = self.master(old_process=old, generation=2)
        self.spawned[0].report_ready()
        self.spawned[1].report_failure("worker 1001 exited with status 1: boom")
        self.assertEqual(
            old.reported, ["error the workers did not come up: worker 1001 exited with status 1: boom"]
        )
        self.spawned[0].exit(0)
        self.assertEqual(self.environment.exits, [1])

    def test_pid_1_rolls_instead(self) -> None:
        self.environment.spawner.next_pid = 1000
        runtime = Runtime(
            self.reactor, {}, 1, environment=self.environment, forward_stderr=lambda d: None
        )
        runtime.settings.worker_timeout = 0
        runtime.settings.preload = False  # exec'd workers; forked ones: test_template
        runtime.server("web").set_port(8100)
        from graceful.http.server import HeldSocket

        runtime.server("web")._prepared.append(
            HeldSocket(ListenSpec("web", False, 8100), 41, _Held(41), 2)
        )
        runtime.serving_started()
        self.assertEqual(runtime.role, "master")
        self.workers_up()
        runtime.restart()
        self.assertEqual(self.environment.spawner.calls[-1]["extra_environ"]["GRACEFUL_WORKER"], "0")


class OneSlotAtATimeTests(MasterCase):
    def test_old_workers_drain_as_the_new_ones_serve(self) -> None:
        """
        At every step each slot has a serving worker: the old master's
        worker of a slot is told to drain only once the new master says its
        own serves there.
        """
        from graceful.handoff.messages import SlotServes

        runtime, role = self.master(workers=2)
        self.workers_up()
        old0, old1 = self.spawned
        runtime.restart()
        new_master = self.spawned[2]
        new_master.say(SlotServes(0))
        self.assertIn(Retire(), old0.sent)
        self.assertNotIn(Retire(), old1.sent)
        old0.exit(0)
        self.reactor.advance(60)
        self.assertEqual(len(self.spawned), 3, "a handed-over slot is not refilled")
        new_master.say(SlotServes(1))
        self.assertIn(Retire(), old1.sent)

    def test_failed_new_master_gives_the_slots_back(self) -> None:
        from graceful.handoff.messages import SlotServes

        runtime, role = self.master(workers=2)
        self.workers_up()
        old0, old1 = self.spawned
        result = runtime.restart()
        self.spawned[2].say(SlotServes(0))
        old0.exit(0)
        self.spawned[2].report_failure("its worker of slot 1 did not come up")
        self.failureResultOf(result, RestartFailed)
        [again] = self.spawned[3:]
        self.assertEqual(self.environment.spawner.calls[3]["extra_environ"]["GRACEFUL_WORKER"], "0")
        again.report_ready()
        status = runtime.status().to_json()
        self.assertEqual(
            sorted((w["slot"], w["pid"]) for w in status["workers"]),
            [(0, again.pid), (1, old1.pid)],
        )
        self.assertNotIn(Retire(), old1.sent)

    def test_new_master_starts_its_workers_in_turn(self) -> None:
        from graceful.handoff.messages import SlotServes

        old = FakeOldProcess()
        self.master(workers=3, old_process=old, generation=2)
        self.assertEqual(len(self.spawned), 1)
        self.spawned[0].report_ready()
        from graceful.handoff.messages import Started

        self.assertEqual(old.sent, [Started(), SlotServes(0)])
        self.assertEqual(len(self.spawned), 2)
        self.spawned[1].report_ready()
        self.spawned[2].report_ready()
        self.assertEqual(old.sent, [Started(), SlotServes(0), SlotServes(1), SlotServes(2)])
        self.assertEqual(old.reported, ["ready"])


class StartingTests(MasterCase):
    def test_a_master_refuses_to_restart_until_its_workers_serve(self) -> None:
        """
        A new master whose workers are still coming up is part of the
        restart that made it: its status says restarting, and a restart
        asked of it meanwhile is refused, not started on a half-built group.
        """
        from graceful._errors import RestartRefused

        old = FakeOldProcess()
        runtime, role = self.master(workers=2, old_process=old, generation=2)
        self.assertTrue(runtime.status().to_json()["restarting"])
        self.failureResultOf(runtime.restart(), RestartRefused)
        self.assertIn(f"{MASTER}: restart refused: the workers are still starting", self.messages)
        self.workers_up()
        self.assertFalse(runtime.status().to_json()["restarting"])
        runtime.restart()
        self.assertEqual(self.environment.spawner.calls[-1]["generation"], 3)


class HistoryPushTests(MasterCase):
    def test_workers_hear_the_masters_history(self) -> None:
        """
        The group's pushes carry the master's restart history, which its
        workers answer C{GET history} with.
        """
        from graceful.handoff.messages import Group
        from graceful.workers.worker import STATUS_INTERVAL

        runtime, role = self.master()
        self.workers_up()
        failed = runtime.restart()
        self.spawned[2].report_failure("new master exited with status 1: boom")
        self.failureResultOf(failed)
        self.reactor.advance(STATUS_INTERVAL)
        pushes = [m for m in self.spawned[0].sent if isinstance(m, Group)]
        assert pushes[-1].history is not None
        [record] = pushes[-1].history
        self.assertEqual(
            (record["old_pid"], record["outcome"], record["reason"]),
            (MASTER, "failed", "new master exited with status 1: boom"),
        )
