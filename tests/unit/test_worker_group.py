"""
Unit tests of the master's worker group: recycling after max_requests or
past max_worker_memory, and the heartbeat watchdog, on a fake clock with
fake worker processes.
"""

from __future__ import annotations

import json
import random
import signal
from typing import Any, cast

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from graceful._runtime import Settings
from graceful._workers import BACKOFF_MAX, STACK_DUMP_WAIT, WorkerGroup


@define
class FakeTransport:
    signals: list[str] = field(factory=list)

    def signalProcess(self, number: int) -> None:
        self.signals.append(signal.Signals(number).name.removeprefix("SIG"))


@define(eq=False)
class FakeProcess:
    """
    A worker process: ready when the test says so.
    """

    pid: int
    transport: FakeTransport = field(factory=FakeTransport)
    ready: Deferred[int] = field(factory=Deferred)
    ready_facts: dict[str, Any] = field(factory=dict)
    sent: list[tuple[str, str]] = field(factory=list)
    killed: bool = False
    on_message: Any = None
    on_exit: Any = None

    def send(self, kind: str, payload: str = "") -> None:
        self.sent.append((kind, payload))

    def kill(self) -> None:
        self.killed = True

    def come_up(self) -> None:
        self.ready.callback(self.pid)

    def report(self, requests: int = 0, rss_mib: float = 10.0) -> None:
        status = {"servers": [{"name": "s", "ports": [], "requests": requests}], "rss_mib": rss_mib}
        self.on_message("status", json.dumps(status))

    def die(self, signal: str | None = None) -> None:
        self.on_exit(Failure(ProcessTerminated(exitCode=None if signal else 1, signal=signal)))


@define
class FakeRuntime:
    """
    What a worker group uses of its runtime.
    """

    settings: Settings = field(factory=Settings)
    reactor: MemoryReactorClock = field(factory=MemoryReactorClock)
    pid: int = 100
    generation: int = 1
    environ: dict[str, str] = field(factory=dict)
    cwd: str = "/"
    servers: dict[str, Any] = field(factory=dict)

    def command_for(self, executable: str | None) -> list[str]:
        return ["app"]

    def forward_stderr(self, data: bytes) -> None:
        pass

    def own_status(self) -> dict[str, Any]:
        return {"pid": self.pid}


class GroupTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.runtime = FakeRuntime()
        self.runtime.settings.worker_timeout = 0
        self.spawned: list[FakeProcess] = []
        self.messages: list[str] = []

        def observe(event: LogEvent) -> None:
            self.messages.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def spawn(self, *args: object, **kwargs: object) -> FakeProcess:
        process = FakeProcess(pid=1000 + len(self.spawned))
        self.spawned.append(process)
        return process

    def group(self, size: int = 2, seed: int = 1) -> WorkerGroup:
        group = WorkerGroup(self.runtime, size, rng=random.Random(seed), spawner=self.spawn)  # type: ignore[arg-type]
        group.serve()
        for process in list(self.spawned):
            process.come_up()
        self.addCleanup(group._leave)
        return group

    def serving(self, group: WorkerGroup) -> list[int]:
        return [group._slots[slot].pid for slot in sorted(group._slots)]


