"""
The overhead section's profile, as the report shows it: made-up inputs, no
server, no py-spy.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase as TestCase

from benchmarks import _report, _scenarios


class ProfileTests(TestCase):
    def test_without_py_spy_the_report_says_so(self) -> None:
        """
        With no py-spy to profile with, the report names each server and
        why, instead of failing to be written.
        """
        self.patch(_scenarios, "py_spy", lambda python: None)
        ctx: Any = SimpleNamespace(python="/nowhere/python")
        profiles = _scenarios.run_profile(
            ctx, None, ["twisted.web", "graceful"], 8.0, 32, Path("."), close=True  # type: ignore[arg-type]
        )
        why = "py-spy is not installed (benchmarks/setup installs it)"
        self.assertEqual(
            _report.profile_lines(profiles), [f"- twisted.web: {why}", f"- graceful: {why}"]
        )
