"""
Unit tests for L{graceful.ctl.output}: the tables, durations and the
rolling restart's progress as printed.
"""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from graceful.ctl import output as ctl
from graceful.ctl.client import NodeError, NodeStatus

from .test_roll import status_json


class OutputTests(SynchronousTestCase):
    def test_table(self) -> None:
        table = ctl.format_table(["NAME", "N"], [["a", "1"], ["longer", "100"]])
        self.assertEqual(table, "NAME      N\na         1\nlonger  100\n")

    def test_status_table(self) -> None:
        good = NodeStatus.from_json(
            "http://h1/a",
            status_json(100, 3, {"ok": True, "error": None, "at": 1000.0, "handoff_seconds": 0.25}),
        )
        bad = NodeError("http://h2/a", "unreachable: connection refused")
        lines = ctl.status_table([good, bad], now=1100.0).splitlines()
        self.assertEqual(lines[0].split(), ["NODE", "PID", "GEN", "UPTIME", "STATE", "IN-FLIGHT", "LAST", "RESTART"])
        self.assertEqual(lines[1].split()[:6], ["http://h1/a", "100", "3", "1m37s", "serving", "1"])
        self.assertIn("ok in 0.25s, 1m40s ago", lines[1])
        self.assertIn("ERROR", lines[2])
        self.assertIn("unreachable: connection refused", lines[2])
        # Aligned: every column starts at the same offset on every line.
        self.assertEqual(lines[0].index("PID") + 3, lines[1].index("100") + 3)

    def test_durations(self) -> None:
        self.assertEqual(
            [ctl.duration(s) for s in (5, 75, 7500, 90000)], ["5s", "1m15s", "2h05m", "1d01h"]
        )

    def test_progress_bar_and_plain(self) -> None:
        before = NodeStatus.from_json("n", status_json(100, 1))
        after = NodeStatus.from_json("n", status_json(101, 2))
        for kind in (ctl.PlainProgress, ctl.BarProgress):
            out = io.StringIO()
            progress = kind(out)
            progress.begin(0, 2, "n", before)
            progress.waiting(0, 2, "n", 0.5)
            progress.done(0, 2, "n", before, after, 0.7)
            progress.failed(1, 2, "m", "why")
            progress.finish()
            text = out.getvalue()
            self.assertIn("[1/2] n: ok: generation 1 -> 2, pid 100 -> 101, 0.7s\n", text)
            self.assertIn("[2/2] m: FAILED: why\n", text)
            self.assertEqual("\r" in text, kind is ctl.BarProgress)
