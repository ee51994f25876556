# -*- test-case-name: tests.unit.workers.test_group -*-
"""
Keeping workers healthy: recycling those that served their requests or grew
too big, one at a time and the way a roll replaces them (the successor
ready first), and killing those whose reactor stopped turning.
"""

from __future__ import annotations

from typing import Callable, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from ..lifecycle.core import ProcessCore
from .starter import Worker

#: After a successor failed to come up, seconds with no recycling (the old
#: worker still serves; a broken release must not spin).
RECYCLE_PAUSE = 30.0

#: Seconds between SIGUSR2 (the worker's faulthandler dumps its stacks) and
#: SIGKILL for a worker that stopped heart-beating.
STACK_DUMP_WAIT = 0.5


class Slots(Protocol):
    """
    What recycling needs of the group.
    """

    def serving(self, slot: int) -> Worker | None:
        "The worker that serves C{slot}."

    def busy(self) -> bool:
        "Whether a roll runs or the group leaves: no recycling then."

    def replace(self, slot: int, worker: Worker, reason: str) -> None:
        "C{worker} serves C{slot} now."

    def start(self, slot: int, generation: int) -> Deferred[Worker]:
        "Start a worker for C{slot}."


@define(eq=False)
class Recycler:
    """
    Replaces workers past max_requests or max_worker_memory.

    @ivar process: the master.
    @ivar slots: the group.
    @ivar recycles: workers recycled so far.
    """

    process: ProcessCore
    slots: Slots
    recycles: int = 0
    _queue: list[tuple[Worker, str]] = field(factory=list)
    _current: Worker | None = None
    _paused_until: float = 0.0

    def check(self, worker: Worker) -> None:
        """
        Queue a serving worker for replacement once it has served its
        requests or grown past the memory limit.
        """
        if worker.retiring or self.slots.serving(worker.slot) is not worker:
            return
        if worker is self._current or any(w is worker for w, _ in self._queue):
            return
        if self.process.reactor.seconds() < self._paused_until:
            return
        settings = self.process.settings
        rss = worker.rss_mib or 0
        if worker.limit and worker.requests >= worker.limit:
            reason = "recycle"
        elif settings.max_worker_memory > 0 and rss > settings.max_worker_memory:
            reason = "memory"
        else:
            return
        self._queue.append((worker, reason))
        self.next()

    def clear(self) -> None:
        self._queue.clear()

    def next(self) -> None:
        """
        Replace the next queued worker; one at a time, never during a roll.
        """
        if self._current is not None or self.slots.busy():
            return
        while self._queue:
            old, reason = self._queue.pop(0)
            if not old.retiring and self.slots.serving(old.slot) is old:
                break
        else:
            return
        self._current = old
        core = self.process
        slot = old.slot
        if reason == "memory":
            why = f"at {old.rss_mib or 0:.0f} MiB of memory"
        else:
            why = f"after {old.requests} requests"
        core.log.info(
            "{pid}: recycling worker {worker} (slot {slot}) {why}",
            pid=core.pid,
            worker=old.pid,
            slot=slot,
            why=why,
        )

        def ready(worker: Worker) -> None:
            self._current = None
            if self.slots.busy() or self.slots.serving(slot) is not old:
                # A roll or a death replaced the slot meanwhile.
                worker.retire(core.reactor)
            else:
                self.slots.replace(slot, worker, reason)
                self.recycles += 1
                # The new worker serves: only now may the old one drain.
                old.retire(core.reactor)
            self.next()

        def failed(failure: Failure) -> None:
            self._current = None
            self._paused_until = core.reactor.seconds() + RECYCLE_PAUSE
            core.log.error(
                "{pid}: the new worker for slot {slot} did not come up; worker {worker} "
                "goes on serving, and recycling waits {delay:g}s: {why}",
                delay=RECYCLE_PAUSE,
                pid=core.pid,
                slot=slot,
                worker=old.pid,
                why=failure.getErrorMessage(),
            )
            self.next()

        self.slots.start(slot, old.generation).addCallbacks(ready, failed)


@define(eq=False)
class Watchdog:
    """
    Kills a serving worker that has not reported within worker_timeout: its
    reactor is stuck.  SIGUSR2 first, so that its faulthandler writes the
    stacks to its stderr; the group replaces it as it would a dead one.

    @ivar process: the master.
    @ivar workers: the group's workers.
    @ivar timeouts: workers killed so far.
    """

    process: ProcessCore
    workers: Callable[[], list[Worker]]
    timeouts: int = 0
    _loop: LoopingCall | None = None

    def start(self) -> None:
        timeout = self.process.settings.worker_timeout
        if timeout > 0:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self.process.reactor
            self._loop.start(min(1.0, timeout / 2), now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        core = self.process
        timeout = core.settings.worker_timeout
        now = core.reactor.seconds()
        for worker in list(self.workers()):
            if not worker.ready or worker.retiring or worker.killed_for is not None:
                continue
            silent = now - worker.last_heartbeat
            if silent <= timeout:
                continue
            worker.killed_for = "timeout"
            self.timeouts += 1
            core.log.error(
                "{pid}: worker {worker} (slot {slot}) sent no heartbeat for {silent:.1f} s; "
                "killing it",
                pid=core.pid,
                worker=worker.pid,
                slot=worker.slot,
                silent=silent,
            )
            worker.signal("USR2")
            # A SIGSTOPped worker dumps its stacks only once it runs again.
            worker.signal("CONT")
            core.reactor.callLater(STACK_DUMP_WAIT, worker.signal, "KILL")
