"""
A process whose peer on the handoff pipes dies, by SIGKILL, on real
processes: workers whose master died drain and exit instead of serving on as
orphans; a new process whose old one died before the handover takes over.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    ROOT,
    ServerProcess,
    free_port,
    free_ports,
    get,
    pid_of,
    process_alive,
    refuses,
    wait_until,
)
from tests.integration.test_workers import status

WORKERS = ROOT / "tests" / "integration" / "programs" / "workers.py"
SLOW_NEW_GENERATION = ROOT / "tests" / "integration" / "programs" / "slow_new_generation.py"


def children(pid: int) -> list[int]:
    """
    The live processes whose parent is C{pid}, from /proc.
    """
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            after = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(after[1]) == pid and after[0] != "Z":
            found.append(int(proc.name))
    return found


# Asks the kernel back what graceful armed (prctl PR_GET_PDEATHSIG).
READ_BACK = """
import ctypes, signal
from graceful.handoff.supervision import ParentDeathSignal
armed = ParentDeathSignal().arm(signal.SIGTERM)
value = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)
print(armed, value.value)
"""


class ParentDeathSignalTests(SynchronousTestCase):
    def test_kernel_takes_the_signal(self) -> None:
        out = subprocess.run(
            [sys.executable, "-c", READ_BACK],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            timeout=20,
            check=True,
        ).stdout.split()
        self.assertEqual(out, [b"True", str(int(signal.SIGTERM)).encode()])


class MasterKilledTests(SynchronousTestCase):
    def test_workers_exit_when_the_master_is_killed(self) -> None:
        """
        workers = 2, SIGKILL to the master: within a few seconds no worker
        is alive and the ports refuse connections; each worker said why.
        """
        http_port, _ = free_ports(2)
        proc = ServerProcess.python(WORKERS, "2", str(http_port)).start()
        self.addCleanup(proc.stop)
        group = wait_until(
            lambda: (lambda s: s if len([w for w in s["workers"] if w["ready"]]) == 2 else None)(
                status(http_port)
            ),
            what="2 workers to serve",
        )
        workers = [proc.remember(w["pid"]) for w in group["workers"]]
        proc.signal(proc.pgid, signal.SIGKILL)
        self.assertEqual(proc.wait_exit(), -signal.SIGKILL)
        wait_until(
            lambda: not any(process_alive(pid) for pid in workers),
            timeout=5,
            what="every worker to exit",
        )
        self.assertTrue(refuses(http_port))
        log = proc.log()
        for pid in workers:
            self.assertIn(f"{pid}: the master {proc.pgid} is gone; draining and exiting", log)


class OldProcessKilledTests(SynchronousTestCase):
    def test_new_process_takes_over_when_the_old_one_is_killed(self) -> None:
        """
        SIGUSR1, then SIGKILL to the old process after it started the new
        one and before that one is ready (it takes 1.5 s to start): the new
        process serves, names itself in the pidfile, starts its background
        service, and says it took over.
        """
        directory = Path(tempfile.mkdtemp(prefix="graceful-peer-death-"))
        self.addCleanup(shutil.rmtree, directory, True)
        port = free_port()
        proc = ServerProcess.python(SLOW_NEW_GENERATION, str(port), str(directory)).start()
        self.addCleanup(proc.stop)
        pidfile = directory / "app.pid"
        proc.pidfiles.append(pidfile)
        old = proc.pgid
        wait_until(lambda: pid_of(port) == old, what="the first generation to serve")
        wait_until(lambda: (directory / f"started-{old}").exists(), what="its service")
        self.assertEqual(pidfile.read_text().strip(), str(old))

        proc.signal(old, signal.SIGUSR1)
        [new] = wait_until(lambda: children(old), timeout=5, what="the new process")
        proc.remember(new)
        proc.signal(old, signal.SIGKILL)
        self.assertEqual(proc.wait_exit(), -signal.SIGKILL)
        self.assertFalse((directory / f"started-{new}").exists(), "killed before it was ready")

        wait_until(lambda: pid_of(port) == new, what="the new process to serve")
        wait_until(lambda: pidfile.read_text().strip() == str(new), what="the pidfile")
        wait_until(lambda: (directory / f"started-{new}").exists(), what="the new service")
        self.assertIn(f"{new}: previous generation {old} is gone; taking over", proc.log())
        self.assertEqual(get(port, "/pid")[0], 200)
        # And it is a full member of the line: it restarts itself too.
        proc.signal(new, signal.SIGUSR1)
        wait_until(
            lambda: pid_of(port) not in (old, new), timeout=10, what="the next generation"
        )
        newest = pid_of(port)
        proc.remember(newest)
        wait_until(lambda: pidfile.read_text().strip() == str(newest), what="the pidfile")
