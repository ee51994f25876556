# -*- test-case-name: tests.unit.workers.test_canary -*-
"""
The canary restart with workers.

The old master's side counts its workers' answers from their reports
(L{counting_workers}); the hand-over's L{CanaryWindow} does the rest.

The new master's side is L{CanaryStartup}: asked to be a canary, it starts
its first worker only, and that worker serves beside every worker of the old
master (which retires none yet) for the window; it says C{ready} (as a
canary) then, answers C{count} with that worker's counts, and, told that the
canary passed, replaces the old master's workers one slot at a time as a new
master does, before it says C{ready} again.  Rolled back, it drains its
worker and exits; the old master and its workers never stopped serving.

A master that is PID 1 rolls its workers instead (it never leaves): its
first new worker serves beside every old one for the window
(L{RollCanary}), and the roll replaces the workers only if it passed.
"""

from __future__ import annotations

from typing import Callable, Iterable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from ..handoff.messages import (
    Accepted,
    CanaryCounts,
    CanaryPassed,
    CountsRequest,
    Error,
    Message,
    Ready,
    Rollback,
    SlotServes,
)
from ..lifecycle import restart_log
from ..lifecycle.canary import CanaryVerdict, Counts, canary_asked, judge, rolled_back
from ..lifecycle.core import ProcessCore
from ..handoff.pipes import describe_exit
from ..lifecycle.handover import Departing
from .starter import Worker


def reported(workers: Iterable[Worker]) -> dict[Worker, Counts]:
    """
    What each worker answered, as it last reported (every STATUS_INTERVAL).
    """
    return {
        worker: Counts.of_servers(worker.report.servers if worker.report else ())
        for worker in workers
    }


def counting_workers(workers: Callable[[], list[Worker]]) -> Callable[[], Counts]:
    """
    Start counting the answers of a master's workers: the result gives those
    since, of every worker serving now or started since (one that left
    meanwhile counts with its last report).
    """
    at_start = reported(workers())
    seen = list(at_start)

    def since() -> Counts:
        for worker in workers():
            if worker not in at_start and worker not in seen:
                seen.append(worker)
        now = reported(seen)
        total = Counts()
        for worker in seen:
            total = total + now[worker].since(at_start.get(worker, Counts()))
        return total

    return since


@define(eq=False)
class CanaryStartup:
    """
    A new master serving as a canary, until the old master says how the
    window went.

    @ivar process: the new master.
    @ivar workers: its workers.
    @ivar depart: how it leaves once rolled back (its workers drain as
        replaced, then it exits, leaving the old master in charge).
    @ivar leaving: whether it leaves already (shut down on its own).
    @ivar go_on: fires once the other slots may be started: the canary
        passed, the old generation handed over, or it died.
    @ivar departure: its departure, once rolled back.
    """

    process: ProcessCore
    workers: Callable[[], list[Worker]]
    depart: Callable[[], Departing]
    leaving: Callable[[], bool] = lambda: False
    go_on: Deferred[None] = field(factory=Deferred)
    departure: Departing | None = None
    _first: bool = True

    @classmethod
    def requested(
        cls,
        process: ProcessCore,
        workers: Callable[[], list[Worker]],
        depart: Callable[[], Departing],
        leaving: Callable[[], bool],
    ) -> CanaryStartup | None:
        """
        A canary startup if the old generation asked for one; else L{None}.
        Asked or not, the variable is not passed on to our workers.
        """
        if not canary_asked(process):
            return None
        return cls(process, workers, depart, leaving)

    def in_turn(self, slot: int) -> Deferred[None] | None:
        """
        A worker of ours serves C{slot}: the first one serves beside the old
        master's workers, and the next slot waits for the verdict.
        """
        old = self.process.old_process
        if not self._first:
            old.send(SlotServes(slot))
            return None
        self._first = False
        process = self.process
        worker = next((w for w in self.workers() if w.slot == slot), None)
        process.log.info(
            "{pid}: worker {worker} (slot {slot}) serves beside the old generation; "
            "the other slots wait for the canary's verdict",
            pid=process.pid,
            worker=worker.pid if worker is not None else "?",
            slot=slot,
        )
        old.report_ready(Ready(canary=True), keep_open=True)

        def replace(_: None) -> None:
            # Only now may the old master's worker of this slot drain.
            if self.departure is None:
                old.send(SlotServes(slot))

        return self.go_on.addCallback(replace)

    def proceed(self) -> None:
        """
        The other slots may start: the canary passed, or the old
        generation handed over or died.
        """
        if not self.go_on.called and self.departure is None:
            self.go_on.callback(None)

    def took_over(self, then: Callable[[Accepted], None]) -> Callable[[Accepted], None]:
        """
        C{then}, after proceeding: an old process serving alone hands over
        at once once the canary passed.
        """

        def accepted(message: Accepted) -> None:
            self.proceed()
            then(message)

        return accepted

    def died(self, worker: Worker, reason: Failure) -> bool:
        """
        A worker of ours died on its own: during the window that fails the
        canary (its requests in flight were lost, and a worker started in
        its place would count from nothing); the old generation rolls us
        back.
        """
        if self.go_on.called or self.departure is not None:
            return False
        why = f"canary worker {worker.pid} {describe_exit(reason)} during the canary window"
        self.process.log.error("{pid}: {why}", pid=self.process.pid, why=why)
        self.process.old_process.send(Error(why))
        return True

    def heard(self, message: Message) -> None:
        if isinstance(message, CountsRequest):
            counts = sum(reported(self.workers()).values(), Counts())
            self.process.old_process.send(
                CanaryCounts(counts.responses, counts.errors, counts.resets)
            )
        elif isinstance(message, CanaryPassed):
            self.process.log.info(
                "{pid}: the canary passed; replacing the old master's other workers",
                pid=self.process.pid,
            )
            self.proceed()
        elif isinstance(message, Rollback):
            self._leave(message.reason)

    def _leave(self, reason: str) -> None:
        if self.departure is not None or self.leaving():
            return
        self.departure = rolled_back(self.process, reason, self.depart)


