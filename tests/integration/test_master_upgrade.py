"""
The master upgrades too: under twistd with workers, a SIGUSR1 after the
config went from 2 workers to 3 ends with a new master (a new generation,
named in the pidfile) and 3 new workers, while not one request fails; a new
release whose code cannot even be imported leaves the old master and its
workers serving.
"""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    Load,
    ServerProcess,
    accepting_pids,
    admin_auth,
    free_ports,
    get,
    process_alive,
    wait_until,
)

CONFIG = """\
[graceful]
workers = {workers}
ready_timeout = 15.0
drain_timeout = 10.0

[servers.web]
app = "{app}"
host = "127.0.0.1"
ports = [{port}]
admin = "/debug/admin"
"""


def status(port: int) -> dict[str, Any]:
    code, _, body = get(port, "/debug/admin/status", headers=admin_auth())
    assert code == 200, (code, body)
    return json.loads(body)  # type: ignore[no-any-return]


class MasterUpgradeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="graceful-master-"))
        (self.port,) = free_ports(1)
        self.pidfile = self.directory / "twistd.pid"

    def write(self, workers: int, app: str = "tests.integration.programs.pages:root") -> None:
        (self.directory / "graceful.toml").write_text(
            CONFIG.format(workers=workers, app=app, port=self.port)
        )

    def start(self, workers: int) -> tuple[ServerProcess, int]:
        self.write(workers)
        proc = ServerProcess.twistd(
            "-n",
            f"--pidfile={self.pidfile}",
            "graceful",
            "--config",
            str(self.directory / "graceful.toml"),
        ).start()
        proc.pidfiles.append(self.pidfile)
        self.addCleanup(proc.stop)
        wait_until(
            lambda: len([w for w in status(self.port)["workers"] if w["ready"]]) == workers,
            what=f"{workers} workers",
        )
        return proc, int(self.pidfile.read_text())

    def test_workers_2_to_3(self) -> None:
        proc, master = self.start(2)
        old_workers = {w["pid"] for w in status(self.port)["workers"]}
        self.write(3)
        with Load([("keepalive", self.port), ("close", self.port)], path="/pid") as load:
            load.wait_for(100)
            proc.signal(master, signal.SIGUSR1)
            group = wait_until(
                lambda: (
                    lambda s: s
                    if s["pid"] != master
                    and len([w for w in s["workers"] if w["ready"] and not w["draining"]]) == 3
                    else None
                )(status(self.port)),
                what="a new master with 3 workers",
                timeout=60,
            )
            load.wait_for(100)
        self.assertEqual(load.failures, [])
        new_master = proc.remember(group["pid"])
        self.assertEqual((group["role"], group["master_generation"]), ("master", 2))
        self.assertEqual({w["generation"] for w in group["workers"]}, {2})
        wait_until(lambda: int(self.pidfile.read_text()) == new_master, what="the pidfile")
        proc.wait_gone(master)
        for pid in old_workers:
            proc.wait_gone(pid)
        new_workers = {w["pid"] for w in status(self.port)["workers"]}
        self.assertEqual(len(new_workers), 3)
        wait_until(lambda: accepting_pids(self.port) == new_workers, what="3 workers accepting")
        final = wait_until(
            lambda: (lambda s: s if s["last_restart"] else None)(status(self.port)),
            what=f"the new master's record of the restart\n{proc.log()}",
        )
        self.assertTrue(final["last_restart"]["ok"])

    def test_new_code_that_does_not_import(self) -> None:
        proc, master = self.start(2)
        workers = {w["pid"] for w in status(self.port)["workers"]}
        self.write(3, app="tests.integration.fixtures.broken:app")
        with Load([("keepalive", self.port), ("close", self.port)], path="/pid") as load:
            load.wait_for(50)
            proc.signal(master, signal.SIGUSR1)
            group = wait_until(
                lambda: (lambda s: s if s["last_restart"] else None)(status(self.port)),
                what="the restart to fail",
            )
            load.wait_for(50)
        self.assertEqual(load.failures, [])
        self.assertFalse(group["last_restart"]["ok"])
        self.assertIn("always fails to import", group["last_restart"]["error"])
        self.assertEqual((group["pid"], int(self.pidfile.read_text())), (master, master))
        self.assertEqual({w["pid"] for w in group["workers"]}, workers)
        self.assertTrue(all(process_alive(pid) for pid in workers))
        self.assertEqual(accepting_pids(self.port), workers)
