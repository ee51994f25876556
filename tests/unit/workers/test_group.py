"""
Unit tests of the master's worker group: the rolling restart's order, the
refill of dead workers and its back-off, recycling after max_requests or
past max_worker_memory, and the heartbeat watchdog, on a memory reactor
with L{graceful.testing}'s fake processes.
"""

from __future__ import annotations

import random
import signal
from typing import cast

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from graceful.lifecycle.core import ProcessCore
from graceful._errors import RestartRefused
from graceful.handoff.pipes import RestartFailed
from graceful.handoff.messages import Released, Retire, Status
from graceful.workers.recycling import RECYCLE_PAUSE, STACK_DUMP_WAIT
from graceful._status import ProcessStatus, ServerStatus
from graceful.workers.group import BACKOFF_FIRST, BACKOFF_MAX, WorkerGroup, backoff
from graceful.testing import FakeNewProcess, FakeSpawner, MemoryEnvironment

MASTER = 100


def report(process: FakeNewProcess, requests: int = 0, rss_mib: float = 10.0) -> None:
    """
    The worker's heartbeat, with what it served.
    """
    process.say(
        Status(
            ProcessStatus(
                pid=process.pid,
                generation=1,
                role="worker",
                servers=(ServerStatus("s", requests=requests),),
                rss_mib=rss_mib,
            )
        )
    )


def retired(process: FakeNewProcess) -> bool:
    return Retire() in process.sent


class GroupTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.environment = MemoryEnvironment(spawner=FakeSpawner(next_pid=1000))
        self.core = ProcessCore(self.reactor, {}, MASTER, environment=self.environment)
        self.core.settings.worker_timeout = 0
        self.core.settings.preload = False  # exec'd workers; forked ones: test_template
        self.messages: list[str] = []

        def observe(event: LogEvent) -> None:
            self.messages.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    @property
    def spawned(self) -> list[FakeNewProcess]:
        return self.environment.spawner.processes

    def group(self, size: int = 2, seed: int = 1) -> WorkerGroup:
        group = WorkerGroup(self.core, size)
        group.starter.rng = random.Random(seed)
        group.serve()
        for process in list(self.spawned):
            process.report_ready()
        self.addCleanup(group.shutdown)
        return group

    def serving(self, group: WorkerGroup) -> list[int]:
        return [w.pid for slot in range(group.size) if (w := group.serving(slot)) is not None]


