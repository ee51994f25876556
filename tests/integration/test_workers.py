"""
Workers (issue 6): N processes share every socket; a restart rolls them one
slot at a time, each new worker serving before the one it replaces stops,
so at least N serve at every moment; a dead worker is replaced; a new worker
that fails stops the roll.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    ROOT,
    Load,
    ServerProcess,
    admin_auth,
    child_environment,
    accepting_pids,
    free_ports,
    get,
    group_members,
    pid_of,
    process_alive,
    refuses,
    wait_until,
    zombies,
)

WORKERS = ROOT / "tests" / "integration" / "programs" / "workers.py"


def status(port: int) -> dict[str, Any]:
    code, _, body = get(port, "/debug/admin/status", headers=admin_auth())
    assert code == 200, (code, body)
    return json.loads(body)  # type: ignore[no-any-return]




def settled(port: int) -> dict[str, Any]:
    """
    The status once no restart runs and the answer comes from the serving
    master's group (a draining worker may still answer for its old master).
    """
    return wait_until(  # type: ignore[no-any-return]
        lambda: (lambda s: s if not s["restarting"] and not s["draining"] else None)(status(port)),
        what="no restart under way",
    )


def accepting_now(port: int, pgid: int) -> int | None:
    """
    How many processes of the group accept on C{port}; None when the group
    changed while we looked (a sample of a moving target would be stale).

    The processes are read one after the other, so a hand-over between two
    reads (the new worker read before it accepts, the old one after it
    stopped) would count one short: they are read again in the other
    order, and a process accepting in either read counts.  A new worker
    only starts accepting and an old one only stops, so no hand-over can
    hide from both reads, while a gap between them (an old worker stopped
    before its successor accepts) lasts a new process's start-up and shows.
    """
    members = group_members(pgid)
    forward = accepting_pids(port, among=members)
    backward = accepting_pids(port, among=list(reversed(members)))
    return len(forward | backward) if group_members(pgid) == members else None


class WorkerTestCase(SynchronousTestCase):
    def start_group(self, count: int, tls: bool = False, **env: str) -> tuple[ServerProcess, int, int]:
        http_port, https_port = free_ports(2)
        args = [str(count), str(http_port)] + ([str(https_port)] if tls else [])
        proc = ServerProcess.python(WORKERS, *args, env=child_environment(**env)).start()
        self.addCleanup(proc.stop)
        group = wait_until(
            lambda: (lambda s: s if len([w for w in s["workers"] if w["ready"]]) == count else None)(
                status(http_port)
            ),
            what=f"{count} workers to serve",
        )
        self.assertEqual(group["pid"], proc.pgid, "the master is the process we started")
        return proc, http_port, https_port

    def roll(self, proc: ServerProcess, port: int, count: int) -> list[int]:
        """
        SIGUSR1 the master and sample, until the roll is over, how many
        workers serve; returns the samples.
        """
        before = settled(port)
        # The master of the moment: each restart makes a new one.
        proc.signal(before["pid"], signal.SIGUSR1)
        samples = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for _ in range(5):
                count = accepting_now(port, proc.pgid)
                if count is not None:
                    samples.append(count)
                time.sleep(0.03)
            group = status(port)
            if group["generation"] > before["generation"] and not group["restarting"]:
                return samples
            # A new master knows the history once the old one accepted it.
            last = group["last_restart"]
            if last and last != before["last_restart"] and not last["ok"]:
                raise AssertionError(f"the roll failed: {group['last_restart']}")
        raise AssertionError("the roll did not end within 60 s")


class RollingRestartTests(WorkerTestCase):
    def check_rolls(self, count: int, rolls: int, tls: bool) -> None:
        proc, http_port, https_port = self.start_group(count, tls=tls)
        targets = [("keepalive", http_port), ("close", http_port)]
        if tls:
            targets += [("tls", https_port)]
        first = {w["pid"] for w in status(http_port)["workers"]}
        with Load(targets, path="/pid", max_seconds=150) as load:
            load.wait_for(100)
            samples = []
            for _ in range(rolls):
                samples += self.roll(proc, http_port, count)
                load.wait_for(30)
        self.assertEqual(load.failures, [])
        # Each old worker drains only once the new one of its slot serves.
        self.assertGreaterEqual(min(samples), count, f"serving workers sampled: {samples}")
        group = wait_until(
            lambda: (lambda s: s if len(s["workers"]) == count else None)(status(http_port)),
            what="the last old worker to finish draining",
        )
        # The master, its worker template and the workers: the old ones are
        # reaped as they exit (a zombie lasts until its SIGCHLD is handled).
        wait_until(
            lambda: len(group_members(proc.pgid)) == 2 + count, what="the old workers to exit"
        )
        wait_until(lambda: zombies(proc.pgid) == [], 5, "the master to reap the old workers")
        self.assertEqual(group["generation"], 1 + rolls)
        self.assertEqual({w["generation"] for w in group["workers"]}, {1 + rolls})
        self.assertFalse(first & {w["pid"] for w in group["workers"]})
        self.assertGreater(len(load.pids), count * rolls // 2, "answers came from many workers")

    def test_two_workers_five_rolls(self) -> None:
        """
        workers = 2, 5 rolling restarts under keep-alive and Connection:
        close load: no request fails, and at least two workers serve at
        every sample.
        """
        self.check_rolls(2, 5, tls=False)

    def test_three_workers_five_rolls_with_tls(self) -> None:
        """
        workers = 3, 5 rolling restarts under HTTP and TLS load: no request
        fails, and at least three workers serve at every sample.
        """
        self.check_rolls(3, 5, tls=True)


class WorkerFailureTests(WorkerTestCase):
    def test_a_killed_worker_is_replaced(self) -> None:
        """
        A worker killed with SIGKILL is replaced; the group keeps its size.
        """
        proc, port, _ = self.start_group(2)
        victim = pid_of(port)
        proc.signal(victim, signal.SIGKILL)
        group = wait_until(
            lambda: (lambda s: s if s["worker_deaths"] == 1 and len([w for w in s["workers"] if w["ready"]]) == 2 else None)(status(port)),
            what="the killed worker to be replaced",
        )
        self.assertNotIn(victim, {w["pid"] for w in group["workers"]})
        self.assertFalse(process_alive(victim))
        self.assertIn("died (signal 9); replacing it", proc.log())
        metrics = get(port, "/debug/admin/metrics", headers=admin_auth())[2].decode()
        self.assertIn("graceful_worker_deaths_total 1.0", metrics)
        self.assertIn('graceful_workers{state="serving"} 2.0', metrics)
        # One series per slot, labelled by slot, with the pid as its value.
        pids = sorted(line for line in metrics.splitlines() if line.startswith("graceful_worker_pid{"))
        self.assertEqual(
            pids,
            sorted(f'graceful_worker_pid{{slot="{w["slot"]}"}} {float(w["pid"])}' for w in group["workers"]),
        )
        [slot] = [int(k) for k, v in group["last_replaced_reason"].items() if v == "died"]
        self.assertIn(f'graceful_worker_last_replaced{{reason="died",slot="{slot}"}} 1.0', metrics)
        page = get(port, "/debug/admin", headers={**admin_auth(), "Accept": "text/html"})[2].decode()
        for worker in group["workers"]:
            self.assertIn(f'<td class="worker-pid">{worker["pid"]}</td>', page)

    def test_a_failing_new_worker_stops_the_roll(self) -> None:
        """
        The new worker of slot 1 cannot start: the roll stops there, slot 0
        keeps its new worker, the old workers of slots 1 and 2 keep serving,
        and the failure is reported; no request fails.
        """
        flag = Path(tempfile.mkdtemp(prefix="graceful-workers-")) / "fail"
        proc, port, _ = self.start_group(3, FAIL_SLOT_1=str(flag))
        old = {w["slot"]: w["pid"] for w in status(port)["workers"]}
        flag.write_text("")
        self.addCleanup(flag.unlink)
        with Load([("keepalive", port), ("close", port)], path="/pid", max_seconds=60) as load:
            load.wait_for(50)
            proc.signal(proc.pgid, signal.SIGUSR1)
            group = wait_until(
                lambda: (
                    lambda s: s
                    if s["last_restart"]
                    and not s["restarting"]
                    and len([w for w in s["workers"] if w["ready"] and not w["draining"]]) == 3
                    else None
                )(status(port)),
                what="the roll to stop, every slot served",
            )
            load.wait_for(50)
        self.assertEqual(load.failures, [])
        self.assertFalse(group["last_restart"]["ok"])
        self.assertIn("cannot start", group["last_restart"]["error"])
        slots = {w["slot"]: w for w in group["workers"] if not w["draining"]}
        self.assertNotEqual(slots[0]["pid"], old[0])
        self.assertEqual((slots[1]["pid"], slots[2]["pid"]), (old[1], old[2]))
        self.assertEqual(group["generation"], 1)
        wait_until(lambda: not process_alive(old[0]), what="the replaced worker to exit")
        wait_until(lambda: len(accepting_pids(port)) == 3, what="3 workers accepting")

    def test_shutdown_drains_every_worker(self) -> None:
        """
        SIGTERM to the master: a request in flight on a worker completes,
        every worker exits, and the master exits 0.
        """
        proc, port, _ = self.start_group(2)
        workers = [w["pid"] for w in status(port)["workers"]]
        result: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: result.update(answer=get(port, "/slow?seconds=2", timeout=15))
        )
        thread.start()
        wait_until(
            lambda: sum(w["in_flight"] for w in status(port)["workers"]) >= 1,
            what="the slow request to be in flight",
        )
        proc.signal(proc.pgid, signal.SIGTERM)
        thread.join(15)
        self.assertEqual(result["answer"][0], 200)
        self.assertEqual(proc.wait_exit(), 0)
        for pid in workers:
            wait_until(lambda: not process_alive(pid), what=f"worker {pid} to exit")
        self.assertIn(f"{proc.pgid}: all servers shutdown", proc.log())


class WorkerConfigChangeTests(SynchronousTestCase):
    """
    twistd with workers = 2: a restart whose config adds a port and drops
    another.  The new workers ask the master for the new port ("need"), it
    binds it once and they all serve it; the dropped port closes when the
    last old worker is gone.
    """

    def test_port_added_and_dropped_across_a_roll(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="graceful-workers-config-"))
        kept, dropped, added = free_ports(3)

        def write(ports: list[int]) -> None:
            (directory / "graceful.toml").write_text(
                "[graceful]\nworkers = 2\nready_timeout = 10.0\n\n"
                '[servers.web]\napp = "tests.integration.programs.pages:root"\nhost = "127.0.0.1"\n'
                f'ports = {ports}\nadmin = "/debug/admin"\n'
            )

        write([kept, dropped])
        pidfile = directory / "twistd.pid"
        proc = ServerProcess.twistd(
            "-n", f"--pidfile={pidfile}", "graceful", "--config", str(directory / "graceful.toml")
        ).start()
        proc.pidfiles.append(pidfile)
        self.addCleanup(proc.stop)
        wait_until(
            lambda: len([w for w in status(kept)["workers"] if w["ready"]]) == 2,
            what="two workers",
        )
        master = int(pidfile.read_text())
        write([kept, added])
        proc.signal(master, signal.SIGUSR1)
        group = wait_until(
            lambda: (
                lambda s: s
                if s["generation"] == 2 and not s["restarting"] and s["last_restart"]
                else None
            )(status(kept)),
            what="the roll to end",
        )
        self.assertTrue(group["last_restart"]["ok"], group["last_restart"])
        new_workers = {w["pid"] for w in group["workers"] if w["generation"] == 2}
        wait_until(lambda: accepting_pids(added) == new_workers, what="the new port served")
        wait_until(lambda: refuses(dropped), what="the dropped port to close")
        # A new master serves now, named in the pidfile.
        self.assertNotEqual(group["pid"], master)
        self.assertEqual(int(pidfile.read_text()), group["pid"])
        self.assertIn("bound http port", proc.log())
