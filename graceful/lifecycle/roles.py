"""
The one interface of the three roles a process can play: serving alone
(L{graceful.lifecycle.handover}), master (L{graceful.workers.master}) and worker
(L{graceful.workers.worker}).
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from .._status import ProcessStatus


class Role(Protocol):
    """
    What a process does, as opposed to what it has.
    """

    name: str

    def start(self) -> None:
        """
        The reactor runs and the servers are prepared: begin serving.
        """

    def restart(self, executable: str | None) -> Deferred[int]:
        """
        Replace the serving code (a new generation, or every worker).
        """

    def shutdown(self) -> Deferred[None]:
        """
        Drain and exit: the whole process, with its workers.
        """

    def leave(self) -> Deferred[None]:
        """
        Drain and exit: this process alone.
        """

    def shutdown_signalled(self) -> None:
        """
        A shutdown signal arrived.
        """

    @property
    def draining(self) -> bool: ...

    @property
    def restarting(self) -> bool: ...

    def status(self) -> ProcessStatus:
        """
        The status the admin pages show.
        """