class RollTests(GroupTestCase):
    def test_successor_ready_before_the_old_worker_drains(self) -> None:
        """
        Slot by slot: the new worker is started, and only once it serves is
        the old one told to retire, then the next slot begins.  At every
        step every slot has a serving worker.
        """
        group = self.group(size=2)
        old0, old1 = self.spawned
        result = group.restart(None)
        self.assertTrue(group.rolling)
        [new0] = self.spawned[2:]
        self.assertFalse(retired(old0))
        self.assertEqual(self.serving(group), [old0.pid, old1.pid])
        new0.report_ready()
        self.assertTrue(retired(old0))
        self.assertFalse(retired(old1))
        self.assertEqual(self.serving(group), [new0.pid, old1.pid])
        [new1] = self.spawned[3:]
        self.assertEqual(self.environment.spawner.calls[3]["generation"], 2)
        new1.report_ready()
        self.assertTrue(retired(old1))
        self.assertEqual(self.serving(group), [new0.pid, new1.pid])
        self.assertEqual(self.successResultOf(result), MASTER)
        self.assertFalse(group.rolling)
        self.assertEqual(group.generation, 2)
        self.assertEqual(self.core.generation, 1)  # the master's own code
        self.assertEqual(
            (group.status().to_json()["generation"], group.status().to_json()["master_generation"]), (2, 1)
        )
        self.assertEqual(group.status().to_json()["last_replaced_reason"], {"0": "roll", "1": "roll"})
        self.assertEqual(group.status().to_json()["worker_replacements"], {"roll": 2})

    def test_services_move_with_slot_0(self) -> None:
        group = self.group(size=2)
        self.assertIn(Released(self.environment.wall), self.spawned[0].sent)
        group.restart(None).addErrback(lambda f: None)  # left rolling: the cleanup's shutdown fails it
        new0 = self.spawned[2]
        new0.report_ready()
        self.assertNotIn(Released(self.environment.wall), new0.sent)
        self.spawned[0].say(Released(self.environment.wall))  # the old one's stopped
        self.assertIn(Released(self.environment.wall), new0.sent)

    def test_handed_over_slot_0_still_stopping_its_services(self) -> None:
        """
        Leaving after slot 0 was handed to a new master, the group's
        services have stopped only once its old slot-0 worker says so (a
        new master whose workers came up at once had its slot 0 start them
        while the old one still ran its job), or is gone.
        """
        for say_released in (True, False):
            self.spawned.clear()
            group = self.group(size=2)
            old0, old1 = self.spawned[:2]
            group.hand_slot_over(0)
            group.hand_slot_over(1)
            group.shutdown(replaced=True)
            self.assertFalse(group.services.stopped.happened)
            old1.say(Released(self.environment.wall))  # not the one running them: no effect
            old1.exit(0)
            self.assertFalse(group.services.stopped.happened)
            if say_released:
                old0.say(Released(self.environment.wall))
            else:
                old0.exit(0)
            self.assertTrue(group.services.stopped.happened)

    def test_failed_worker_stops_the_roll(self) -> None:
        """
        A new worker that does not come up ends the roll there: the old
        workers of that slot and the next go on serving.
        """
        group = self.group(size=2)
        old0, old1 = self.spawned
        result = group.restart(None)
        self.spawned[2].report_failure("boom", "Traceback...")
        self.failureResultOf(result, RestartFailed)
        self.assertFalse(group.rolling)
        self.assertEqual(len(self.spawned), 3)
        self.assertFalse(retired(old0) or retired(old1))
        self.assertEqual(self.serving(group), [old0.pid, old1.pid])
        self.assertEqual(self.core.history.failed_restarts, 1)
        self.assertIn(
            f"{MASTER}: restart failed, the roll stops here and the other workers go on "
            "serving: boom",
            self.messages,
        )

    def test_one_roll_at_a_time(self) -> None:
        group = self.group(size=2)
        group.restart(None).addErrback(lambda f: None)  # left rolling: the cleanup's shutdown fails it
        failure = self.failureResultOf(group.restart(None), RestartRefused)
        self.assertIn("already running", str(failure.value))

    def test_shutdown_during_a_roll(self) -> None:
        group = self.group(size=2)
        result = group.restart(None)
        group.shutdown()
        self.failureResultOf(result, RestartFailed)
        self.assertEqual(
            [p.signals for p in self.spawned[:2]], [[signal.SIGTERM], [signal.SIGTERM]]
        )
        self.assertEqual(self.spawned[2].kills, 1)  # not ready yet
        self.failureResultOf(group.restart(None), RestartRefused)


