# -*- test-case-name: tests.unit.test_reload -*-
"""
C{graceful run --reload}, for development: a change to the app's files
starts a graceful restart, so the browser never sees a refused connection,
and a change that does not start leaves the last good code serving.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

from twisted.python.failure import Failure

from ._logging import NamedLogger
from .process.runtime import Runtime


class Reloader:
    """
    Watches C{directories} (with watchfiles, in a thread, Python files
    only) and restarts the process on a change; changes during a restart
    make one more restart once it is over.
    """

    _log = NamedLogger("graceful.reload")

    def __init__(self, runtime: Runtime, directories: Iterable[str]) -> None:
        self.runtime = runtime
        self.directories = sorted(set(directories))
        self.restarting = False
        self.pending = False
        self._stop = threading.Event()

    def start(self) -> None:
        try:
            import watchfiles
        except ImportError:
            self._log.error("--reload needs watchfiles: pip install 'graceful[reload]'")
            return
        self.runtime.on_drain(self._stop.set)
        thread = threading.Thread(
            target=self._watch, args=(watchfiles,), name="graceful-reload", daemon=True
        )
        thread.start()
        self._log.info("watching {directories} for changes", directories=", ".join(self.directories))

    def _watch(self, watchfiles: Any) -> None:
        # watchfiles already makes a burst of saves one batch (1.6 s).
        for changes in watchfiles.watch(
            *self.directories, watch_filter=watchfiles.PythonFilter(),
            stop_event=self._stop, raise_interrupt=False,
        ):
            paths = sorted(path for _, path in changes)
            self.runtime.reactor.callFromThread(self.changed, paths)

    def changed(self, paths: list[str]) -> None:
        if self.runtime.draining:
            return
        self._log.info("{count} file(s) changed ({first}): restarting",
                       count=len(paths), first=paths[0] if paths else "")
        if self.restarting:
            self.pending = True
            return
        self._restart()

    def _restart(self) -> None:
        self.restarting = True
        self.pending = False
        self.runtime.restart().addErrback(self._failed).addBoth(self._done)

    def _failed(self, failure: Failure) -> None:
        # The hand-over has logged why, with the new code's error, once.
        return None

    def _done(self, result: object) -> None:
        self.restarting = False
        if self.pending and not self.runtime.draining:
            self._restart()