@define(eq=False)
class RollCanary:
    """
    A roll's canary window: the first new worker serves beside every old
    one; at the end of C{canary_seconds}, their reports are judged.

    @ivar process: the master.
    @ivar worker: the new worker.
    @ivar workers: every worker of the group (the new one among them while
        it lives).
    @ivar passed: called once it passed: the roll goes on.
    @ivar failed: called with the reason once it failed (the new worker
        was told to drain).
    @ivar leaving: whether the group leaves (then nothing is judged).
    @ivar verdict: how it went, once judged.
    """

    process: ProcessCore
    worker: Worker
    workers: Callable[[], list[Worker]]
    passed: Callable[[], None]
    failed: Callable[[str], None]
    leaving: Callable[[], bool]
    verdict: CanaryVerdict | None = None
    _old_since: Callable[[], Counts] = lambda: Counts()
    _timer: IDelayedCall | None = None

    def open(self) -> RollCanary:
        process, seconds = self.process, self.process.settings.canary_seconds
        self._old_since = counting_workers(
            lambda: [w for w in self.workers() if w is not self.worker]
        )
        self._timer = process.reactor.callLater(seconds, self._judge)
        process.log.info(
            "{pid}: new worker {worker} (slot {slot}) serves beside the others for "
            "{seconds:g}s (canary)",
            pid=process.pid,
            worker=self.worker.pid,
            slot=self.worker.slot,
            seconds=seconds,
        )
        return self

    def _judge(self) -> None:
        self._timer = None
        if self.leaving():
            return  # the group drains every worker, this one too
        process, worker = self.process, self.worker
        if worker not in self.workers():
            self.failed(f"canary worker {worker.pid} exited during the canary window")
            return
        new = Counts.of_servers(worker.report.servers if worker.report else ())
        allowance = process.settings.canary_max_error_ratio
        verdict = self.verdict = judge(self._old_since(), new, allowance)
        restart_log.canary(process, verdict.ratios, verdict.passed)
        if verdict.passed:
            process.log.info(
                "{pid}: canary passed: {reason}", pid=process.pid, reason=verdict.reason
            )
            self.passed()
        else:
            worker.retire(process.reactor)
            self.failed(verdict.reason)

    @property
    def ratios(self) -> tuple[float, float] | None:
        return self.verdict.ratios if self.verdict is not None else None
