"""
graceful.asgi.anyio_root: one long-lived anyio root task per loop, so anyio's
worker threads (FastAPI's plain def endpoints) outlive a request, and are
stopped before the reactor shuts down.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from graceful.asgi import anyio_root


class FakeReactor:
    """
    Records system event triggers, as IReactorCore.addSystemEventTrigger.
    """

    def __init__(self) -> None:
        self.triggers: list[tuple[str, str, Callable[[], Any]]] = []

    def addSystemEventTrigger(self, phase: str, event: str, callable: Callable[[], Any]) -> None:
        self.triggers.append((phase, event, callable))


class KeepWorkerThreadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        import anyio  # noqa: F401  (the module acts only once anyio is in use)

        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.reactor = FakeReactor()

    def root_seen_by_anyio(self) -> asyncio.Task[Any]:
        from anyio._backends._asyncio import find_root_task

        async def look() -> asyncio.Task[Any]:
            await asyncio.sleep(0)  # the registration runs first
            return find_root_task()

        return self.loop.run_until_complete(look())

    def test_anyio_takes_the_long_lived_root(self) -> None:
        anyio_root.keep_worker_threads(self.loop, self.reactor)
        anyio_root.keep_worker_threads(self.loop, self.reactor)  # once per loop
        root = self.root_seen_by_anyio()
        self.assertEqual(root.get_name(), "graceful: anyio root")
        self.assertFalse(root.done())
        self.assertEqual([t[:2] for t in self.reactor.triggers], [("before", "shutdown")])

    def test_shutdown_waits_for_the_root_to_end(self) -> None:
        anyio_root.keep_worker_threads(self.loop, self.reactor)
        root = self.root_seen_by_anyio()
        stopped = []
        root.add_done_callback(lambda task: stopped.append(task.cancelled()))
        [(_, _, stop)] = self.reactor.triggers
        done = stop()
        fired: list[object] = []
        done.addBoth(fired.append)
        self.assertEqual(fired, [])  # not before the loop ran the cancellation
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.run_until_complete(asyncio.sleep(0))
        self.assertEqual(stopped, [True])
        self.assertEqual(fired, [None])
