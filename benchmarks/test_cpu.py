"""
The process-tree CPU reader: a parent that only waits while its child
works reads as the child's CPU, not as zero.
"""

from __future__ import annotations

import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase as TestCase

from benchmarks._cpu import tree_cpu_seconds

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
