# -*- test-case-name: tests.unit.process.test_runtime -*-
"""
Which role a process plays: serving alone, as a master of workers, or as
a worker; chosen once, as it starts serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..lifecycle.core import ProcessCore
from ..lifecycle.handover import SingleRole
from ..lifecycle.roles import Role

if TYPE_CHECKING:
    from ..workers.worker import WorkerRole


class RoleChoice:
    """
    The role of one process, chosen once: when serving starts, or on first
    need.  Until then it says which it would be.
    """

    def __init__(
        self,
        core: ProcessCore,
        worker: WorkerRole | None,
        serve_admin_socket: Callable[[], None],
    ) -> None:
        """
        @param worker: the worker role, when a master started this process.
        @param serve_admin_socket: serves the private admin socket (a master
            does once it holds its workers' sockets).
        """
        self._core = core
        self._worker = worker
        self._serve_admin_socket = serve_admin_socket
        self.chosen: Role | None = None

    @property
    def name(self) -> str:
        """
        C{"single"}: serves alone; C{"master"}: holds the sockets for its
        workers and serves nothing (with C{workers > 1}, or as PID 1);
        C{"worker"}: serves for a master.
        """
        if self.chosen is not None:
            return self.chosen.name
        if self._worker is not None:
            return "worker"
        # As PID 1 (a container) a re-exec would end the PID namespace with
        # the old process: be a master that never leaves, even for 1 worker.
        return "master" if self._core.settings.workers > 1 or self._core.pid == 1 else "single"

    def role(self) -> Role:
        """
        The role, chosen now if it was not yet.
        """
        if self.chosen is None:
            name = self.name
            if self._worker is not None:
                self.chosen = self._worker
            elif name == "master":
                # Only a master loads the group, its starter and template
                # (nine modules a process serving alone never runs).
                from ..workers.master import MasterRole

                self.chosen = MasterRole(self._core, self._serve_admin_socket)
            else:
                self.chosen = SingleRole(self._core)
        return self.chosen

    @property
    def draining(self) -> bool:
        return self.chosen is not None and self.chosen.draining

    @property
    def restarting(self) -> bool:
        return self.chosen is not None and self.chosen.restarting
