# -*- test-case-name: tests.unit.asgi.test_anyio_root -*-
"""
Keep anyio's worker threads alive under Twisted's asyncio reactor.

anyio (under Starlette and FastAPI, whose plain C{def} endpoints run in its
worker threads) ties each worker thread to a "root task" and stops the
thread when that task is done.  It takes for the root the task that runs
C{loop.run_until_complete()}, as C{asyncio.run()} makes; Twisted's reactor
runs C{loop.run_forever()}, so anyio falls back to the request's own task and
every call of a sync endpoint starts a thread and ends it.  Measured (wrk
-c32, a FastAPI C{def} endpoint): 665 requests/s that way, 2,194 with one
long-lived root task, which is what this module gives the loop.

It reaches into anyio's private C{_root_task}; where that is gone nothing is
done and only that speed is lost.  The root task is cancelled before the
reactor shuts down, and shutdown waits for it: that stops the worker threads (they are not daemon
threads: left running, they would keep the process from exiting).
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import Any

from twisted.internet.defer import Deferred

_rooted: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def keep_worker_threads(loop: asyncio.AbstractEventLoop, reactor: Any) -> None:
    """
    Give C{loop} a root task for anyio, once, if the app uses anyio; cancel
    it before C{reactor} shuts down.
    """
    if loop in _rooted or "anyio" not in sys.modules:
        return
    try:
        from anyio._backends._asyncio import _root_task
    except ImportError:
        return
    _rooted.add(loop)

    async def forever() -> None:
        await loop.create_future()

    root = loop.create_task(forever(), name="graceful: anyio root")

    async def register() -> None:
        # RunVar.set needs a running task of the loop to know its backend.
        _root_task.set(root)

    loop.create_task(register())

    def stop() -> Deferred[None]:
        # Shutdown waits until the root is done: anyio's done-callbacks that
        # stop the worker threads were added before this one, so they ran.
        root.cancel()
        done: Deferred[None] = Deferred.fromFuture(root)
        return done.addErrback(lambda _: None)

    reactor.addSystemEventTrigger("before", "shutdown", stop)
