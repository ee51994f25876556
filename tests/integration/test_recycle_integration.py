"""
Recycling and the watchdog with real workers: a worker past max_requests is
replaced without a failed request; a SIGSTOPped worker is killed, logged
(with its stacks, under twistd and twist too) and replaced.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from harness.wrk import Wrk
from tests.support import Load, ServerProcess, free_ports, process_alive, wait_until
from tests.integration.test_workers import WorkerTestCase, status


class RecycleIntegrationTests(WorkerTestCase):
    def test_max_requests_recycles_without_failures(self) -> None:
        """
        workers = 2, max_requests = 50: 300 requests are answered by more
        than two worker pids, and none fails.
        """
        proc, port, _ = self.start_group(2, MAX_REQUESTS="50")
        first = {w["pid"] for w in status(port)["workers"]}
        folder = Path(tempfile.mkdtemp(prefix="graceful-recycle-"))
        # wrk's keep-alive and close clients, beside clients that note who
        # answered.
        runs = {
            kind: Wrk(f"http://127.0.0.1:{port}/pid", 60, 2, folder / f"wrk-{kind}.log",
                      close=kind == "close")
            for kind in ("keepalive", "close")
        }
        for run in runs.values():
            self.addCleanup(run.proc.kill)
        with Load([("keepalive", port), ("close", port)], path="/pid", max_seconds=30) as load:
            load.wait_for(300)
            # Workers report every half second: recycling lags the load.
            wait_until(
                lambda: status(port)["worker_recycles"] >= 2, timeout=15, what="two recycles"
            )
            load.wait_for(100)
        for run in runs.values():
            run.stop()
        for kind, run in runs.items():
            result = run.result()
            assert result is not None, f"{kind}: wrk gave no result"
            self.assertEqual((kind, result["failed"]), (kind, 0))
            self.assertGreater(result["requests"], 50, kind)
        self.assertEqual(load.failures, [])
        self.assertGreater(len(set(load.pids)), 2, f"answering pids: {load.pids}")
        group = status(port)
        self.assertGreaterEqual(group["worker_recycles"], 2)
        self.assertIn("recycle", group["last_replaced_reason"].values())
        # A recycled worker may still be listed, draining (a forked successor
        # serves within milliseconds): the first ones no longer all serve.
        self.assertFalse(first <= {w["pid"] for w in group["workers"] if not w["draining"]})
        self.assertIn("recycling worker", proc.log())

    def test_stopped_worker_killed_and_replaced(self) -> None:
        """
        worker_timeout = 2: a SIGSTOPped worker is killed within a few
        seconds, the log names it, and its slot serves again.
        """
        proc, port, _ = self.start_group(2, WORKER_TIMEOUT="2")
        stuck = [w for w in status(port)["workers"] if w["slot"] == 1][0]["pid"]
        os.kill(stuck, signal.SIGSTOP)
        self.addCleanup(self.kill_if_alive, stuck)
        wait_until(
            lambda: not process_alive(stuck),
            timeout=10,
            what=f"the stopped worker to die: {proc.log()[-2000:]}",
        )
        group = wait_until(
            lambda: (
                lambda s: s
                if [w["ready"] for w in s["workers"] if w["pid"] != stuck] == [True, True]
                else None
            )(status(port)),
            timeout=10,
            what="slot 1 to serve again",
        )
        self.assertNotIn(stuck, [w["pid"] for w in group["workers"]])
        self.assertEqual(group["last_replaced_reason"], {"1": "timeout"})
        self.assertIn(f"worker {stuck} (slot 1) sent no heartbeat", proc.log())
        # faulthandler's dump of the stuck worker's threads, relayed.
        self.assertIn("most recent call first", proc.log())

    def kill_if_alive(self, pid: int) -> None:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


WATCHDOG_CONFIG = """\
[graceful]
workers = 2
worker_timeout = 2

[servers.web]
app = "tests.integration.programs.pages:root"
host = "127.0.0.1"
ports = [{port}]
admin = "/debug/admin"
"""


class WatchdogUnderTwistdTests(SynchronousTestCase):
    """
    Under twistd and twist sys.stderr has no descriptor: the stuck worker's
    stacks must still reach the log, and its kill count once.
    """

    def stuck_worker(self, launcher: Callable[..., ServerProcess], *options: str) -> str:
        folder = Path(tempfile.mkdtemp(prefix="graceful-watchdog-"))
        (port,) = free_ports(1)
        (folder / "graceful.toml").write_text(WATCHDOG_CONFIG.format(port=port))
        proc = launcher(*options, "graceful", "--config", str(folder / "graceful.toml"), cwd=folder)
        proc.start()
        self.addCleanup(proc.stop)
        wait_until(
            lambda: [w["ready"] for w in status(port)["workers"]] == [True, True],
            what="2 workers",
        )
        stuck = [w for w in status(port)["workers"] if w["slot"] == 0][0]["pid"]
        os.kill(stuck, signal.SIGSTOP)
        self.addCleanup(self.kill_if_alive, stuck)
        wait_until(lambda: not process_alive(stuck), timeout=10, what="the stopped worker to die")
        group = wait_until(
            lambda: (lambda s: s if s["worker_timeouts"] == 1 and [w["ready"] for w in s["workers"]]
                     == [True, True] else None)(status(port)),
            timeout=10,
            what="slot 0 to serve again",
        )
        self.assertEqual((group["worker_timeouts"], group["worker_deaths"]), (1, 0))
        log = wait_until(lambda: (lambda t: t if "most recent call first" in t else None)(proc.log()),
                         timeout=5, what=f"the stacks in the log\n{proc.log()[-2000:]}")
        self.assertIn(f"worker {stuck} (slot 0) stacks:", log)
        return log

    def kill_if_alive(self, pid: int) -> None:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def test_twistd(self) -> None:
        self.stuck_worker(ServerProcess.twistd, "-n", "--pidfile=")

    def test_twist(self) -> None:
        self.stuck_worker(ServerProcess.twist, "--log-format=text")

