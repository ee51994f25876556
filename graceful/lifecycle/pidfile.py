# -*- test-case-name: tests.unit.workers.test_takeover -*-
"""
Keeping the pidfile that names the serving process: written at each
handover, and written again, with back-off, when a full disk refused it.
"""

from __future__ import annotations

from typing import Any, Callable

from .._logging import NamedLogger
from ..handoff.supervision import NoPidfile, Pidfile

#: Seconds before a failed write of our own pid to the pidfile is tried
#: again; doubles up to the second value.
PIDFILE_RETRY_FIRST, PIDFILE_RETRY_MAX = 1.0, 60.0


class PidfileKeeper:
    """
    One process's hold on the pidfile: which pid it names, and the retry of
    a write of our own pid that failed.
    """

    # The lines keep the namespace they had when the core kept the pidfile.
    log = NamedLogger("graceful._core.ProcessCore")

    def __init__(
        self, pidfile: Callable[[], Pidfile | NoPidfile], pid: int, clock: Callable[[], Any]
    ) -> None:
        """
        @param pidfile: the process's pidfile (or the null object) as it is
            now: a program may name another one before it serves.
        @param clock: the reactor, asked for when a retry is scheduled (the
            global one is imported on first use).
        """
        self._pidfile = pidfile
        self._pid = pid
        self._clock = clock
        self._retry: Any = None

    def write(self, pid: int, retry: float = PIDFILE_RETRY_FIRST) -> None:
        """
        Name C{pid} in the pidfile.  A write that fails must not stop a
        handoff halfway; when it names us, it is tried again (a full disk
        frees up), with back-off, until it works or another pid is named.
        """
        self.stop_retrying()
        try:
            self.pidfile.write(pid)
        except OSError as e:
            again = pid == self._pid
            self.log.error(
                "{pid}: cannot write pidfile {path}: {error}"
                + ("; trying again in {retry:g}s" if again else ""),
                pid=self._pid,
                path=str(self.pidfile),
                error=e.strerror or str(e),
                retry=retry,
            )
            if again:
                self._retry = self._clock().callLater(
                    retry, self.write, pid, min(PIDFILE_RETRY_MAX, retry * 2)
                )
            return
        if retry > PIDFILE_RETRY_FIRST:
            self.log.info(
                "{pid}: pidfile {path} names {named} now",
                pid=self._pid,
                path=str(self.pidfile),
                named=pid,
            )

    def claim(self) -> None:
        """
        The old process handed over, and should have named us in the
        pidfile: if it could not (a full disk), name ourselves.
        """
        if not str(self.pidfile) or self.pidfile.read() == self._pid:
            return
        self.log.warn(
            "{pid}: pidfile {path} does not name this process; writing it",
            pid=self._pid,
            path=str(self.pidfile),
        )
        self.write(self._pid)

    @property
    def pidfile(self) -> Pidfile | NoPidfile:
        return self._pidfile()

    def stop_retrying(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def leave(self, handed_over: bool) -> None:
        """
        We exit: stop retrying, and unless a successor owns the pidfile now,
        remove it if it still names us.
        """
        self.stop_retrying()
        if not handed_over:
            self.pidfile.remove_if(self._pid)
