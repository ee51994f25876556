"""
Integration test: requests the HTTP/1.1 channel refuses, on a real process,
as h11 and nginx do: an HTTP/1.1 request without Host is a 400, a header
line or header block too large a 431; each closes its connection, and the
server goes on serving.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT, ServerProcess, free_ports, pid_of, tls_context, wait_until

PROGRAM = ROOT / "tests" / "integration" / "programs" / "reuse.py"


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """
    Send C{request}, then read until the server closes, or for the socket's
    timeout: everything it answered.
    """
    with sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # closed while we sent: what it answered is still to read
        answer = b""
        for _ in range(1000):
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError, TimeoutError):
                break  # a server that keeps the connection fails the test
            if not data:
                break
            answer += data
        return answer


class RequestValidationTests(SynchronousTestCase):
    def test_refused_requests(self) -> None:
        http_port, https_port = free_ports(2)
        folder = Path(tempfile.mkdtemp(prefix="graceful-validation-"))
        self.addCleanup(shutil.rmtree, folder, True)
        proc = ServerProcess.python(PROGRAM, str(http_port), str(https_port), str(folder / "s"))
        proc.start()
        self.addCleanup(proc.stop)
        pid = wait_until(lambda: pid_of(http_port), what="the server to answer")

        def tcp() -> socket.socket:
            return socket.create_connection(("127.0.0.1", http_port), timeout=3)

        def tls() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", https_port), timeout=3)
            return tls_context().wrap_socket(sock, server_hostname="localhost")

        connects: dict[str, Callable[[], socket.socket]] = {"tcp": tcp, "tls": tls}
        big = b"X-Big: " + b"a" * 2**20 + b"\r\n"
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
        cases = {
            "no host": (b"GET /web/plain HTTP/1.1\r\n\r\n", 400),
            "two hosts": (b"GET /asgi/plain HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            "no host, a body": (
                b"POST /wsgi/plain HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                400,
            ),
            "1 MiB header line": (b"GET /web/plain HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n", 431),
            "20 KB of headers": (b"GET /asgi/plain HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n", 431),
        }
        for transport, connect in connects.items():
            for name, (request, status) in cases.items():
                answer = exchange(connect(), request)
                head = answer.split(b"\r\n\r\n")[0].split(b"\r\n")
                self.assertEqual(
                    (head[0].split(b" ")[1], b"Connection: close" in head),
                    (b"%d" % status, True),
                    f"{transport}, {name}: {answer[:200]!r}",
                )
            # HTTP/1.0 needs no Host; it is served, on every path.
            for path in (b"/web/plain", b"/wsgi/plain", b"/asgi/plain"):
                answer = exchange(connect(), b"GET %s HTTP/1.0\r\n\r\n" % path)
                self.assertEqual(answer.split(b" ")[1], b"200", (transport, path, answer))
                self.assertEqual(answer.split(b"\r\n\r\n")[1], b"%d\n" % pid)

        # curl, told to send no Host.
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host:",
             f"http://127.0.0.1:{http_port}/web/plain"],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(out.stdout, "400")
        # None of it cost the server anything.
        self.assertEqual(pid_of(http_port), pid)
