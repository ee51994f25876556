# -*- test-case-name: tests.unit.process.test_runtime -*-
"""
The signals a process answers: SIGUSR1 restarts; SIGTERM, SIGINT, SIGQUIT
and SIGHUP shut it down gracefully; SIGTTIN adds a worker and SIGTTOU
removes one (a master's).  A handler only schedules the work on the
reactor; the restart, the shutdown or the change runs there.
"""

from __future__ import annotations

import signal
from typing import Callable

from .._errors import WorkerCountRefused
from ..lifecycle.core import ProcessCore
from ..lifecycle.roles import Role

SHUTDOWN_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP")

#: The worker count's signals, as in gunicorn: one more, one less.
WORKER_SIGNALS = {"SIGTTIN": 1, "SIGTTOU": -1}


def install_signal_handlers(core: ProcessCore, role: Callable[[], Role]) -> None:
    """
    Have SIGUSR1 restart C{role()}, every shutdown signal shut it down, and
    SIGTTIN and SIGTTOU change its worker count, on C{core}'s reactor.
    """
    environment = core.environment
    reactor = core.reactor

    def restart() -> None:
        role().restart(None).addErrback(lambda failure: None)  # refusals log themselves

    def shutdown() -> None:
        # A worker leaves alone (its master asked, the whole group got the
        # signal, or the master died); anything else shuts the process down.
        role().shutdown_signalled()

    environment.on_signal(signal.SIGUSR1, lambda: reactor.callFromThread(restart))
    for name in SHUTDOWN_SIGNALS:
        environment.on_signal(getattr(signal, name), lambda: reactor.callFromThread(shutdown))
    for name, step in WORKER_SIGNALS.items():
        environment.on_signal(getattr(signal, name), _scheduled(core, role, step, name))
    # A process graceful started begins with SIGUSR1 blocked; one sent
    # while it started was meant for the process it replaces.
    if environment.release_signal(signal.SIGUSR1):
        core.log.warn(
            "{pid}: restart refused: SIGUSR1 arrived while this process was starting",
            pid=core.pid,
        )
    for name in WORKER_SIGNALS:
        # Held back too: one sent to the whole group then was meant for the
        # master that started us.
        if environment.release_signal(getattr(signal, name)):
            core.log.warn(
                "{pid}: {signal} ignored: it arrived while this process was starting",
                pid=core.pid,
                signal=name,
            )


def _scheduled(
    core: ProcessCore, role: Callable[[], Role], step: int, name: str
) -> Callable[[], None]:
    return lambda: core.reactor.callFromThread(change_workers, core, role, step, name)


def change_workers(core: ProcessCore, role: Callable[[], Role], step: int, name: str) -> None:
    """
    SIGTTIN or SIGTTOU arrived: one worker more or less, or one line why
    not.
    """
    try:
        role().set_workers(None, step, name)
    except WorkerCountRefused as e:
        core.log.warn("{pid}: {signal} ignored: {why}", pid=core.pid, signal=name, why=str(e))
