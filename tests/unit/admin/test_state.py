"""
Unit tests for L{graceful.admin.state}: what the admin keeps for a process
lives on the one L{AdminState} its runtime owns, so two runtimes never
share a token, refusal counts or metrics, and a runtime serves its admin
pages with nothing wired into it from outside.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from graceful.admin.metrics import registry_for
from graceful.admin.refusals import Refusals, refusals_of
from graceful.admin.state import AdminState
from graceful.admin.token import GeneratedToken, generated_token, set_generated_token
from graceful.testing import memory_runtime

from ..http.test_routing import get


class AdminStateTests(SynchronousTestCase):
    def test_one_of_each_kind_made_once(self) -> None:
        state = AdminState()
        made: list[int] = []
        self.assertIsNone(state.get(int))
        self.assertEqual(state.kept(int, lambda: made.append(1) or 7), 7)
        self.assertEqual(state.kept(int, lambda: made.append(1) or 8), 7)
        self.assertEqual(made, [1])
        state.keep(int, 9)
        self.assertEqual(state.get(int), 9)


class RuntimeKeepsTheAdminTests(SynchronousTestCase):
    def test_each_runtime_its_own(self) -> None:
        """
        The token, the refusal counts and the metrics registry are the
        runtime's: the same for every use, and another runtime's are others.
        """
        first, second = memory_runtime(MemoryReactorClock()), memory_runtime(MemoryReactorClock())
        set_generated_token(first, GeneratedToken("first", None, True))
        set_generated_token(second, GeneratedToken("second", None, True))
        self.assertEqual((generated_token(first), generated_token(second)), ("first", "second"))
        self.assertIs(refusals_of(first), first.admin.get(Refusals))
        self.assertIsNot(refusals_of(first), refusals_of(second))
        self.assertIs(registry_for(first), registry_for(first))
        self.assertIsNot(registry_for(first), registry_for(second))

    def test_pages_mounted_without_wiring(self) -> None:
        """
        A runtime built directly (not the process's own, which the entry
        points made) serves the admin and health pages a server asks for.
        """
        runtime = memory_runtime(MemoryReactorClock())
        server = runtime.server("web")
        server.enable_admin("/debug/admin", token="secret")
        server.enable_health("/healthz")
        runtime.add_operational_pages(server)
        self.assertEqual(get(server.router, "/healthz").status, 200)
        self.assertEqual(get(server.router, "/debug/admin/api/status").status, 401)
