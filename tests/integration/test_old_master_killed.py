"""
kill -9 of the old master in the middle of an upgrade, under twistd with
workers and an app that writes to stderr while it imports: the new master
takes over at once (the pidfile names it), keeps its stderr working, starts
every slot, retries a worker that fails, and the service keeps answering.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from harness.processes import children
from tests.support import (
    Load,
    ServerProcess,
    admin_auth,
    child_environment,
    free_ports,
    get,
    process_alive,
    wait_until,
)

# Each worker imports the app itself (no template), so that a slow or failing
# import is a worker's, as these tests need.
CONFIG = """\
[graceful]
workers = 2
preload = false
ready_timeout = 15.0
drain_timeout = 5.0

[servers.web]
app = "tests.integration.fixtures.noisy:root"
host = "127.0.0.1"
ports = [{port}]
admin = "/debug/admin"
"""


def status(port: int) -> dict[str, Any]:
    code, _, body = get(port, "/debug/admin/status", headers=admin_auth())
    assert code == 200, (code, body)
    return json.loads(body)  # type: ignore[no-any-return]


class OldMasterKilledTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="graceful-killed-"))
        (self.port,) = free_ports(1)
        self.pidfile = self.directory / "twistd.pid"
        self.slow = self.directory / "slow"
        self.fail_once = self.directory / "fail-once"
        (self.directory / "graceful.toml").write_text(CONFIG.format(port=self.port))
        self.proc = ServerProcess.twistd(
            "-n",
            f"--pidfile={self.pidfile}",
            "graceful",
            "--config",
            str(self.directory / "graceful.toml"),
            env=child_environment(NOISY_SLOW=str(self.slow), NOISY_FAIL_ONCE=str(self.fail_once)),
        ).start()
        self.proc.pidfiles.append(self.pidfile)
        self.addCleanup(self.proc.stop)
        wait_until(
            lambda: len([w for w in status(self.port)["workers"] if w["ready"]]) == 2,
            what="2 workers",
        )

    def kill_old_master_mid_upgrade(self) -> tuple[int, float]:
        """
        Restart with a slow, noisy release; kill -9 the old master once the
        new one has started its first worker.  The new master's pid, and
        when the old one died.
        """
        old = int(self.pidfile.read_text())
        workers = children(old)
        self.slow.write_text("")
        self.proc.signal(old, signal.SIGUSR1)
        new = self.proc.remember(
            wait_until(lambda: next(iter(children(old) - workers), None), what="a new master")
        )
        wait_until(lambda: children(new), timeout=30, what="the new master's first worker")
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        self.proc.wait_gone(old)
        return new, killed

    def test_the_service_keeps_answering(self) -> None:
        with Load([("keepalive", self.port), ("close", self.port)], path="/pid") as load:
            load.wait_for(50)
            new, killed = self.kill_old_master_mid_upgrade()
            wait_until(
                lambda: int(self.pidfile.read_text()) == new,
                timeout=2,
                what=f"the pidfile to name the new master\n{self.proc.log()[-3000:]}",
            )
            self.assertLess(time.monotonic() - killed, 2.5)
            group = wait_until(
                lambda: (lambda s: s if s["pid"] == new and [w["ready"] for w in s["workers"]]
                         == [True, True] else None)(status(self.port)),
                timeout=30,
                what=f"the new master's 2 workers\n{self.proc.log()[-3000:]}",
            )
            load.wait_for(50)
        self.assertEqual(load.failures, [])
        self.assertTrue(process_alive(new))
        self.assertEqual({w["generation"] for w in group["workers"]}, {2})
        log = self.proc.log()
        self.assertIn(f"{new}: previous generation", log)
        self.assertNotIn("BrokenPipeError", log)
        self.assertEqual(set(self.stderr_of_workers().values()), {str(self.proc.log_path)})
        # Its workers wrote while importing, after the old master died.
        self.assertIn("step 19", log)

    def stderr_of_workers(self) -> dict[int, str]:
        return {
            w["pid"]: os.readlink(f"/proc/{w['pid']}/fd/2") for w in status(self.port)["workers"]
        }

    def test_workers_of_an_upgrade_write_to_the_log(self) -> None:
        """
        Once the old master has left (in the ordinary way), the new
        workers' stderr is the log, not the pipe to the old master, which
        nobody reads any more.
        """
        old = int(self.pidfile.read_text())
        self.proc.signal(old, signal.SIGUSR1)
        self.proc.wait_gone(old)
        new = int(self.pidfile.read_text())
        wait_until(
            lambda: (lambda s: s["pid"] == new and [w["ready"] for w in s["workers"]]
                     == [True, True])(status(self.port)),
            what="the new master's 2 workers",
        )
        log = str(self.proc.log_path)
        self.assertEqual(set(self.stderr_of_workers().values()), {log})

    def test_a_worker_that_fails_is_retried(self) -> None:
        new, _ = self.kill_old_master_mid_upgrade()
        self.fail_once.write_text("")
        wait_until(
            lambda: (lambda s: s["pid"] == new and [w["ready"] for w in s["workers"]]
                     == [True, True])(status(self.port)),
            timeout=30,
            what=f"the new master's 2 workers\n{self.proc.log()[-3000:]}",
        )
        self.assertFalse(self.fail_once.exists())
        self.assertIn("with no older master to roll back to, trying again", self.proc.log())
        self.assertTrue(process_alive(new))
        self.assertEqual(int(self.pidfile.read_text()), new)
