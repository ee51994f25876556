"""
The native HTTP/1.1 channel in a real process (twistd, a raw ASGI app):
it serves ASGI servers by default and twisted.web serves them with
C{http_impl = "twisted"}; the admin and health pages answer beside the app;
each request-smuggling probe is refused on a real socket; a restart answers
the request in flight with C{Connection: close} and the old process leaves.
"""

from __future__ import annotations

import signal
import socket
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    ServerProcess,
    child_environment,
    free_ports,
    get,
    pid_of,
    wait_until,
)

APP = "tests.integration.programs.asgi_app:app"


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """
    Send C{data} on a new connection; everything the server sends until it
    closes (at most C{timeout} seconds).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


class NativeChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="graceful-native-")
        self.addCleanup(directory.cleanup)
        self.folder = Path(directory.name)
        self.native, self.twisted = free_ports(2)
        config = self.folder / "graceful.toml"
        config.write_text(
            "[graceful]\nready_timeout = 10\ndrain_timeout = 10\ntimeout_keep_alive = 1\n\n"
            f'[servers.native]\napp = "{APP}"\nports = [{self.native}]\n'
            'admin = "/debug/admin"\nadmin_token = "t"\nhealth = "/healthz"\n\n'
            f'[servers.tw]\napp = "{APP}"\nports = [{self.twisted}]\nhttp_impl = "twisted"\n'
        )
        self.proc = ServerProcess.twistd(
            "-n", "--pidfile=", "graceful", "--config", str(config), env=child_environment()
        ).start()
        self.addCleanup(self.proc.stop)
        wait_until(lambda: pid_of(self.native, "/"), what="the native server to serve")

    def test_native_by_default_twisted_on_request(self) -> None:
        status, headers, body = get(self.native, "/")
        self.assertEqual(status, 200)
        self.assertNotIn("server", headers)  # twisted.web names itself; the native channel does not
        self.assertIn("date", headers)
        self.assertEqual(get(self.twisted, "/")[1].get("server", "").split("/")[0], "TwistedWeb")
        self.assertEqual(get(self.native, "/healthz")[:3:2], (200, b"ok\n"))
        status, _, body = get(self.native, "/debug/admin/status", headers={"Authorization": "Bearer t"})
        self.assertEqual(status, 200, body)
        self.assertIn(b'"in_flight"', body)

    def test_idle_timeouts(self) -> None:
        """
        An idle keep-alive connection is closed after timeout_keep_alive
        (1 s here); a WebSocket upgraded from the native channel outlives it.
        """
        from websockets.sync.client import connect

        with socket.create_connection(("127.0.0.1", self.native), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            self.assertTrue(sock.recv(65536).startswith(b"HTTP/1.1 200 "))
            started = time.monotonic()
            self.assertEqual(sock.recv(65536), b"")
            self.assertLess(time.monotonic() - started, 5)
        with connect(f"ws://127.0.0.1:{self.native}/ws", open_timeout=10) as ws:
            ws.recv(timeout=10)  # the pid
            time.sleep(2.5)
            ws.send("still here")
            self.assertEqual(ws.recv(timeout=10), "still here")

    def test_smuggling_probes_refused(self) -> None:
        probes = {
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": 400,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd": 400,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc": 400,
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n": 400,
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n": 400,
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n": 400,
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n": 400,
            b"GET / HTTP/1.1\r\n\r\n": 400,
            b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20000 + b"\r\n\r\n": 431,
        }
        for probe, status in probes.items():
            answer = exchange(self.native, probe + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 %d " % status), (probe[:60], answer[:80]))
            # Nothing after the refusal was taken for a request.
            self.assertEqual(answer.count(b"HTTP/1.1 "), 1, probe[:60])
        self.assertEqual(get(self.native, "/")[0], 200)

    def test_restart_answers_in_flight_with_close(self) -> None:
        old = self.proc.remember(pid_of(self.native, "/"))
        with socket.create_connection(("127.0.0.1", self.native), timeout=15) as sock:
            sock.sendall(b"GET /sleep HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.2)
            self.proc.signal(old, signal.SIGUSR1)
            answer = b""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head = answer.partition(b"\r\n\r\n")[0].lower()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertIn(b"connection: close", head)
        self.assertEqual(int(answer.split(b"\r\n\r\n")[1].split()[0]), old)
        new = wait_until(lambda: (lambda p: p if p != old else None)(pid_of(self.native, "/")),
                         what="the new process")
        self.proc.remember(new)
        self.proc.wait_gone(old)


class WorkersOnUvloopTests(SynchronousTestCase):
    def test_old_master_leaves_after_a_restart(self) -> None:
        """
        A master of ASGI workers (its asyncio reactor on uvloop) hears its
        drained workers exit, so after a restart the old master is gone.
        """
        directory = tempfile.TemporaryDirectory(prefix="graceful-native-workers-")
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        (port,) = free_ports(1)
        config = folder / "graceful.toml"
        pidfile = folder / "master.pid"
        config.write_text(
            "[graceful]\nready_timeout = 15\ndrain_timeout = 10\nworkers = 2\n\n"
            f'[servers.web]\napp = "{APP}"\nports = [{port}]\n'
        )
        proc = ServerProcess.twistd(
            "-n", f"--pidfile={pidfile}", "graceful", "--config", str(config),
            env=child_environment(),
        ).start()
        self.addCleanup(proc.stop)

        def master() -> int | None:
            try:
                return int(pidfile.read_text())
            except (OSError, ValueError):
                return None

        wait_until(lambda: pid_of(port, "/"), what="the workers to serve")
        old = proc.remember(wait_until(master, what="the pidfile"))
        proc.signal(old, signal.SIGUSR1)
        new = wait_until(lambda: (lambda p: p if p not in (None, old) else None)(master()),
                         what="the new master")
        proc.remember(new)
        proc.wait_gone(old, timeout=8)
        self.assertEqual(get(port, "/")[0], 200)
