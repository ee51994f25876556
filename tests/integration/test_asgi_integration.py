"""
A raw ASGI app (tests/integration/programs/asgi_app.py) in real processes: under
C{twistd -n graceful --config FILE} and as C{python prog.py}, across restarts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import (
    CERT,
    KEY,
    ROOT,
    ServerProcess,
    child_environment,
    free_port,
    free_ports,
    get,
    pid_of,
    wait_until,
)

PROGRAM = ROOT / "tests" / "integration" / "programs" / "asgi_app.py"


class ASGIIntegrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="graceful-asgi-")
        self.addCleanup(directory.cleanup)
        self.folder = Path(directory.name)
        self.lifespan_log = self.folder / "lifespan.log"
        self.env = child_environment(GRACEFUL_TEST_LIFESPAN=str(self.lifespan_log))
        self.port = free_port()

    def lifespan_events(self) -> list[tuple[str, int]]:
        if not self.lifespan_log.exists():
            return []
        return [
            (kind, int(pid))
            for kind, pid in (line.split() for line in self.lifespan_log.read_text().splitlines())
        ]

    def start_twistd(self) -> ServerProcess:
        config = self.folder / "graceful.toml"
        config.write_text(
            "[graceful]\nready_timeout = 10\ndrain_timeout = 10\n\n"
            "[servers.web]\n"
            'app = "tests.integration.programs.asgi_app:app"\n'
            f"ports = [{self.port}]\n"
        )
        proc = ServerProcess.twistd(
            "-n", "--pidfile=", "graceful", "--config", str(config), env=self.env
        ).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(self.port, "/"), what="twistd to serve the ASGI app")
        return proc

    def test_twistd_restarts_rollback_and_lifespan(self) -> None:
        """
        On the asyncio reactor with state from lifespan startup; a slow
        request spanning a restart ends in the old process; a 10 MB body
        arrives whole; a startup failure on restart leaves the old process
        serving; every generation's shutdown runs exactly once.
        """
        proc = self.start_twistd()
        status, _, body = get(self.port, "/")
        first, reactor, started_by = body.split()
        self.assertEqual((status, reactor, started_by), (200, b"AsyncioSelectorReactor", first))

        big = os.urandom(10 * 1024 * 1024)
        _, _, echoed = get(self.port, "/echo", method="POST", body=big, timeout=20)
        self.assertEqual(echoed.split(), [str(len(big)).encode(), hashlib.sha256(big).hexdigest().encode()])

        slow: list[bytes] = []
        request = threading.Thread(target=lambda: slow.append(get(self.port, "/sleep")[2]))
        request.start()
        time.sleep(0.3)  # the request reaches the old process before SIGUSR1
        old, new = self._restart(proc)
        request.join(10)
        self.assertEqual(slow[0].split()[0], str(old).encode())
        proc.wait_gone(old)
        self.assertEqual(
            self.lifespan_events(), [("startup", old), ("startup", new), ("shutdown", old)]
        )

        (self.folder / "fail-startup").touch()
        proc.signal(new, signal.SIGUSR1)
        wait_until(
            lambda: any(
                "restart failed, still serving" in line
                and "exited with status 1: ASGI lifespan startup failed: told to fail" in line
                for line in proc.log().splitlines()
            ),
            what="the restart to fail",
        )
        self.assertEqual(pid_of(self.port, "/"), new)

        os.kill(new, signal.SIGTERM)
        proc.wait_gone(new)
        events = self.lifespan_events()
        self.assertEqual(events[:3], [("startup", old), ("startup", new), ("shutdown", old)])
        self.assertEqual(events[3][0], "startup")  # the process that failed
        self.assertEqual(events[4:], [("shutdown", new)])

    def _restart(self, proc: ServerProcess) -> tuple[int, int]:
        old = pid_of(self.port, "/")
        proc.signal(old, signal.SIGUSR1)
        new = wait_until(
            lambda: (lambda p: p if p != old else None)(pid_of(self.port, "/")),
            what="the new process",
        )
        return old, proc.remember(new)

    def test_python_program(self) -> None:
        """
        C{python prog.py}: the same app mounted with mount_asgi, restarted.
        """
        proc = ServerProcess.python(PROGRAM, str(self.port), env=self.env).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(self.port, "/"), what="the program to serve")
        _, _, body = get(self.port, "/")
        self.assertEqual(body.split()[1], b"AsyncioSelectorReactor")
        self.assertEqual(get(self.port, "/task")[2], b"task\n")
        old, new = self._restart(proc)
        _, _, body = get(self.port, "/")
        self.assertEqual(body.split(), [str(new).encode(), b"AsyncioSelectorReactor", str(new).encode()])
        proc.wait_gone(old)
        self.assertEqual(
            self.lifespan_events(), [("startup", old), ("startup", new), ("shutdown", old)]
        )


    def test_websocket_closed_1012_at_restart(self) -> None:
        """
        A WebSocket of the ASGI app echoes; SIGUSR1 closes it with 1012
        (the app hears the disconnect with that code) and the client
        reconnects to the new process.
        """
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        proc = self.start_twistd()
        url = f"ws://127.0.0.1:{self.port}/ws"
        with connect(url, open_timeout=5) as ws:
            old = int(ws.recv(timeout=5))
            ws.send("hello")
            self.assertEqual(ws.recv(timeout=5), "hello")
            ws.send(b"\x00\x01")
            self.assertEqual(ws.recv(timeout=5), b"\x00\x01")
            proc.remember(old)
            proc.signal(old, signal.SIGUSR1)
            with self.assertRaises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        self.assertEqual(closed.exception.rcvd.code, 1012)

        def reconnect() -> int | None:
            with connect(url, open_timeout=5) as again:
                pid = int(again.recv(timeout=5))
                return pid if pid != old else None

        new = proc.remember(wait_until(reconnect, what="a WebSocket to the new process"))
        proc.wait_gone(old)
        self.assertIn(("ws-disconnect-1012", old), self.lifespan_events())
        self.assertNotEqual(new, old)


class RestartsUnderLoadTests(SynchronousTestCase):
    """
    A raw ASGI app, examples/asgi_app.py (FastAPI) and a Django ASGI
    project, three servers of one twistd, under wrk on keep-alive,
    C{Connection: close} and TLS connections across five restarts.
    """

    def test_restarts_under_load(self) -> None:
        from harness.wrk import Wrk, wrk_path

        if wrk_path() is None:
            raise SkipTest("wrk is not installed")
        apps = [("raw", "tests.integration.programs.asgi_app:app")]
        for module, app in (("fastapi", "examples.asgi_app:app"),
                            ("django", "tests.integration.programs.django_app:application")):
            try:
                __import__(module)
            except ImportError:
                continue
            apps.append((module, app))
        if len(apps) < 3:
            raise SkipTest("fastapi or django is not installed")
        directory = tempfile.TemporaryDirectory(prefix="graceful-asgi-load-")
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        ports = free_ports(2 * len(apps))
        config = folder / "graceful.toml"
        config.write_text(
            "[graceful]\nready_timeout = 15\n\n"
            + "".join(
                f"[servers.{name}]\n"
                f'app = "{app}"\n'
                f"ports = [{ports[2 * i]}]\nhttps_ports = [{ports[2 * i + 1]}]\n"
                f'cert = "{CERT}"\nkey = "{KEY}"\n\n'
                for i, (name, app) in enumerate(apps)
            )
        )
        proc = ServerProcess.twistd("-n", "--pidfile=", "graceful", "--config", str(config))
        proc.start()
        self.addCleanup(proc.stop)
        fastapi_port = ports[2]
        pid = lambda: json.loads(get(fastapi_port, "/pid")[2])["pid"]  # noqa: E731
        wait_until(pid, what="the FastAPI app to serve")
        for i, (name, _) in enumerate(apps):
            status, _, body = get(ports[2 * i], "/")
            self.assertEqual(status, 200, (name, body))
        # One wrk per app and kind of connection, all at once, for as long
        # as the five restarts take (stopped then; 60 s at most).
        runs: dict[str, Wrk] = {}
        for i, (name, _) in enumerate(apps):
            for kind in ("keepalive", "close", "tls"):
                scheme, port = ("https", ports[2 * i + 1]) if kind == "tls" else ("http", ports[2 * i])
                run = Wrk(f"{scheme}://127.0.0.1:{port}/", 60, 2,
                          folder / f"wrk-{name}-{kind}.log", close=kind == "close")
                self.addCleanup(run.proc.kill)
                runs[f"{name} {kind}"] = run
        time.sleep(0.5)
        olds = []
        for _ in range(5):
            # A thread-run endpoint first: the old process must still exit.
            self.assertEqual(get(fastapi_port, "/blocking")[0], 200)
            old = proc.remember(pid())
            proc.signal(old, signal.SIGUSR1)
            new = wait_until(lambda: (lambda p: p if p != old else None)(pid()),
                             what="the new process")
            proc.remember(new)
            olds.append(old)  # drains while the next restart begins
        for old in olds:
            proc.wait_gone(old)
        time.sleep(0.3)  # the last generation serves wrk too
        for run in runs.values():
            run.stop()
        results = {what: run.result() for what, run in runs.items()}
        for what, result in results.items():
            assert result is not None, f"{what}: wrk gave no result"
            errors = {k: result[k] for k in ("connect", "read", "write", "timeout", "status")}
            self.assertEqual((what, errors), (what, dict.fromkeys(errors, 0)))
            self.assertGreater(result["requests"], 20, what)
        body = json.loads(get(ports[3], "/pid", tls=True)[2])
        self.assertEqual(body, {"pid": new, "started_by": new})
        self.assertEqual(get(ports[4], "/")[2], f"{new}\n".encode())


class ASGIStreamingTests(SynchronousTestCase):
    """
    Bodies stream both ways through a real process: a slow reader does not
    make the process buffer the response, an upload reaches the app as it
    arrives, and an app failing halfway delivers what it sent.
    """

    def setUp(self) -> None:
        self.port = free_port()

    def start(self, access_log: bool = False) -> ServerProcess:
        if not access_log:
            proc = ServerProcess.python(PROGRAM, str(self.port), env=child_environment()).start()
        else:
            directory = tempfile.TemporaryDirectory(prefix="graceful-asgi-stream-")
            self.addCleanup(directory.cleanup)
            config = Path(directory.name) / "graceful.toml"
            config.write_text(
                '[graceful]\naccess_log = "-"\n\n[servers.web]\n'
                'app = "tests.integration.programs.asgi_app:app"\n'
                f"ports = [{self.port}]\n"
            )
            proc = ServerProcess.twistd(
                "-n", "--pidfile=", "graceful", "--config", str(config), env=child_environment()
            ).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(self.port, "/"), what="the ASGI app to serve")
        return proc

    def connect(self) -> socket.socket:
        sock = socket.socket()
        self.addCleanup(sock.close)
        # A small receive window, so that what the client does not read
        # stays in the server.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def test_slow_reader_keeps_memory_flat(self) -> None:
        """
        A 64 MiB response to a client that stops reading: the process's RSS
        stays within a few MB (it grew by the whole response when send()
        never waited); read then, the response is whole.
        """
        from harness.processes import rss_mb

        self.start()
        pid = pid_of(self.port, "/")
        for _ in range(3):  # warm up: the first requests import and allocate
            get(self.port, "/stream?mb=1", timeout=10)
        before = rss_mb(pid)
        sock = self.connect()
        sock.sendall(b"GET /stream?mb=64 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        got = sock.recv(4096)
        peak = before
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(pid))
            time.sleep(0.1)
        self.assertLess(peak - before, 24, f"RSS grew from {before:.0f} to {peak:.0f} MB")
        total = len(got)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                break
            total += len(data)
        head_length = got.index(b"\r\n\r\n") + 4
        self.assertEqual(total - head_length, 64 << 20)

    def test_upload_reaches_the_app_before_it_ends(self) -> None:
        """
        The app answers "first N" on the first piece of a 20 MiB upload,
        before the client sent the rest; then it gets all of it.
        """
        self.start()
        size = 20 << 20
        sock = self.connect()
        sock.sendall(
            b"POST /upload-progress HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        sock.sendall(b"x" * (1 << 20))
        answer = b""
        deadline = time.monotonic() + 10
        while b"first " not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)  # times out (fails) if the app never started
            if not data:
                break
            answer += data
        self.assertIn(b"first ", answer)
        sock.sendall(b"y" * (size - (1 << 20)))
        deadline = time.monotonic() + 20
        while b"total " not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        self.assertIn(b"total %d\n" % size, answer)

    def test_app_failing_after_start_delivers_what_it_sent(self) -> None:
        """
        What the app sent before raising reaches the client, then a close
        (not a reset), and the access log has the request's line.
        """
        proc = self.start(access_log=True)
        sock = self.connect()
        sock.sendall(b"GET /raise-after-start HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = sock.recv(65536)  # a reset raises here
            if not data:
                break
            answer += data
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertIn(b"part of it\n", answer)
        self.assertFalse(answer.endswith(b"0\r\n\r\n"))  # not a complete response
        wait_until(
            lambda: '"GET /raise-after-start HTTP/1.1" 200' in proc.log(),
            what="the access-log line",
        )

    def test_websocket_denied_with_an_http_response(self) -> None:
        """
        An app answers a WebSocket upgrade with an HTTP response of its own
        (websocket.http.response): curl gets its status and body.
        """
        proc = self.start(access_log=True)
        result = subprocess.run(
            ["curl", "-s", "-i", "--max-time", "10", "-H", "Connection: Upgrade",
             "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
             "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             f"http://127.0.0.1:{self.port}/ws-deny"],
            capture_output=True, timeout=20,
        )
        self.assertTrue(result.stdout.startswith(b"HTTP/1.1 401 "), result.stdout)
        self.assertTrue(result.stdout.endswith(b"\r\n\r\nlog in first\n"), result.stdout)
        wait_until(lambda: '"GET /ws-deny HTTP/1.1" 401' in proc.log(), what="the access-log line")
        self.assertNotIn("CRITICAL", proc.log())


class StartupFailureTests(SynchronousTestCase):
    def test_starlette_startup_failure_names_the_exception(self) -> None:
        """
        Starlette sends a whole traceback as the startup failure's message:
        the one-line reason is its last line (the exception), not
        "Traceback (most recent call last):"; the log has the traceback.
        """
        try:
            __import__("starlette")
        except ImportError:
            raise SkipTest("starlette is not installed")
        directory = tempfile.TemporaryDirectory(prefix="graceful-asgi-fail-")
        self.addCleanup(directory.cleanup)
        config = Path(directory.name) / "graceful.toml"
        config.write_text(
            "[servers.web]\n"
            'app = "tests.integration.programs.starlette_startup_fail:app"\n'
            f"ports = [{free_port()}]\n"
        )
        proc = ServerProcess.twistd(
            "-n", "--pidfile=", "graceful", "--config", str(config), env=child_environment()
        ).start()
        self.addCleanup(proc.stop)
        self.assertEqual(proc.wait_exit(20), 1, proc.log())
        log = proc.log()
        self.assertIn(
            "graceful: error: ASGI lifespan startup failed: ValueError: no database at db:5432\n",
            log,
        )
        self.assertIn("Traceback (most recent call last):", log)
        self.assertIn('raise ValueError("no database at db:5432")', log)

    def test_lifespan_that_returned_after_startup_exits_at_once(self) -> None:
        """
        An app whose lifespan returned after startup: SIGTERM exits at once
        (it waited for drain_timeout, and logged that shutdown did not
        finish).
        """
        directory = tempfile.TemporaryDirectory(prefix="graceful-asgi-lifespan-")
        self.addCleanup(directory.cleanup)
        config = Path(directory.name) / "graceful.toml"
        port = free_port()
        config.write_text(
            "[graceful]\ndrain_timeout = 20\n\n[servers.web]\n"
            'app = "tests.integration.programs.asgi_app:app"\n'
            f"ports = [{port}]\n"
        )
        proc = ServerProcess.twistd(
            "-n", "--pidfile=", "graceful", "--config", str(config),
            env=child_environment(GRACEFUL_TEST_LIFESPAN_RETURNS="1"),
        ).start()
        self.addCleanup(proc.stop)
        pid = wait_until(lambda: pid_of(port, "/"), what="the app to serve")
        os.kill(pid, signal.SIGTERM)
        self.assertEqual(proc.wait_exit(8), 0, proc.log())
        self.assertNotIn("lifespan shutdown", proc.log())
