"""
Unit tests for L{graceful._reload.Reloader}: a change restarts; changes
during a restart make exactly one more; a failed restart keeps watching; a
draining process ignores changes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from graceful._reload import Reloader


class FakeRuntime:
    def __init__(self) -> None:
        self.restarts: list[Deferred[int]] = []
        self.draining = False

    def restart(self) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        self.restarts.append(d)
        return d


class ReloaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runtime = FakeRuntime()
        self.reloader = Reloader(self.runtime, ["/app"])  # type: ignore[arg-type]

    def test_change_restarts(self) -> None:
        self.reloader.changed(["/app/main.py"])
        self.assertEqual(len(self.runtime.restarts), 1)

    def test_changes_during_a_restart_make_one_more(self) -> None:
        self.reloader.changed(["/app/a.py"])
        self.reloader.changed(["/app/b.py"])
        self.reloader.changed(["/app/c.py"])
        self.assertEqual(len(self.runtime.restarts), 1)
        self.runtime.restarts[0].callback(123)
        self.assertEqual(len(self.runtime.restarts), 2)
        self.runtime.restarts[1].callback(124)
        self.assertEqual(len(self.runtime.restarts), 2)

    def test_failed_restart_keeps_watching(self) -> None:
        self.reloader.changed(["/app/a.py"])
        self.runtime.restarts[0].errback(RuntimeError("broken save"))
        self.reloader.changed(["/app/a.py"])
        self.assertEqual(len(self.runtime.restarts), 2)

    def test_draining_ignores(self) -> None:
        self.runtime.draining = True
        self.reloader.changed(["/app/a.py"])
        self.assertEqual(self.runtime.restarts, [])
