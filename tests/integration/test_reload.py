"""
C{graceful run --reload}: a save restarts gracefully (no request refused or
failed meanwhile), a save that does not import leaves the last good code
serving and shows its error once, in full, and a burst of saves makes one
restart.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from harness.processes import script
from tests.support import ServerProcess, free_port, get, wait_until

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version}\\n"]
"""


class Poller:
    """
    GETs / in a loop until stopped, counting every failure.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.failures: list[str] = []
        self.answers = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, _, body = get(self.port, "/", timeout=5)
                if status != 200:
                    self.failures.append(f"{status} {body!r}")
                self.answers += 1
            except OSError as e:
                self.failures.append(repr(e))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            raise SkipTest("watchfiles is not installed (graceful[reload])")
        directory = tempfile.TemporaryDirectory(prefix="graceful-reload-")
        self.addCleanup(directory.cleanup)
        self.folder = Path(directory.name)
        self.app = self.folder / "devapp.py"
        self.app.write_text(APP.format(version="v1"))
        self.port = free_port()
        self.proc = ServerProcess(
            [sys.executable, script("graceful"), "run", "devapp:app", "--port", str(self.port),
             "--reload", "--no-access-log"],
            cwd=self.folder,
        )
        self.proc.start()
        self.addCleanup(self.proc.kill)
        wait_until(lambda: self.body() == b"v1\n", what="v1 to serve")
        wait_until(lambda: "watching" in self.proc.log(), what="the watcher")

    def body(self) -> bytes:
        return get(self.port, "/")[2]

    def restarts(self) -> int:
        return self.proc.log().count("server reloading")

    def test_broken_save_keeps_serving(self) -> None:
        poller = Poller(self.port)
        self.addCleanup(poller.stop)
        self.app.write_text("def app(:\n")
        wait_until(lambda: "restart failed, still serving" in self.proc.log(),
                   what="the broken save to fail")
        self.assertEqual(self.body(), b"v1\n")
        log = self.proc.log()
        # In full (where the mistake is, the caret, the error), once.
        self.assertEqual(log.count(f'File "{self.app}", line 1'), 1, log)
        self.assertEqual(log.count("    def app(:\n"), 1, log)
        self.assertIn("SyntaxError: invalid syntax", log)
        self.app.write_text(APP.format(version="v2"))
        wait_until(lambda: self.body() == b"v2\n", what="the good save to serve")
        poller.stop()
        self.assertEqual(poller.failures, [])
        self.assertGreater(poller.answers, 10)

    def test_burst_makes_one_restart(self) -> None:
        for version in ("v2", "v3", "v4"):
            self.app.write_text(APP.format(version=version))
            time.sleep(0.01)
        wait_until(lambda: self.body() == b"v4\n", what="the last save to serve")
        time.sleep(2.5)  # past watchfiles' batching: no second restart comes
        self.assertEqual(self.restarts(), 1, self.proc.log())


ASGI = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                {startup}
                await send({{"type": "lifespan.startup.complete"}})
            else:
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"{version}\\n"}})
"""


class ReloadLifespanTests(SynchronousTestCase):
    def test_failing_startup_keeps_serving(self) -> None:
        """
        A save whose ASGI lifespan startup fails leaves the last good code
        serving, prints the new code's traceback once, and the next good
        save serves.
        """
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            raise SkipTest("watchfiles is not installed (graceful[reload])")
        directory = tempfile.TemporaryDirectory(prefix="graceful-reload-")
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        app = folder / "devasgi.py"
        app.write_text(ASGI.format(startup="pass", version="v1"))
        port = free_port()
        proc = ServerProcess(
            [sys.executable, script("graceful"), "run", "devasgi:app", "--port", str(port),
             "--reload", "--no-access-log"],
            cwd=folder,
        )
        proc.start()
        self.addCleanup(proc.kill)
        wait_until(lambda: get(port, "/")[2] == b"v1\n", what="v1 to serve")
        wait_until(lambda: "watching" in proc.log(), what="the watcher")
        app.write_text(ASGI.format(startup='raise RuntimeError("database is down")', version="v2"))
        wait_until(lambda: "restart failed, still serving" in proc.log(), what="the failed start")
        self.assertEqual(get(port, "/")[2], b"v1\n")
        log = proc.log()
        # The new code's error in full (its traceback, down to the app's
        # line), once; the old process's line names it.
        self.assertEqual(log.count('raise RuntimeError("database is down")'), 1, log)
        self.assertEqual(log.count("Traceback (most recent call last)"), 1, log)
        self.assertIn("restart failed, still serving", log)
        self.assertIn("ASGI lifespan startup failed: RuntimeError: database is down", log)
        app.write_text(ASGI.format(startup="pass", version="v3"))
        wait_until(lambda: get(port, "/")[2] == b"v3\n", what="the good save to serve")
