"""
The one interface of the three roles a process can play: serving alone
(L{graceful.lifecycle.handover}), master (L{graceful.workers.master}) and worker
(L{graceful.workers.worker}).
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from .._errors import WorkerCountRefused
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

    def set_workers(self, count: int | None, step: int = 0, why: str = "") -> int:
        """
        Keep C{count} workers, or the current count plus C{step}; returns
        the new count.

        @raise graceful._errors.WorkerCountRefused: not now, not here, or a
            bad count.
        """


#: The most workers a count may ask for: far above any machine's cores, and
#: low enough that a typo (a count of 1000) is refused, not obeyed.
MAX_WORKERS = 256


def check_count(value: object) -> int:
    """
    The worker count C{value} (a form field's text, or a JSON number) asks
    for.

    @raise WorkerCountRefused: (400) it is not a whole number from 1 to
        L{MAX_WORKERS}.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise WorkerCountRefused(400, f"count must be a whole number, got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise WorkerCountRefused(400, f"count must be a whole number, got {value!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise WorkerCountRefused(400, f"count must be from 1 to {MAX_WORKERS}, got {count}")
    return count
