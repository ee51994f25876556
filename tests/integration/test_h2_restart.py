"""
HTTP/2 across restarts, on real processes with clients nobody here wrote:
h2load (nghttp2) and httpx with http2=True against the HTTPS port of
tests/integration/programs/web.py while SIGUSR1 restarts it; HTTP/1.1 on the same port
keeps working.

h2load does not reconnect after a GOAWAY: it counts every request it has
not sent yet as failed.  So it runs in short rounds back to back, each
sending all its requests at once (-n = -c times -m) on a 0.2 s page: a round
caught by a drain has all its streams open on the old process, and they
must all complete.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful.http.h2 import H2_ENABLED
from tests.support import CERT, ServerProcess, free_ports, get, pid_of, wait_until
from tests.integration.test_restart import WEB, restart

H2LOAD = shutil.which("h2load")

#: h2load's summary line.
REQUESTS = re.compile(
    r"requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, "
    r"(?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, (?P<errored>\d+) errored, "
    r"(?P<timeout>\d+) timeout"
)


def h2load_summary(output: str) -> dict[str, int]:
    """
    The counts of h2load's "requests:" line.
    """
    match = REQUESTS.search(output)
    if match is None:
        raise AssertionError(f"no summary in h2load's output:\n{output}")
    return {name: int(value) for name, value in match.groupdict().items()}


class H2LoadSummaryTests(SynchronousTestCase):
    def test_parse(self) -> None:
        line = (
            "requests: 40 total, 40 started, 40 done, 38 succeeded, 2 failed, "
            "1 errored, 0 timeout\n"
        )
        self.assertEqual(
            h2load_summary("finished in 1s\n" + line),
            dict(total=40, started=40, done=40, succeeded=38, failed=2, errored=1, timeout=0),
        )

    def test_missing(self) -> None:
        self.assertRaises(AssertionError, h2load_summary, "connect: Connection refused\n")


class H2RestartTests(SynchronousTestCase):
    """
    HTTP/2 clients through SIGUSR1 restarts.
    """

    def setUp(self) -> None:
        if not H2_ENABLED:
            self.skipTest("h2 (the http2 extra) is not installed")

    def start_web(self) -> tuple[ServerProcess, int]:
        http_port, https_port = free_ports(2)
        proc = ServerProcess.python(WEB, str(http_port), str(https_port)).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(https_port, tls=True), what="the server to answer")
        return proc, https_port

    def restarts(self, proc: ServerProcess, port: int, count: int) -> list[int]:
        """
        C{count} restarts, each old process gone well before drain_timeout
        (it exits once its last connection is closed); the pids in order.
        """
        pids = [pid_of(port, tls=True)]
        for _ in range(count):
            time.sleep(0.7)
            old, new = restart(proc, port, tls=True)
            proc.wait_gone(old, timeout=10)
            pids.append(new)
        return pids

    def test_h2load_rounds_across_restarts(self) -> None:
        if H2LOAD is None:
            self.skipTest("h2load (nghttp2-client) is not installed")
        proc, port = self.start_web()
        rounds: list[tuple[dict[str, int], str]] = []
        stop = threading.Event()

        def run() -> None:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline and len(rounds) < 400:
                out = subprocess.run(
                    [H2LOAD, "-n", "40", "-c", "4", "-m", "10",
                     f"https://127.0.0.1:{port}/slow?seconds=0.2"],
                    capture_output=True, text=True, timeout=20,
                ).stdout
                rounds.append((h2load_summary(out), out))

        thread = threading.Thread(target=run)
        thread.start()
        try:
            wait_until(lambda: len(rounds) >= 2, what="h2load's first rounds")
            pids = self.restarts(proc, port, 4)
        finally:
            stop.set()
            thread.join(30)
        self.assertEqual(len(set(pids)), 5)
        bad = [out for summary, out in rounds if summary["succeeded"] != 40]
        self.assertEqual(bad, [], "every stream of every round succeeds")
        self.assertGreater(len(rounds), 8)
        for _, out in rounds:
            self.assertIn("Application protocol: h2", out)

    def test_httpx_and_http11_across_restarts(self) -> None:
        try:
            import httpx
        except ImportError:
            self.skipTest("httpx is not installed")
        proc, port = self.start_web()
        seen: list[tuple[str, int]] = []
        errors: list[Any] = []
        stop = threading.Event()

        def run() -> None:
            deadline = time.monotonic() + 60
            with httpx.Client(http2=True, verify=str(CERT), timeout=10) as client:
                while not stop.is_set() and time.monotonic() < deadline and len(seen) < 20000:
                    try:
                        response = client.get(f"https://127.0.0.1:{port}/pid")
                        seen.append((response.http_version, int(response.text)))
                    except Exception as e:
                        errors.append(repr(e))

        thread = threading.Thread(target=run)
        thread.start()
        try:
            wait_until(lambda: len(seen) >= 20, what="httpx's first responses")
            pids = self.restarts(proc, port, 3)
            # HTTP/1.1 (http.client offers no ALPN) on the same port.
            code, _, body = get(port, "/pid", tls=True)
            self.assertEqual((code, int(body)), (200, pids[-1]))
            wait_until(lambda: seen and seen[-1][1] == pids[-1], what="httpx on the newest")
        finally:
            stop.set()
            thread.join(30)
        self.assertEqual(errors, [])
        self.assertEqual({version for version, _ in seen}, {"HTTP/2"})
        self.assertEqual(
            [pid for pid in pids if pid in {p for _, p in seen}], pids,
            "httpx was answered by every generation",
        )
