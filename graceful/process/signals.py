# -*- test-case-name: tests.unit.process.test_runtime -*-
"""
The signals a process answers: SIGUSR1 restarts; SIGTERM, SIGINT, SIGQUIT
and SIGHUP shut it down gracefully.  A handler only schedules the work on
the reactor; the restart or the shutdown runs there.
"""

from __future__ import annotations

import signal
from typing import Callable

from ..lifecycle.core import ProcessCore

SHUTDOWN_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP")


def install_signal_handlers(
    core: ProcessCore, restart: Callable[[], None], shutdown: Callable[[], None]
) -> None:
    """
    Have SIGUSR1 call C{restart} and every shutdown signal C{shutdown}, on
    C{core}'s reactor.
    """
    environment = core.environment
    reactor = core.reactor
    environment.on_signal(signal.SIGUSR1, lambda: reactor.callFromThread(restart))
    for name in SHUTDOWN_SIGNALS:
        environment.on_signal(getattr(signal, name), lambda: reactor.callFromThread(shutdown))
    # A process graceful started begins with SIGUSR1 blocked; one sent
    # while it started was meant for the process it replaces.
    if environment.release_signal(signal.SIGUSR1):
        core.log.warn(
            "{pid}: restart refused: SIGUSR1 arrived while this process was starting",
            pid=core.pid,
        )