class RefillTests(GroupTestCase):
    def test_backoff_doubles_to_a_cap(self) -> None:
        self.assertEqual(
            [backoff(n) for n in range(8)], [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        )

    def test_dead_worker_replaced_after_the_backoff(self) -> None:
        """
        A worker that dies on its own is replaced after a back-off on the
        reactor's clock, which doubles while its replacements die young.
        """
        group = self.group(size=2)
        dead = self.spawned[0]
        dead.exit(code=1)
        self.assertEqual(self.serving(group), [self.spawned[1].pid])
        self.reactor.advance(BACKOFF_FIRST - 0.01)
        self.assertEqual(len(self.spawned), 2)
        self.reactor.advance(0.01)
        self.assertEqual(len(self.spawned), 3)
        self.spawned[2].report_ready()
        self.assertEqual(self.serving(group), [self.spawned[2].pid, self.spawned[1].pid])
        self.spawned[2].exit(code=1)  # died young again: twice the wait
        self.reactor.advance(BACKOFF_FIRST * 2 - 0.01)
        self.assertEqual(len(self.spawned), 3)
        self.reactor.advance(0.01)
        self.assertEqual(len(self.spawned), 4)
        self.assertEqual(group.deaths, 2)
        self.assertIn(
            f"{MASTER}: worker {dead.pid} (slot 0) died (status 1); replacing it in 0.5s",
            self.messages,
        )

    def test_long_life_resets_the_backoff(self) -> None:
        group = self.group(size=1)
        self.spawned[0].exit(code=1)
        self.reactor.advance(BACKOFF_FIRST)
        self.spawned[1].report_ready()
        self.reactor.advance(60)  # lived long
        self.spawned[1].exit(code=1)
        self.reactor.advance(BACKOFF_FIRST)
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(group.status().to_json()["last_replaced_reason"], {"0": "died"})

    def test_no_refill_while_leaving(self) -> None:
        group = self.group(size=2)
        group.shutdown()
        self.spawned[0].exit(code=0)
        self.reactor.advance(BACKOFF_MAX)
        self.assertEqual(len(self.spawned), 2)


class RecyclingTests(GroupTestCase):
    def test_replaced_after_max_requests(self) -> None:
        """
        A worker that reports its max_requests is replaced: its successor is
        started and ready before the old one is told to retire.
        """
        self.core.settings.max_requests = 100
        group = self.group()
        old = self.spawned[0]
        report(old, requests=99)
        self.assertEqual(len(self.spawned), 2)
        report(old, requests=100)
        self.assertEqual(len(self.spawned), 3)
        new = self.spawned[2]
        self.assertFalse(retired(old))
        self.assertEqual(self.serving(group), [old.pid, self.spawned[1].pid])
        new.report_ready()
        self.assertTrue(retired(old))
        self.assertEqual(self.serving(group), [new.pid, self.spawned[1].pid])
        self.assertEqual(group.recycler.recycles, 1)
        self.assertIn(
            f"{MASTER}: recycling worker {old.pid} (slot 0) after 100 requests", self.messages
        )
        entry = [w for w in group.status().to_json()["workers"] if w["pid"] == new.pid][0]
        self.assertEqual(entry["last_replaced_reason"], "recycle")

    def test_jitter_from_seeded_random(self) -> None:
        """
        Each worker's limit is max_requests plus a draw of 0..jitter from the
        group's random source.
        """
        self.core.settings.max_requests = 1000
        self.core.settings.max_requests_jitter = 50
        group = self.group(size=3, seed=7)
        expected = random.Random(7)
        self.assertEqual(
            [w.limit for w in group.workers], [1000 + expected.randint(0, 50) for _ in range(3)]
        )
        limit = group.workers[0].limit
        report(self.spawned[0], requests=limit - 1)
        self.assertEqual(len(self.spawned), 3)
        report(self.spawned[0], requests=limit)
        self.assertEqual(len(self.spawned), 4)

    def test_one_at_a_time(self) -> None:
        """
        Two workers due at once are replaced one after the other.
        """
        self.core.settings.max_requests = 10
        group = self.group()
        first, second = self.spawned
        report(first, requests=10)
        report(second, requests=10)
        report(first, requests=11)
        self.assertEqual(len(self.spawned), 3)
        self.spawned[2].report_ready()
        self.assertEqual(len(self.spawned), 4)
        self.assertFalse(retired(second))
        self.spawned[3].report_ready()
        self.assertTrue(retired(second))
        self.assertEqual(self.serving(group), [self.spawned[2].pid, self.spawned[3].pid])
        self.assertEqual(group.recycler.recycles, 2)

    def test_not_during_a_roll(self) -> None:
        """
        A worker due during a roll waits for the roll, which replaces it.
        """
        self.core.settings.max_requests = 10
        group = self.group()
        group.restart(None)
        self.assertEqual(len(self.spawned), 3)  # the roll's first worker
        report(self.spawned[1], requests=10)
        self.assertEqual(len(self.spawned), 3)
        self.spawned[2].report_ready()
        self.spawned[3].report_ready()
        self.assertFalse(group.rolling)
        self.assertEqual(len(self.spawned), 4)  # the roll replaced it already

    def test_failed_successor_keeps_old(self) -> None:
        """
        If the new worker does not come up, the old one goes on serving, and
        recycling waits a while before it tries again.
        """
        self.core.settings.max_requests = 10
        group = self.group()
        old = self.spawned[0]
        report(old, requests=10)
        self.spawned[2].ready.errback(Failure(RuntimeError("boom")))
        self.assertEqual(self.serving(group)[0], old.pid)
        self.assertFalse(retired(old))
        self.assertEqual(group.recycler.recycles, 0)
        # Not again at once: a broken release would spin.
        report(old, requests=11)
        self.assertEqual(len(self.spawned), 3)
        self.reactor.advance(RECYCLE_PAUSE)
        report(old, requests=12)
        self.assertEqual(len(self.spawned), 4)

    def test_memory_limit(self) -> None:
        """
        A worker whose reported RSS is over max_worker_memory is replaced
        the same way, for reason "memory".
        """
        self.core.settings.max_worker_memory = 200
        group = self.group()
        old = self.spawned[1]
        report(old, rss_mib=150)
        self.assertEqual(len(self.spawned), 2)
        report(old, rss_mib=250)
        self.spawned[2].report_ready()
        self.assertTrue(retired(old))
        self.assertEqual(self.serving(group)[1], self.spawned[2].pid)
        self.assertEqual(group.status().to_json()["last_replaced_reason"], {"1": "memory"})
        self.assertIn(
            f"{MASTER}: recycling worker {old.pid} (slot 1) at 250 MiB of memory", self.messages
        )

    def test_off_by_default(self) -> None:
        """
        With the defaults, no number of requests or memory recycles.
        """
        self.group()
        report(self.spawned[0], requests=10**9, rss_mib=10**6)
        self.assertEqual(len(self.spawned), 2)


class WatchdogTests(GroupTestCase):
    def test_silent_worker_killed_and_replaced(self) -> None:
        """
        A worker silent past worker_timeout gets SIGUSR2 (its stacks), then
        SIGKILL; once it is dead its slot is refilled.
        """
        self.core.settings.worker_timeout = 3
        group = self.group()
        stuck, fine = self.spawned
        for _ in range(6):
            self.reactor.advance(0.5)
            report(fine)
        self.assertEqual(stuck.signals, [])
        self.reactor.advance(0.5)
        report(fine)
        self.reactor.advance(0.5)
        report(fine)
        self.assertEqual(stuck.signals[0], signal.SIGUSR2)
        self.assertNotIn(signal.SIGKILL, stuck.signals)
        self.assertIn(
            f"{MASTER}: worker {stuck.pid} (slot 0) sent no heartbeat for 4.0 s; killing it",
            self.messages,
        )
        self.reactor.advance(STACK_DUMP_WAIT)
        self.assertEqual(stuck.signals[-1], signal.SIGKILL)
        stuck.exit(code=None, signal=signal.SIGKILL)
        for _ in range(4):  # past the back-off
            self.reactor.advance(0.5)
            report(fine)
        self.assertEqual(len(self.spawned), 3)
        self.spawned[2].report_ready()
        self.assertEqual(self.serving(group), [self.spawned[2].pid, fine.pid])
        self.assertEqual(group.watchdog.timeouts, 1)
        self.assertEqual(group.status().to_json()["last_replaced_reason"], {"0": "timeout"})
        self.assertEqual(group.status().to_json()["worker_replacements"], {"timeout": 1})
        self.assertEqual(fine.signals, [])

    def test_off(self) -> None:
        """
        worker_timeout = 0 never kills.
        """
        self.group()
        self.reactor.advance(1000)
        self.assertEqual([p.signals for p in self.spawned], [[], []])

    def test_status_sums_the_servers_of_the_workers(self) -> None:
        """
        The group's servers show their connections, responses and request
        durations summed over the workers, as the metrics read them.
        """
        group = self.group()
        for process, count in zip(self.spawned, (1, 2)):
            process.say(Status(ProcessStatus(
                pid=process.pid, generation=1, role="worker",
                servers=(ServerStatus(
                    "s", requests=count, connections={"http/1.1": count, "websocket": 1},
                    responses={"2xx": count, "5xx": 1}, duration_counts=(count, 0, 1),
                    duration_sum=0.5, refused={"limit_concurrency": count},
                ),),
            )))
        [server] = group.status().servers
        self.assertEqual(
            (server.requests, server.connections, server.responses, server.duration_counts,
             server.duration_sum, server.refused),
            (3, {"http/1.1": 3, "websocket": 2}, {"2xx": 3, "5xx": 2}, (3, 0, 2), 1.0,
             {"limit_concurrency": 3}),
        )

    def test_status_shows_heartbeat(self) -> None:
        """
        The status shows each worker's requests, RSS and seconds since its
        last report.
        """
        group = self.group()
        report(self.spawned[0], requests=5, rss_mib=42.5)
        self.reactor.advance(2)
        entry = group.status().to_json()["workers"][0]
        self.assertEqual(
            (entry["requests"], entry["rss_mib"], entry["last_heartbeat"]), (5, 42.5, 2.0)
        )
