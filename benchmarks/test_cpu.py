"""
The process-tree CPU reader: a parent that only waits while its child
works reads as the child's CPU, not as zero.
"""

from __future__ import annotations

import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase as TestCase

from benchmarks._cpu import Target, tree_cpu_seconds, verdicts

# The parent sleeps; its child spins until told to stop on stdin closing.
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import sys, time\\n"
    "print('busy', flush=True)\\n"
    "end = time.monotonic() + 30\\n"
    "while time.monotonic() < end: pass"], stdout=sys.stdout)
sys.stdin.read()
child.kill()
child.wait()
"""


class TreeCPUTests(TestCase):
    def test_counts_children(self) -> None:
        """
        The CPU of a child process counts towards its parent's tree.
        """
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.addCleanup(parent.wait, 10)
        self.addCleanup(parent.stdin.close)  # type: ignore[union-attr]
        assert parent.stdout is not None
        self.assertEqual(parent.stdout.readline(), b"busy\n")
        before = tree_cpu_seconds(parent.pid)
        deadline = time.monotonic() + 10
        while tree_cpu_seconds(parent.pid) - before < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(tree_cpu_seconds(parent.pid) - before, 0.3)

    def test_gone_is_zero(self) -> None:
        """
        A pid no process has reads as no CPU, not as an error.
        """
        self.assertEqual(tree_cpu_seconds(2**22 + 7), 0.0)


class VerdictTests(TestCase):
    """
    The targets' verdicts: the median of the per-round ratios against the
    limit, met or missed by how much, load by load.
    """

    def test_met_and_missed(self) -> None:
        def rows(*cpu: float) -> list[dict[str, float]]:
            return [{"cpu_us": c, "p99_ms": 1.0} for c in cpu]

        table = {
            "raw keepalive": {"ours": rows(9, 10, 11), "peer": rows(10, 10, 10)},
            "raw close": {"ours": rows(30, 36, 33), "peer": rows(20, 20, 20)},
        }
        target = Target("CPU <= 1.5x peer", ("raw keepalive", "raw close", "flask close"),
                        "ours", "peer", 1.5)
        self.assertEqual(
            verdicts(table, [target]),
            ["- CPU <= 1.5x peer: raw keepalive 1.00x (met), raw close 1.65x (missed by 10%)"],
        )

    def test_nothing_ran(self) -> None:
        target = Target("CPU <= 1.0x peer", ("raw close",), "ours", "peer", 1.0)
        self.assertEqual(verdicts({"raw close": {"ours": []}}, [target]), [])
