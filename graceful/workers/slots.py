# -*- test-case-name: tests.unit.workers.test_group -*-
"""
The bookkeeping of a master's slots: which worker serves each, how often
each slot's workers died in a row (for the back-off before the next), the
starts waiting out that back-off, why each slot's worker was last replaced,
and the slots handed over to a new master.
"""

from __future__ import annotations

from typing import Any, Callable

from attrs import define, field

from .starter import Worker

#: Back-off before replacing a worker that died: doubles per death in a row,
#: from the first to the last value; a worker that lived long resets it.
BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_AFTER = 0.5, 30.0, 10.0


def backoff(deaths_in_row: int) -> float:
    """
    Seconds to wait before the next start of a slot whose workers died
    C{deaths_in_row} times in a row before.
    """
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * (2**deaths_in_row)))


@define(eq=False)
class SlotBook:
    """
    What a master knows of its slots.

    @ivar clock: the reactor, asked for when a start is put off.
    @ivar last_reason: why each slot's worker was last replaced.
    @ivar replacements: how many replacements each reason caused.
    """

    clock: Callable[[], Any]
    last_reason: dict[int, str] = field(factory=dict)
    replacements: dict[str, int] = field(factory=dict)
    _serving: dict[int, Worker] = field(factory=dict)
    _deaths_in_row: dict[int, int] = field(factory=dict)
    _waiting: dict[int, Any] = field(factory=dict)
    _handed_over: set[int] = field(factory=set)

    @property
    def serving(self) -> dict[int, Worker]:
        "The worker that serves each slot, if any."
        return self._serving

    def get(self, slot: int) -> Worker | None:
        return self._serving.get(slot)

    def serve(self, slot: int, worker: Worker) -> None:
        self._serving[slot] = worker

    def replace(self, slot: int, worker: Worker, reason: str) -> None:
        self._serving[slot] = worker
        self.replaced(slot, reason)

    def replaced(self, slot: int, reason: str) -> None:
        self.last_reason[slot] = reason
        self.replacements[reason] = self.replacements.get(reason, 0) + 1

    def vacate(self, slot: int) -> Worker | None:
        return self._serving.pop(slot, None)

    def died(self, slot: int, lived: float | None = None) -> float:
        """
        A worker of C{slot} died (or did not come up), having served
        C{lived} seconds: how long to wait before the next start.
        """
        healthy = lived is not None and lived > HEALTHY_AFTER
        in_row = 0 if healthy else self._deaths_in_row.get(slot, 0)
        self._deaths_in_row[slot] = in_row + 1
        return backoff(in_row)

    # -- starts put off -----------------------------------------------------

    def later(self, slot: int, delay: float, start: Callable[[int], None]) -> None:
        "Call C{start(slot)} after C{delay} seconds."
        self._waiting[slot] = self.clock().callLater(delay, start, slot)

    def waiting(self, slot: int) -> bool:
        "Whether a start of C{slot} is put off."
        return slot in self._waiting

    def waited(self, slot: int) -> None:
        "The start put off has come."
        self._waiting.pop(slot, None)

    def stop_waiting(self, slot: int | None = None) -> None:
        "Cancel the start put off of C{slot}, or of every slot."
        slots = list(self._waiting) if slot is None else [slot]
        for one in slots:
            call = self._waiting.pop(one, None)
            if call is not None and call.active():
                call.cancel()

    # -- a new master --------------------------------------------------------

    def hand_over(self, slot: int) -> Worker | None:
        """
        A new master's worker serves C{slot} now: stop serving it here.
        @return: our worker there, which may drain.
        """
        self._handed_over.add(slot)
        self.stop_waiting(slot)
        return self._serving.pop(slot, None)

    def handed_over(self, slot: int) -> bool:
        return slot in self._handed_over

    def take_back(self, size: int) -> list[int]:
        """
        The new master failed: the slots handed over to it that need a
        worker of ours again.
        """
        slots, self._handed_over = sorted(self._handed_over), set()
        return [
            slot
            for slot in slots
            if slot < size and slot not in self._serving and slot not in self._waiting
        ]
