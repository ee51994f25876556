"""
The canary restart with workers = 2: a SIGUSR1 to the master starts a new
master, one worker of which serves beside both old workers for the window.
Under wrk, a release whose route fails half its requests is rolled back on
its own: the old master and workers never stop serving, and every bad
answer came from the new worker's pid, in the window.  A good release
completes the hand-over (the new master replaces both workers) with not one
failed request.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.integration.test_canary import Clients, twistd_release
from tests.support import ServerProcess, admin_auth, get, pid_of, process_alive, wait_until

CONFIG = """
[graceful]
workers = 2
ready_timeout = 15.0
drain_timeout = 5.0
canary_seconds = 3
canary_max_error_ratio = 0.01

[servers.web]
app = "canary_app:root"
host = "127.0.0.1"
ports = [{port}]
admin = "/debug/admin"
"""


def admin(port: int, page: str) -> Any:
    code, _, body = get(port, f"/debug/admin/{page}", headers=admin_auth())
    assert code == 200, (code, body)
    return json.loads(body) if page != "metrics" else body.decode()


def serving_workers(port: int) -> set[int]:
    return {w["pid"] for w in admin(port, "status")["workers"] if w["ready"] and not w["draining"]}


def two_workers(port: int) -> set[int] | None:
    pids = serving_workers(port)
    return pids if len(pids) == 2 else None


class CanaryWorkersTests(SynchronousTestCase):
    def setUp(self) -> None:
        from harness.wrk import wrk_path

        if wrk_path() is None:
            raise SkipTest("wrk is not installed")

    def release(self, which: str) -> tuple[ServerProcess, int, Path, int, set[int]]:
        proc, port, folder = twistd_release(self, which, CONFIG, "graceful-canary-workers-")
        proc.start()
        workers = wait_until(lambda: two_workers(port), what="2 workers")
        for pid in workers:
            proc.remember(pid)
        master = admin(port, "status")["pid"]
        return proc, port, folder, master, workers

    def wrk(self, port: int, folder: Path) -> Any:
        from harness.wrk import Wrk

        run = Wrk(f"http://127.0.0.1:{port}/flaky", 40, 2, folder / "wrk.log", close=True)
        self.addCleanup(run.proc.kill)
        return run

    def test_a_flaky_release_is_rolled_back(self) -> None:
        proc, port, folder, master, old_workers = self.release("good")
        (folder / "release").write_text("bad")
        run = self.wrk(port, folder)
        with Clients(port, threads=2) as clients:
            wait_until(lambda: clients.count() >= 50, what="load on the old workers")
            signalled = time.monotonic()
            proc.signal(master, signal.SIGUSR1)
            wait_until(lambda: "restart rolled back" in proc.log(), what="the rollback")
            rolled_back = time.monotonic()
            count = clients.count()
            wait_until(lambda: clients.count() >= count + 100, what="load after the rollback")
            run.stop()
        result = run.result()
        assert result is not None, "wrk gave no result"
        log = proc.log()
        [line] = [line for line in log.splitlines() if "restart rolled back" in line]
        self.assertIn("canary error ratio 0.", line)
        self.assertIn("against the old generation's 0.0000", line)
        # wrk: not one socket error; some 500s, from the canary's share alone.
        errors = {k: result[k] for k in ("connect", "read", "write", "timeout")}
        self.assertEqual(errors, dict.fromkeys(errors, 0))
        self.assertGreater(result["status"], 0)
        self.assertLess(result["status"], result["requests"] / 2)
        # Every bad answer came from one new worker, within the window.
        self.assertEqual(clients.errors, [])
        bad = [(at, pid) for at, status, pid in clients.answers if status != 200]
        self.assertTrue(bad)
        [new] = {pid for _, pid in bad}
        proc.remember(new)
        self.assertNotIn(new, old_workers | {master})
        self.assertIn(f"worker {new} (slot 0) serves beside the old generation", log)
        self.assertEqual([at for at, _ in bad if at < signalled or at > rolled_back + 1.0], [])
        self.assertEqual({pid for _, _, pid in clients.answers} - old_workers, {new})
        # The old workers never stopped serving: they answered in every
        # second of the test, and alone once the new worker left.
        seconds = {int(at - signalled) for at, _, pid in clients.answers if pid in old_workers}
        last = int(max(at for at, _, _ in clients.answers) - signalled)
        self.assertEqual(set(range(0, last + 1)) - seconds, set())
        proc.wait_gone(new)
        self.assertTrue(all(process_alive(pid) for pid in old_workers | {master}))
        self.assertEqual(serving_workers(port), old_workers)
        self.assertLessEqual({pid_of(port) for _ in range(20)}, old_workers)
        # Status, history and metrics give both ratios (a worker answers with
        # what its master last pushed, every half second).
        status = wait_until(
            lambda: (answer := admin(port, "status"))["last_restart"] and answer,
            what="the rollback in the status",
        )
        last_restart = status["last_restart"]
        self.assertEqual(
            (status["pid"], last_restart["ok"], last_restart["canary_old_error_ratio"]),
            (master, False, 0.0),
        )
        self.assertGreater(last_restart["canary_new_error_ratio"], 0.3)
        record = admin(port, "history")["history"][-1]
        self.assertEqual(
            (record["outcome"], record["canary"]["passed"], record["canary"]["old_error_ratio"]),
            ("failed", False, 0.0),
        )
        metrics = admin(port, "metrics")
        self.assertIn('graceful_canary_error_ratio{generation="old"} 0.0', metrics)
        self.assertIn('graceful_canary_error_ratio{generation="new"} 0.', metrics)

    def test_a_good_release_completes_the_hand_over(self) -> None:
        proc, port, folder, master, old_workers = self.release("good")
        run = self.wrk(port, folder)
        with Clients(port, threads=2) as clients:
            wait_until(lambda: clients.count() >= 50, what="load on the old workers")
            proc.signal(master, signal.SIGUSR1)
            wait_until(lambda: "canary passed" in proc.log(), what="the canary to pass")
            proc.wait_gone(master)
            new_workers = wait_until(
                lambda: (pids := two_workers(port)) and not pids & old_workers and pids,
                what="2 new workers",
            )
            count = clients.count()
            wait_until(lambda: clients.count() >= count + 50, what="load after the hand-over")
            run.stop()
        result = run.result()
        assert result is not None, "wrk gave no result"
        self.assertEqual(result["failed"], 0, result)
        self.assertGreater(result["requests"], 0)
        self.assertEqual(clients.errors, [])
        self.assertEqual({status for _, status, _ in clients.answers}, {200})
        status = wait_until(
            lambda: (answer := admin(port, "status"))["last_restart"] and answer,
            what="the hand-over in the status",
        )
        new_master = status["pid"]
        for pid in new_workers | {new_master}:
            proc.remember(pid)
        self.assertNotEqual(new_master, master)
        self.assertEqual(new_workers & old_workers, set())
        # Both generations served; the old workers are gone.
        self.assertLessEqual(new_workers, {pid for _, _, pid in clients.answers})
        for pid in old_workers:
            proc.wait_gone(pid)
        last = status["last_restart"]
        self.assertEqual(
            (last["ok"], last["canary_old_error_ratio"], last["canary_new_error_ratio"]),
            (True, 0.0, 0.0),
        )

    def test_sigterm_during_the_window_drains_both(self) -> None:
        """
        SIGTERM to the old master while the new worker serves beside its
        workers: both masters drain and exit, the new one as rolled back.
        """
        proc, port, folder, master, old_workers = self.release("good")
        proc.signal(master, signal.SIGUSR1)
        wait_until(lambda: "serves beside this one" in proc.log(), what="the canary window")
        new = wait_until(
            lambda: (pid := pid_of(port)) not in old_workers and pid, what="an answer of the canary"
        )
        proc.remember(new)
        [new_master] = [
            int(line.split(": a worker of new master ")[1].split()[0])
            for line in proc.log().splitlines()
            if ": a worker of new master " in line
        ]
        proc.remember(new_master)
        proc.signal(master, signal.SIGTERM)
        self.assertEqual(proc.wait_exit(), 0)
        for pid in {new, new_master} | old_workers:
            proc.wait_gone(pid)
        self.assertIn(
            f"{new_master}: rolled back by the old generation (shutdown asked for during the "
            "canary window)",
            proc.log(),
        )
