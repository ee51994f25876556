# -*- test-case-name: tests.unit.workers.test_group -*-
"""
Which worker of a master's group runs the background services: one at a
time, slot 0's, and never two generations at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from attrs import define, field

from .._event import Event
from ..handoff.messages import Released

if TYPE_CHECKING:
    from .starter import Worker


@define(eq=False)
class ServicesBaton:
    """
    The right to run the services, passed to slot 0's worker with a
    C{Released} message and handed back by the same message once its
    services have stopped.

    @ivar hold: whether slot 0 waits before it runs them (a new master's,
        until the old master's stopped).
    @ivar runner: the worker told to run them, until it says they stopped
        or it is gone.  A slot already handed over to a new master may hold
        it still, stopping them: with forked workers a new master came up
        before the old slot 0 had stopped its job.
    @ivar stopped: happens once, leaving, the services stopped.
    """

    now: Callable[[], float]
    hold: bool = False
    runner: Worker | None = None
    stopped: Event = field(factory=Event)

    def pass_to(self, worker: Worker | None) -> None:
        """
        The services may run: on C{worker} (slot 0's), if it serves.
        """
        if self.hold or worker is None or not worker.ready:
            return
        self.runner = worker
        worker.process.send(Released(round(self.now(), 6)))

    def released_by(self, worker: Worker, leaving: bool) -> None:
        """
        C{worker} says its services stopped.
        """
        if worker is self.runner:
            self.runner = None
        if leaving and self.runner is None:
            self.stopped.happen()

    def gone(self, worker: Worker, leaving: bool) -> None:
        if worker is self.runner:
            self.runner = None
            if leaving:
                self.stopped.happen()

    def leave(self) -> None:
        """
        The group leaves: the services have stopped unless a worker of ours
        runs them.
        """
        if self.hold or self.runner is None:
            self.stopped.happen()
