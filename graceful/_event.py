# -*- test-case-name: tests.unit.test_event -*-
"""
Something that happens once, that any number of parties can wait for.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred


@define
class Event:
    """
    A one-time event: C{wait()} gives each waiter a Deferred of its own, so
    no waiter can change what another one receives.
    """

    happened: bool = False
    _waiting: list[Deferred[None]] = field(factory=list)

    def happen(self) -> None:
        if self.happened:
            return
        self.happened = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def wait(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.happened:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d
