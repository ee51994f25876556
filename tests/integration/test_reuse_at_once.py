"""
Integration test: clients that send their next request the moment a
response ends (as browsers, connection pools and proxies with upstream
keep-alive do), across restarts, on a real process.

A response already on the wire when the drain starts went out without
C{Connection: close}; its client reuses the connection at once, and that
request must be answered (with C{Connection: close}), not lost to a close.
Every way graceful serves an app (twisted.web, WSGI, ASGI), plain and
streamed, over TCP, TLS and a UNIX socket.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT, ServerProcess, free_ports, pid_of, tls_context, wait_until

PROGRAM = ROOT / "tests" / "integration" / "programs" / "reuse.py"
ROUTES = ("/web/plain", "/web/stream", "/wsgi/plain", "/wsgi/stream", "/asgi/plain", "/asgi/stream")
#: Restarts per run: each one drains every client's connection.
RESTARTS = 3
#: Bounds on the whole run, whatever happens.
MAX_SECONDS = 60.0
MAX_REQUESTS_PER_CLIENT = 20_000


def read_response(reader: IO[bytes]) -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP/1.1 response (with a length or chunked) from C{reader}.

    @raise EOFError: the connection ended before the response did.
    """

    def line() -> bytes:
        data = reader.readline(65536)
        if not data.endswith(b"\r\n"):
            raise EOFError(f"connection ended after {data!r}")
        return data[:-2]

    status = int(line().split()[1])
    headers: dict[str, str] = {}
    while header := line():
        name, _, value = header.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()

    def exactly(size: int) -> bytes:
        data = reader.read(size)
        if len(data) != size:
            raise EOFError("connection ended within a body")
        return data

    if "content-length" in headers:
        return status, headers, exactly(int(headers["content-length"]))
    body = b""
    while size := int(line().split(b";")[0], 16):
        body += exactly(size)
        line()
    line()
    return status, headers, body


class Client(threading.Thread):
    """
    One keep-alive client of one route: sends its next request as soon as
    the last response ends, on the same connection unless that response
    said C{Connection: close}.  Records what each connection answered.
    """

    def __init__(self, connect: Callable[[], socket.socket], path: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.connect, self.path, self.stop = connect, path, stop
        self.request = f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()
        self.answered = 0
        self.lost: list[str] = []
        #: Per connection, once it ended: the pid of its last answer and
        #: that answer's Connection header.
        self.ended: list[tuple[int, str | None]] = []
        self.last_pid = 0

    def run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        sent = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                sock = self.connect()
            except OSError as e:  # refused: a failure of its own
                self.lost.append(f"connecting: {type(e).__name__}: {e}")
                time.sleep(0.05)
                continue
            with sock, sock.makefile("rb") as reader:
                last: tuple[int, str | None] | None = None
                while not self.stop.is_set() and sent < MAX_REQUESTS_PER_CLIENT:
                    sent += 1
                    try:
                        sock.sendall(self.request)
                        status, headers, body = read_response(reader)
                    except (OSError, EOFError) as e:
                        self.lost.append(f"{type(e).__name__}: {e}")
                        break
                    if status != 200:
                        self.lost.append(f"status {status}: {body[:100]!r}")
                        break
                    self.answered += 1
                    self.last_pid = int(body.split()[0])
                    last = (self.last_pid, headers.get("connection"))
                    if last[1] == "close":
                        break
                if last is not None and not self.stop.is_set():
                    self.ended.append(last)
            if sent >= MAX_REQUESTS_PER_CLIENT:
                return


class ReuseAtOnceTests(SynchronousTestCase):
    maxDiff = None

    def test_no_request_lost_when_reused_the_moment_a_response_ends(self) -> None:
        http_port, https_port = free_ports(2)
        folder = Path(tempfile.mkdtemp(prefix="graceful-reuse-"))
        self.addCleanup(shutil.rmtree, folder, True)
        unix_path = folder / "app.sock"
        proc = ServerProcess.python(PROGRAM, str(http_port), str(https_port), str(unix_path))
        proc.start()
        self.addCleanup(proc.stop)
        first = wait_until(lambda: pid_of(http_port), what="the server to answer")
        proc.remember(first)
        wait_until(unix_path.exists, what="the UNIX socket")

        def tcp() -> socket.socket:
            return socket.create_connection(("127.0.0.1", http_port), timeout=10)

        def tls() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", https_port), timeout=10)
            context: ssl.SSLContext = tls_context()
            return context.wrap_socket(sock, server_hostname="localhost")

        def unix() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(str(unix_path))
            return sock

        stop = threading.Event()
        clients = {
            (transport, path): Client(connect, path, stop)
            for transport, connect in (("tcp", tcp), ("tls", tls), ("unix", unix))
            for path in ROUTES
        }
        for client in clients.values():
            client.start()

        def stop_clients() -> None:
            stop.set()
            for client in clients.values():
                client.join(15)

        self.addCleanup(stop_clients)
        pids = [first]
        for _ in range(RESTARTS):
            old = pids[-1]
            # Every client is busy on the old process when it drains.
            wait_until(
                lambda: all(c.last_pid == old for c in clients.values()),
                what=f"every client to be answered by {old}",
            )
            proc.signal(old, signal.SIGUSR1)
            new = wait_until(
                lambda: (lambda p: p if p != old else None)(pid_of(http_port)),
                what=f"a new process to replace {old}",
            )
            pids.append(proc.remember(new))
            proc.wait_gone(old)
        wait_until(
            lambda: all(c.last_pid == pids[-1] for c in clients.values()),
            what=f"every client to be answered by {pids[-1]}",
        )
        stop_clients()

        lost = {
            f"{transport}{path}": f"{len(c.lost)} lost, first: {c.lost[0]}"
            for (transport, path), c in clients.items()
            if c.lost
        }
        self.assertEqual(lost, {})
        for key, client in clients.items():
            # Each restart ended the client's connection to the old process
            # with an answer that said so, after which it went on.
            drained = [pid for pid, _ in client.ended]
            self.assertEqual(set(drained), set(pids[:-1]), key)
            self.assertEqual(client.ended, [(pid, "close") for pid in drained], key)
            self.assertGreater(client.answered, RESTARTS, key)
