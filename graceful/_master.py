"""
A master: holds every listening socket for its workers and serves nothing
itself; a restart rolls the workers, a shutdown drains them all.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ._core import ProcessCore
from ._worker_group import WorkerGroup
from ._workers import HeldSocket


class MasterRole:
    """
    The role of a master.

    @ivar name: C{"master"}.
    @ivar process: the process.
    @ivar group: its workers, once started.
    @ivar serve_admin_socket: serves the private admin socket (the master
        speaks for the whole group there).
    """

    name = "master"

    def __init__(
        self,
        process: ProcessCore,
        serve_admin_socket: Callable[[], None] = lambda: None,
    ) -> None:
        self.process = process
        self.serve_admin_socket = serve_admin_socket
        self.group: WorkerGroup | None = None

    def start(self) -> None:
        process = self.process
        held = [
            HeldSocket(prepared.spec, prepared.fd, prepared.owner)
            for server in process.servers.values()
            for prepared in server.take_prepared()
        ]
        self.serve_admin_socket()
        self.group = WorkerGroup(
            process,
            process.settings.workers,
            held,
            on_restart=lambda executable: self.restart(executable).addErrback(lambda f: None),
            on_shutdown=self.shutdown,
        )

        def ready(_: object) -> None:
            process.log.info(
                "{pid}: {count} workers serve", pid=process.pid, count=process.settings.workers
            )
            process.announce_serving(process.pid)

        def failed(failure: Failure) -> None:
            process.log.error(
                "{pid}: the workers did not come up: {why}",
                pid=process.pid,
                why=failure.getErrorMessage(),
            )
            self.shutdown()

        self.group.serve().addCallbacks(ready, failed)

    def restart(self, executable: str | None) -> Deferred[int]:
        assert self.group is not None
        return self.group.restart(executable)

    def shutdown(self) -> Deferred[None]:
        process = self.process
        group = self.group
        if group is None or group.leaving:
            return process.when_exited()
        process.log.info("{pid}: server shutting down", pid=process.pid)
        process.notifier.notify(stopping=1)
        if process.admin_port is not None:
            process.admin_port.stopListening()
        group.shutdown().addBoth(lambda _: process.exit(handed_over=False, final=True))
        return process.when_exited()

    leave = shutdown

    def shutdown_signalled(self) -> None:
        self.shutdown()

    @property
    def draining(self) -> bool:
        return self.group is not None and self.group.leaving

    @property
    def restarting(self) -> bool:
        return self.group is not None and self.group.rolling

    def status(self) -> dict[str, Any]:
        if self.group is None:
            return self.process.own_status(self.name, False, False, None)
        return self.group.status()
