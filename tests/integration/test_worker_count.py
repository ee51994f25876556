"""
The worker count without a restart, on a real master: SIGTTIN adds a
worker, SIGTTOU removes one, and C{graceful ctl workers N} sets the count,
with clients requesting throughout and none failing.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.support import ADMIN_TOKEN_FILE, ROOT, Load, accepting_pids, group_members, wait_until

from .test_workers import WorkerTestCase, status


def serving(port: int) -> set[int]:
    """
    The workers that serve: ready, and not draining.
    """
    return {w["pid"] for w in status(port)["workers"] if w["ready"] and not w["draining"]}


class WorkerCountTests(WorkerTestCase):
    def wait_for_count(self, port: int, pgid: int, count: int) -> set[int]:
        pids = wait_until(
            lambda: (lambda s: s if len(s) == count and len(status(port)["workers"]) == count else None)(
                serving(port)
            ),
            what=f"{count} workers serving and none left draining",
        )
        # The kernel hands connections to exactly these.
        wait_until(
            lambda: accepting_pids(port, among=group_members(pgid)) == pids,
            what=f"only the {count} workers accepting",
        )
        return pids  # type: ignore[no-any-return]

    def test_signals_and_ctl_under_load(self) -> None:
        proc, port, _ = self.start_group(2)
        master = proc.pgid
        targets = [("keepalive", port), ("close", port)]
        with Load(targets, path="/pid", max_seconds=150) as load:
            load.wait_for(50)
            two = self.wait_for_count(port, master, 2)
            proc.signal(master, signal.SIGTTIN)
            three = self.wait_for_count(port, master, 3)
            self.assertTrue(two < three)
            load.wait_for(30)
            proc.signal(master, signal.SIGTTOU)
            self.wait_for_count(port, master, 2)
            load.wait_for(30)
            proc.signal(master, signal.SIGTTOU)
            [one] = self.wait_for_count(port, master, 1)
            load.wait_for(30)
            proc.signal(master, signal.SIGTTOU)  # never below 1
            ctl = subprocess.run(
                [sys.executable, "-m", "graceful", "ctl", "--node",
                 f"http://127.0.0.1:{port}/debug/admin", "--token-file", str(ADMIN_TOKEN_FILE),
                 "workers", "2"],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )
            self.assertEqual((ctl.returncode, ctl.stderr), (0, ""))
            self.assertIn("2 worker(s) asked for", ctl.stdout)
            self.assertIn(one, self.wait_for_count(port, master, 2))
            load.wait_for(30)
        self.assertEqual(load.failures, [])
        log = proc.log()
        self.assertIn(f"{master}: workers: 2 -> 3 (SIGTTIN)", log)
        self.assertIn(f"{master}: workers: 2 -> 1 (SIGTTOU)", log)
        self.assertIn(f"{master}: SIGTTOU ignored: count must be from 1 to 256, got 0", log)
        self.assertEqual(status(port)["pid"], master)  # no restart happened
