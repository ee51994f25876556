# -*- test-case-name: tests.unit.asgi.test_reactor -*-
"""
Twisted's asyncio reactor, with each read and write readiness handed to its
connection at less cost.

Twisted's asyncio reactor calls every ready connection through
C{log.callWithLogger}, which sets the legacy log's C{system} (the
connection's log prefix) for the call: two dict copies and five Python
frames a call, ~16% of the CPU of a keep-alive ASGI hello world on the
native channel (py-spy, wrk -c32), where uvicorn spends nothing of the
sort.  L{GracefulAsyncioReactor} sets the same context with one push onto
the calling thread's context stack; what a legacy C{log.msg()} made inside
the call says is unchanged, as is what a failure logs.  Where the context
tracker is not Twisted's own, it calls through C{callWithLogger} as before.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.python import context, log
from twisted.python.context import ThreadedContextTracker

_ILogContext = log.ILogContext


class GracefulAsyncioReactor(AsyncioSelectorReactor):
    """
    Twisted's asyncio reactor, with a cheaper log context per ready
    connection (see the module).

    @ivar loop_factory: makes the kind of loop this process chose, for a
        worker forked from a template to make its own.
    """

    loop_factory: Callable[[], asyncio.AbstractEventLoop] = staticmethod(asyncio.new_event_loop)

    def addReader(self, reader: Any) -> None:
        if reader in self._readers or reader in self._continuousPolling._readers:
            return
        self._add(reader, True)

    def addWriter(self, writer: Any) -> None:
        if writer in self._writers or writer in self._continuousPolling._writers:
            return
        self._add(writer, False)

    def _add(self, selectable: Any, read: bool) -> None:
        # As AsyncioSelectorReactor.addReader and addWriter do, with
        # _ready for callWithLogger.
        fd = selectable.fileno()
        loop = self._asyncioEventloop
        try:
            if read:
                loop.add_reader(fd, self._ready, selectable, True)
                self._readers[selectable] = fd
            else:
                loop.add_writer(fd, self._ready, selectable, False)
                self._writers[selectable] = fd
        except PermissionError:
            # epoll(7) refuses some descriptors (files): polled instead.
            self._unregisterFDInAsyncio(fd)
            if read:
                self._continuousPolling.addReader(selectable)
            else:
                self._continuousPolling.addWriter(selectable)
        except BrokenPipeError:
            self._unregisterFDInAsyncio(fd)
            if read:
                raise
        except BaseException:
            self._unregisterFDInAsyncio(fd)
            raise

    def _ready(self, selectable: Any, read: bool) -> None:
        """
        C{log.callWithLogger(selectable, self._readOrWrite, selectable,
        read)}, with the same context and failure handling.
        """
        tracker = context.theContextTracker
        if type(tracker) is not ThreadedContextTracker:
            log.callWithLogger(selectable, self._readOrWrite, selectable, read)
            return
        try:
            prefix = selectable.logPrefix()
        except KeyboardInterrupt:
            raise
        except BaseException:
            prefix = "(buggy logPrefix method)"
            log.err(system=prefix)
        current = tracker.currentContext()
        log_context = current.getContext(_ILogContext)
        contexts = current.contexts
        contexts.append({_ILogContext: {**log_context, "system": prefix}})
        try:
            try:
                self._readOrWrite(selectable, read)
            finally:
                contexts.pop()
        except KeyboardInterrupt:
            raise
        except BaseException:
            log.err(system=prefix)