class RecyclingTests(GroupTestCase):
    def test_replaced_after_max_requests(self) -> None:
        """
        A worker that reports its max_requests is replaced: its successor is
        started and ready before the old one is told to retire.
        """
        self.runtime.settings.max_requests = 100
        group = self.group()
        old = self.spawned[0]
        old.report(requests=99)
        self.assertEqual(len(self.spawned), 2)
        old.report(requests=100)
        self.assertEqual(len(self.spawned), 3)
        new = self.spawned[2]
        self.assertNotIn(("retire", ""), old.sent)
        self.assertEqual(self.serving(group), [old.pid, self.spawned[1].pid])
        new.come_up()
        self.assertIn(("retire", ""), old.sent)
        self.assertEqual(self.serving(group), [new.pid, self.spawned[1].pid])
        self.assertEqual(group.recycles, 1)
        self.assertIn(f"100: recycling worker {old.pid} (slot 0) after 100 requests", self.messages)
        entry = [w for w in group.status()["workers"] if w["pid"] == new.pid][0]
        self.assertEqual(entry["last_replaced_reason"], "recycle")

    def test_jitter_from_seeded_random(self) -> None:
        """
        Each worker's limit is max_requests plus a draw of 0..jitter from the
        group's random source.
        """
        self.runtime.settings.max_requests = 1000
        self.runtime.settings.max_requests_jitter = 50
        group = self.group(size=3, seed=7)
        expected = random.Random(7)
        self.assertEqual(
            [w.limit for w in group.workers], [1000 + expected.randint(0, 50) for _ in range(3)]
        )
        limit = group.workers[0].limit
        self.spawned[0].report(requests=limit - 1)
        self.assertEqual(len(self.spawned), 3)
        self.spawned[0].report(requests=limit)
        self.assertEqual(len(self.spawned), 4)

    def test_one_at_a_time(self) -> None:
        """
        Two workers due at once are replaced one after the other.
        """
        self.runtime.settings.max_requests = 10
        group = self.group()
        first, second = self.spawned
        first.report(requests=10)
        second.report(requests=10)
        first.report(requests=11)
        self.assertEqual(len(self.spawned), 3)
        self.spawned[2].come_up()
        self.assertEqual(len(self.spawned), 4)
        self.assertNotIn(("retire", ""), second.sent)
        self.spawned[3].come_up()
        self.assertIn(("retire", ""), second.sent)
        self.assertEqual(self.serving(group), [self.spawned[2].pid, self.spawned[3].pid])
        self.assertEqual(group.recycles, 2)

    def test_not_during_a_roll(self) -> None:
        """
        A worker due during a roll waits for the roll; the roll replaces it.
        """
        self.runtime.settings.max_requests = 10
        group = self.group()
        group._roll_result = Deferred()  # a roll is under way
        self.spawned[1].report(requests=10)
        self.assertEqual(len(self.spawned), 2)
        group._roll_result = None
        group._next_recycle()
        self.assertEqual(len(self.spawned), 3)

    def test_failed_successor_keeps_old(self) -> None:
        """
        If the new worker does not come up, the old one goes on serving, and
        recycling waits a while before it tries again.
        """
        self.runtime.settings.max_requests = 10
        group = self.group()
        old = self.spawned[0]
        old.report(requests=10)
        self.spawned[2].ready.errback(Failure(RuntimeError("boom")))
        self.assertEqual(self.serving(group)[0], old.pid)
        self.assertNotIn(("retire", ""), old.sent)
        self.assertEqual(group.recycles, 0)
        # Not again at once: a broken release would spin.
        old.report(requests=11)
        self.assertEqual(len(self.spawned), 3)
        self.runtime.reactor.advance(BACKOFF_MAX)
        old.report(requests=12)
        self.assertEqual(len(self.spawned), 4)

    def test_memory_limit(self) -> None:
        """
        A worker whose reported RSS is over max_worker_memory is replaced
        the same way, for reason "memory".
        """
        self.runtime.settings.max_worker_memory = 200
        group = self.group()
        old = self.spawned[1]
        old.report(rss_mib=150)
        self.assertEqual(len(self.spawned), 2)
        old.report(rss_mib=250)
        self.spawned[2].come_up()
        self.assertIn(("retire", ""), old.sent)
        self.assertEqual(self.serving(group)[1], self.spawned[2].pid)
        self.assertEqual(group.status()["last_replaced_reason"], {"1": "memory"})
        self.assertIn(f"100: recycling worker {old.pid} (slot 1) at 250 MiB of memory", self.messages)

    def test_off_by_default(self) -> None:
        """
        With the defaults, no number of requests or memory recycles.
        """
        self.group()
        self.spawned[0].report(requests=10**9, rss_mib=10**6)
        self.assertEqual(len(self.spawned), 2)


class WatchdogTests(GroupTestCase):
    def test_silent_worker_killed_and_replaced(self) -> None:
        """
        A worker silent past worker_timeout gets SIGUSR2 (its stacks), then
        SIGKILL; once it is dead its slot is refilled.
        """
        self.runtime.settings.worker_timeout = 3
        group = self.group()
        clock = self.runtime.reactor
        stuck, fine = self.spawned
        for _ in range(6):
            clock.advance(0.5)
            fine.report()
        self.assertEqual(stuck.transport.signals, [])
        clock.advance(0.5)
        fine.report()
        clock.advance(0.5)
        fine.report()
        self.assertEqual(stuck.transport.signals[0], "USR2")
        self.assertNotIn("KILL", stuck.transport.signals)
        self.assertIn(
            f"100: worker {stuck.pid} (slot 0) sent no heartbeat for 4.0 s; killing it",
            self.messages,
        )
        clock.advance(STACK_DUMP_WAIT)
        self.assertEqual(stuck.transport.signals[-1], "KILL")
        stuck.die(signal="KILL")
        for _ in range(4):  # past the back-off
            clock.advance(0.5)
            fine.report()
        self.assertEqual(len(self.spawned), 3)
        self.spawned[2].come_up()
        self.assertEqual(self.serving(group), [self.spawned[2].pid, fine.pid])
        self.assertEqual(group.timeouts, 1)
        self.assertEqual(group.status()["last_replaced_reason"], {"0": "timeout"})
        self.assertEqual(fine.transport.signals, [])

    def test_off(self) -> None:
        """
        worker_timeout = 0 never kills.
        """
        self.group()
        self.runtime.reactor.advance(1000)
        self.assertEqual([p.transport.signals for p in self.spawned], [[], []])

    def test_status_shows_heartbeat(self) -> None:
        """
        The status shows each worker's requests, RSS and seconds since its
        last report.
        """
        group = self.group()
        self.spawned[0].report(requests=5, rss_mib=42.5)
        self.runtime.reactor.advance(2)
        entry = group.status()["workers"][0]
        self.assertEqual(
            (entry["requests"], entry["rss_mib"], entry["last_heartbeat"]), (5, 42.5, 2.0)
        )
