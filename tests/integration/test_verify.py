"""
Verified hand-over: a release whose C{verify} path does not answer 2xx
through its own HTTP stack never takes over; the old process (or the old
workers) serve on, and the log says which path answered what.
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    ServerProcess,
    free_port,
    get,
    pid_of,
    process_alive,
    refuses,
    wait_until,
)

APP = '''
import os

import graceful as g

# Read once, as a release's code would be: each generation imports afresh.
STATUS, _, BODY = open(os.path.join(os.path.dirname(__file__), "health")).read().partition(" ")


def root():
    pages = g.Router()

    @pages.route("/healthz")
    def healthz(request):
        request.setResponseCode(int(STATUS))
        return BODY

    pages.route("/pid", lambda request: f"{os.getpid()}\\n")
    return pages
'''

CONFIG = """
[graceful]
ready_timeout = 10.0
drain_timeout = 5.0
workers = {workers}

[servers.web]
app = "verified_app:root"
host = "127.0.0.1"
ports = [{port}]
verify = ["/healthz"]
"""


class VerifyTests(SynchronousTestCase):
    def release(self, status: int, body: str, workers: int = 1) -> tuple[ServerProcess, int, Path]:
        """
        A process serving the release in a folder of its own (not started).
        """
        folder = Path(tempfile.mkdtemp(prefix="graceful-verify-"))
        port = free_port()
        (folder / "verified_app.py").write_text(APP)
        (folder / "health").write_text(f"{status} {body}")
        (folder / "graceful.toml").write_text(CONFIG.format(port=port, workers=workers))
        proc = ServerProcess.twistd(
            "-n", "--pidfile=", "graceful", "--config", "graceful.toml", cwd=folder
        )
        self.addCleanup(proc.stop)
        return proc, port, folder

    def test_a_failing_release_never_takes_over(self) -> None:
        """
        SIGUSR1 with a release whose /healthz answers 500: the restart fails,
        the log names the path, the status and the body's first line, and
        the old pid serves on; the next good release takes over.
        """
        proc, port, folder = self.release(200, "fine\n")
        proc.start()
        old = wait_until(lambda: pid_of(port), what="the first generation")
        self.assertEqual(proc.log().count("verified /healthz (200)"), 1)

        (folder / "health").write_text("500 database unreachable\nTraceback (most recent call last):\n")
        proc.signal(old, signal.SIGUSR1)
        wait_until(lambda: "restart failed" in proc.log(), what="the restart to fail")
        failed = [line for line in proc.log().splitlines() if "restart failed" in line]
        self.assertIn("verify web /healthz answered 500: database unreachable", failed[0])
        self.assertEqual(pid_of(port), old)
        self.assertEqual(get(port, "/healthz")[0], 200)  # the old release, as it was
        self.assertTrue(process_alive(old))

        (folder / "health").write_text("200 fine\n")
        proc.signal(old, signal.SIGUSR1)
        new = wait_until(lambda: (pid := pid_of(port)) != old and pid, what="a good release")
        proc.remember(new)
        self.assertEqual(proc.log().count("verified /healthz (200)"), 2)
        proc.wait_gone(old)

    def test_workers_keep_the_old_ones(self) -> None:
        """
        workers = 2: the new master's first worker fails verify, so no slot
        is handed over and the old workers serve on.
        """
        proc, port, folder = self.release(200, "fine\n", workers=2)
        proc.start()
        master = proc.pid
        wait_until(lambda: proc.log().count("verified /healthz (200)") == 2, what="two workers")
        workers = set(wait_until(lambda: set(proc.members()) - {master}, what="the workers"))

        (folder / "health").write_text("503 warming up\n")
        proc.signal(master, signal.SIGUSR1)
        wait_until(lambda: "restart failed" in proc.log(), what="the restart to fail")
        failed = [line for line in proc.log().splitlines() if "restart failed" in line]
        self.assertIn("/healthz answered 503: warming up", failed[0])
        served = {pid_of(port) for _ in range(20)}
        self.assertLessEqual(served, workers)
        self.assertTrue(process_alive(master))

    def test_a_first_start_that_fails_verify(self) -> None:
        """
        Like any start error: one line on stderr, exit status 1, nothing
        left listening.
        """
        proc, port, _ = self.release(500, "no database\n")
        proc.start()
        self.assertEqual(proc.wait_exit(), 1)
        errors = [line for line in proc.log().splitlines() if "/healthz" in line]
        self.assertEqual(len(errors), 1, errors)
        self.assertTrue(
            errors[0].endswith("graceful: error: verify web /healthz answered 500: no database"),
            errors,
        )
        self.assertTrue(refuses(port))
