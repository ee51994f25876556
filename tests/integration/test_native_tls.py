"""
The native HTTP/1.1 channel on TLS ports, in real processes: an ASGI
server's HTTPS port answers HTTP/1.1 with the native channel (which names no
C{Server}, where twisted.web says C{TwistedWeb}) and h2 by ALPN with
Twisted's HTTP/2 connection; the admin and health pages and a WebSocket are
handed to twisted.web on the same TLS connection; across a restart an idle
keep-alive connection gets one more request, answered with C{Connection:
close}, and h2load's rounds lose no stream.  FastAPI and Flask see C{https}.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graceful.http.h2 import H2_ENABLED
from tests.integration.test_h2_restart import h2load_summary
from tests.integration.test_run_command import PROGRAMS, graceful
from tests.support import (
    CERT,
    KEY,
    ServerProcess,
    child_environment,
    connection,
    free_port,
    free_ports,
    get,
    pid_of,
    tls_context,
    wait_until,
)

APP = "tests.integration.programs.asgi_app:app"
H2LOAD = shutil.which("h2load")
CURL = shutil.which("curl")


def curl(port: int, path: str, *options: str) -> tuple[str, str]:
    """
    C{curl} over TLS: the response's head and body.
    """
    assert CURL is not None
    out = subprocess.run(
        [CURL, "-s", "-k", "--max-time", "10", "-D", "-", *options,
         f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=20,
    )
    # (Text mode reads curl's CRLFs as newlines.)
    head, _, body = out.stdout.partition("\n\n")
    return head.lower(), body


class NativeTLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        if CURL is None:
            self.skipTest("curl is not installed")
        directory = tempfile.TemporaryDirectory(prefix="graceful-native-tls-")
        self.addCleanup(directory.cleanup)
        self.folder = Path(directory.name)
        self.port, self.twisted = free_ports(2)
        config = self.folder / "graceful.toml"
        tls = f'cert = "{CERT}"\nkey = "{KEY}"\n'
        config.write_text(
            # A keep-alive timeout longer than a restart under load takes
            # (8 s seen), so that the idle connection is still there for it.
            "[graceful]\nready_timeout = 30\ndrain_timeout = 15\ntimeout_keep_alive = 60\n\n"
            f'[servers.native]\napp = "{APP}"\nhttps_ports = [{self.port}]\n{tls}'
            'admin = "/debug/admin"\nadmin_token = "t"\nhealth = "/healthz"\n\n'
            f'[servers.tw]\napp = "{APP}"\nhttps_ports = [{self.twisted}]\n{tls}'
            'http_impl = "twisted"\n'
        )
        self.proc = ServerProcess.twistd(
            "-n", "--pidfile=", "graceful", "--config", str(config), env=child_environment()
        ).start()
        self.addCleanup(self.proc.stop)
        wait_until(lambda: pid_of(self.port, "/", tls=True), what="the HTTPS port to serve")

    def test_http11_native_h2_twisted(self) -> None:
        """
        HTTP/1.1 over TLS is the native channel's, h2 Twisted's HTTP/2
        connection; the admin and health pages follow an app request on one
        TLS connection; a WebSocket opens over TLS.
        """
        head, body = curl(self.port, "/", "--http1.1")
        self.assertTrue(head.startswith("http/1.1 200"), head)
        self.assertNotIn("\nserver:", head)  # the native channel names itself nowhere
        self.assertIn("\ndate:", head)
        twisted_head, _ = curl(self.twisted, "/", "--http1.1")
        self.assertIn("\nserver: twistedweb", twisted_head)
        if H2_ENABLED:
            head, h2_body = curl(self.port, "/", "--http2")
            self.assertTrue(head.startswith("http/2 200"), head)
            self.assertEqual(h2_body.split()[0], body.split()[0])
        # One connection: the app, then pages twisted.web serves.
        conn = connection(self.port, tls=True)
        try:
            answers = []
            for path, headers in (("/", {}), ("/debug/admin/status", {"Authorization": "Bearer t"}),
                                  ("/healthz", {})):
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                answers.append((path, response.status, response.read()))
        finally:
            conn.close()
        self.assertEqual([status for _, status, _ in answers], [200, 200, 200], answers)
        self.assertIn(b'"in_flight"', answers[1][2])
        self.assertEqual(answers[2][2], b"ok\n")

        from websockets.sync.client import connect

        with connect(f"wss://127.0.0.1:{self.port}/ws", ssl=tls_context(), open_timeout=5) as ws:
            self.assertEqual(int(ws.recv(timeout=5)), int(body.split()[0]))
            ws.send("over tls")
            self.assertEqual(ws.recv(timeout=5), "over tls")

    def test_restart_idle_grace_and_h2load(self) -> None:
        """
        Across a restart a keep-alive TLS connection idle at the hand-over
        gets the grace for one more request, answered by the old process
        with C{Connection: close}; a WebSocket over TLS is closed with 1012;
        h2load's rounds on the same port lose no stream.
        """
        old = self.proc.remember(pid_of(self.port, "/", tls=True))
        rounds: list[tuple[dict[str, int], str]] = []
        stop = threading.Event()

        def run() -> None:
            assert H2LOAD is not None
            deadline = time.monotonic() + 40
            while not stop.is_set() and time.monotonic() < deadline and len(rounds) < 200:
                out = subprocess.run(
                    [H2LOAD, "-n", "40", "-c", "4", "-m", "10", f"https://127.0.0.1:{self.port}/"],
                    capture_output=True, text=True, timeout=20,
                ).stdout
                rounds.append((h2load_summary(out), out))

        thread = threading.Thread(target=run) if H2LOAD and H2_ENABLED else None
        if thread is not None:
            thread.start()
        idle = connection(self.port, tls=True, timeout=15)
        self.addCleanup(idle.close)
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        stack = ExitStack()
        self.addCleanup(stack.close)
        ws = stack.enter_context(
            connect(f"wss://127.0.0.1:{self.port}/ws", ssl=tls_context(), open_timeout=5)
        )
        self.assertEqual(int(ws.recv(timeout=5)), old)
        try:
            if thread is not None:
                wait_until(lambda: len(rounds) >= 2, what="h2load's first rounds")
            idle.request("GET", "/")
            first = idle.getresponse()
            self.assertEqual(int(first.read().split()[0]), old)
            self.proc.signal(old, signal.SIGUSR1)
            handing_over = re.compile(rf"{old}: process (\d+) .* handing over")
            new = int(wait_until(lambda: handing_over.search(self.proc.log()),
                                 what="the hand-over").group(1))
            self.proc.remember(new)
            idle.request("GET", "/")
            last = idle.getresponse()
            last_body = last.read()
            # The WebSocket, tracked through the hand-over, is closed as
            # at any restart.
            with self.assertRaises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            self.proc.wait_gone(old)
            time.sleep(0.5)  # h2load rounds on the new process too
        finally:
            stop.set()
            if thread is not None:
                thread.join(30)
        self.assertEqual(closed.exception.rcvd.code, 1012)  # type: ignore[union-attr]
        self.assertEqual((last.status, last.getheader("connection")), (200, "close"))
        self.assertIsNone(last.getheader("server"))  # the native channel
        self.assertEqual(int(last_body.split()[0]), old)
        self.assertEqual(pid_of(self.port, "/", tls=True), new)
        if thread is not None:
            bad = [out for summary, out in rounds if summary["succeeded"] != 40]
            self.assertEqual(bad, [], "every stream of every round succeeds")
            self.assertGreater(len(rounds), 2)
            for _, out in rounds:
                self.assertIn("Application protocol: h2", out)


class AppSchemeTests(SynchronousTestCase):
    """
    FastAPI and Flask on the native channel of an HTTPS port see https.
    """

    def who(self, app: str) -> dict[str, str]:
        port = free_port()
        proc = ServerProcess(graceful(
            "run", f"{PROGRAMS}.{app}", "--port", str(port), "--host", "127.0.0.1",
            "--ssl-certfile", str(CERT), "--ssl-keyfile", str(KEY),
        ))
        proc.start()
        self.addCleanup(proc.kill)
        wait_until(lambda: get(port, "/pid", tls=True)[0] == 200, what="HTTPS to serve")
        status, headers, body = get(port, "/who", tls=True)
        self.assertEqual(status, 200, body)
        self.assertNotIn("server", headers)  # the native channel
        return json.loads(body)  # type: ignore[no-any-return]

    def test_fastapi(self) -> None:
        self.assertEqual(self.who("run_fastapi:app")["scheme"], "https")

    def test_flask(self) -> None:
        self.assertEqual(self.who("run_flask:app")["scheme"], "https")
