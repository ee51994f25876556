# -*- test-case-name: tests.unit.test_testing -*-
"""
Every effect a graceful process has on the operating system beyond its
sockets and the reactor: the signals it handles, the wall clock, starting
processes, its parent's death, its own exit.  One small object, so that the
roles run unchanged on a memory reactor with L{graceful.testing}'s
L{MemoryEnvironment<graceful.testing.MemoryEnvironment>}.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time
from typing import Callable, Protocol

from .pipes import ChildProcess, spawn_new_process
from .supervision import NoParentDeathSignal, ParentDeathSignal, parent_death_signal


#: Starts a process that inherits sockets: L{spawn_new_process}'s signature.
Spawner = Callable[..., ChildProcess]


class Environment(Protocol):
    """
    The operating system as a graceful process sees it.
    """

    @property
    def spawn(self) -> Spawner:
        "Starts a process that inherits sockets."

    def now(self) -> float:
        """
        The wall-clock time (for records people read, never for timers).
        """

    def monotonic(self) -> float:
        """
        A clock for systemd's C{MONOTONIC_USEC}.
        """

    def on_signal(self, signum: int, handler: Callable[[], None]) -> None:
        """
        Call C{handler()} from the signal handler of C{signum}; it must only
        schedule work on the reactor.
        """

    def dump_stacks_on(self, signum: int) -> None:
        """
        Have C{signum} write every thread's stack to a copy of fd 2 as it is
        now.
        """

    def ignore_signal(self, signum: int) -> None:
        """
        Ignore C{signum} from now on.
        """

    def release_signal(self, signum: int) -> bool:
        """
        Stop holding C{signum} back (a process graceful starts begins with
        it blocked) and say whether one arrived meanwhile; that one is
        dropped, not handled.
        """

    def arm_parent_death(self, signum: int) -> bool:
        """
        Ask the kernel for C{signum} when our parent dies.
        """

    def parent_pid(self) -> int:
        """
        Our parent's pid now.
        """

    def rss_mib(self) -> float:
        """
        Our resident set size, in MiB (0 where unknown).
        """

    def exit(self, code: int) -> None:
        """
        End the process now, without cleanup.
        """


class OSEnvironment:
    """
    The real operating system.

    @ivar spawn: starts new processes.
    @ivar parent_death: the kernel's parent-death signal, where there is one.
    """

    def __init__(
        self,
        spawn: Spawner = spawn_new_process,
        parent_death: ParentDeathSignal | NoParentDeathSignal | None = None,
    ) -> None:
        self.spawn = spawn
        self.parent_death = parent_death if parent_death is not None else parent_death_signal()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def on_signal(self, signum: int, handler: Callable[[], None]) -> None:
        signal.signal(signum, lambda number, frame: handler())

    def dump_stacks_on(self, signum: int) -> None:
        # A descriptor of our own, not sys.stderr: under twistd that is a log
        # file object whose fileno() is -1, faulthandler refused it, and the
        # signal killed the process with no stack written.
        try:
            fd = os.dup(2)
        except OSError:
            return  # no stderr at all: killed without its stacks
        try:
            faulthandler.register(signum, file=fd, all_threads=True)
        except (ValueError, OSError, RuntimeError, AttributeError):
            os.close(fd)

    def ignore_signal(self, signum: int) -> None:
        try:
            signal.signal(signum, signal.SIG_IGN)
        except ValueError:
            pass  # not the main thread: nothing installed handlers either

    def release_signal(self, signum: int) -> bool:
        try:
            arrived = signum in signal.sigpending()
            if arrived:
                signal.sigtimedwait([signum], 0)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        except (AttributeError, OSError, ValueError):
            return False
        return arrived

    def arm_parent_death(self, signum: int) -> bool:
        return self.parent_death.arm(signum)

    def parent_pid(self) -> int:
        return self.parent_death.parent_pid()

    def rss_mib(self) -> float:
        try:
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            return 0.0
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)

    def exit(self, code: int) -> None:
        os._exit(code)
