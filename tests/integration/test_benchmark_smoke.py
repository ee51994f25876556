"""
The benchmark's smoke mode, so benchmarks/ cannot rot: one graceful restart
under the Python sampling client (no wrk, nginx or peers needed), a few
seconds, and the report it writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

from harness.processes import ROOT, alive, child_environment


class BenchmarkSmokeTests(TestCase):
    timeout = 120

    def test_smoke(self) -> None:
        """
        C{python -m benchmarks --smoke} restarts examples/basic.py once under
        load and writes results.md and results.json with the restart timed
        and the requests counted.
        """
        out = Path(tempfile.mkdtemp(prefix="graceful-bench-smoke-"))
        self.addCleanup(shutil.rmtree, out, True)
        # The admin token graceful would make: in this run's folder, not one
        # file per port in the user's runtime folder.
        env = child_environment(GRACEFUL_ADMIN_TOKEN_FILE=str(out / "admin.token"))
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
        )
        self.assertEqual(done.returncode, 0, done.stdout[-2000:] + done.stderr[-3000:])

        results = json.loads((out / "results.json").read_text())
        [run] = results["restart"]
        self.assertEqual((run["target"], run["operation"]), ("graceful", "SIGUSR1"))
        [restart] = run["restarts"]
        self.assertTrue(restart["ok"], restart)
        self.assertGreater(restart["handoff"], 0)
        self.assertNotEqual(restart["new_pid"], restart["old_pids"][0])
        sampler = run["sampler"]
        self.assertGreater(sampler["requests"], 50, sampler)
        # Under load: requests overlapped the restart, and none failed.
        self.assertGreater(sampler["window"]["count"], 0, sampler)
        self.assertEqual((sampler["failed"], sampler["errors"]), (0, {}), sampler)
        # Both generations answered the sampler.
        self.assertEqual(sampler["pids"], 2, sampler)
        self.assertEqual(len(run["rss_generations_mb"]), 2)
        self.assertTrue((out / run["samples_file"]).exists())

        report = (out / "results.md").read_text()
        self.assertIn("## Restart under load", report)
        self.assertIn("| graceful | SIGUSR1 | mixed | 1/1 |", report)
        # Every process the benchmark started is gone.
        for pid in [*restart["old_pids"], restart["new_pid"]]:
            self.assertFalse(alive(pid), f"process {pid} is still running")

