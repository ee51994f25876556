# -*- test-case-name: tests.unit.workers.test_group -*-
"""
Starting a slot's worker again when the one serving there died on its own
(or the watchdog killed it), after a back-off that grows with the deaths in
a row, so that a crashing app does not spin.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..lifecycle.core import ProcessCore
from .slots import SlotBook
from .starter import Worker


class Refill:
    """
    The slots of a group kept served: a worker that died is replaced after
    a back-off, and a replacement that does not come up is tried again;
    never while the group leaves, nor in a slot a new master serves.
    """

    def __init__(
        self,
        process: ProcessCore,
        slots: SlotBook,
        start: Callable[[int], Deferred[Worker]],
        leaving: Callable[[], bool],
        slot_zero_serves: Callable[[], None],
    ) -> None:
        """
        @param start: starts a worker for a slot (of the group's generation).
        @param leaving: whether the group leaves.
        @param slot_zero_serves: told that a new worker serves slot 0 (it
            may run the services).
        """
        self._process = process
        self._slots = slots
        self._start = start
        self._leaving = leaving
        self._slot_zero_serves = slot_zero_serves
        #: Told first of a worker that died; true if that is taken care of
        #: and its slot stays empty (a canary's worker fails the canary).
        self.handled: Callable[[Worker, Failure], bool] = lambda worker, reason: False

    def died(self, worker: Worker, reason: Failure) -> None:
        """
        C{worker}, which served its slot, died: replace it, after a back-off.
        """
        core = self._process
        self._slots.vacate(worker.slot)
        if self.handled(worker, reason):
            return
        self._slots.replaced(worker.slot, worker.killed_for or "died")
        delay = self._slots.died(worker.slot, lived=core.reactor.seconds() - worker.started)
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        core.log.warn(
            "{pid}: worker {worker} (slot {slot}) died ({how}); replacing it in {delay:g}s",
            pid=core.pid,
            worker=worker.pid,
            slot=worker.slot,
            how=f"signal {sig}" if sig else f"status {code}",
            delay=delay,
        )
        self._slots.later(worker.slot, delay, self.refill)

    def refill(self, slot: int) -> None:
        """
        Start a worker for C{slot}, unless it has one or is not ours to fill.
        """
        slots = self._slots
        slots.waited(slot)
        if self._leaving() or slots.get(slot) is not None or slots.handed_over(slot):
            return
        core = self._process

        def ready(worker: Worker) -> None:
            if self._leaving():
                worker.signal("TERM")
                return
            slots.serve(slot, worker)
            if slot == 0:
                self._slot_zero_serves()

        def failed(failure: Failure) -> None:
            core.log.error(
                "{pid}: the worker for slot {slot} did not come up: {why}",
                pid=core.pid,
                slot=slot,
                why=failure.getErrorMessage(),
            )
            slots.later(slot, slots.died(slot), self.refill)

        self._start(slot).addCallbacks(ready, failed)
