"""
The latency-sampling client: a few paced clients that record every request
they make, for the latency-over-time view wrk cannot give.

    python -m benchmarks.sampler --ports 8100[,8101...] --mix keepalive=2,close=2 \\
        --duration 10 --out samples.csv [--path /pid] [--interval 0.01]

Kinds: C{keepalive} (one HTTP/1.1 connection, reused), C{close} (a new
connection and C{Connection: close} each time), C{tls} (HTTPS, kept alive)
and C{tlsclose}.  With several ports a C{close} client moves to the next port
on every request, so every port is exercised.

It runs for C{--duration} seconds, or until SIGTERM or SIGINT, then writes
the CSV.  Each client sends a request every C{interval} seconds (or right after the
last one answered, when that took longer: no catching up in bursts).  Every
request is a CSV row: start (time.monotonic(), which is the same clock in
every process on Linux), latency in seconds, outcome and the pid the server
answered with.  Outcomes:

- C{ok}: a 2xx answer, read in full;
- C{connect}: the connection (or TLS handshake) failed;
- C{write}: sending the request failed;
- C{read}: the connection failed or closed before the whole answer came;
- C{timeout}: no answer within C{--timeout};
- C{status}: an answer that is not 2xx.

A failed keep-alive request is not retried: like wrk, the client counts it
and opens a new connection for the next one.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

KINDS = ("keepalive", "close", "tls", "tlsclose")
#: Set by SIGTERM or SIGINT: finish the requests under way, write the CSV.
STOP = threading.Event()
CERT = Path(__file__).resolve().parent.parent / "certs" / "server.crt"


def parse_mix(text: str) -> list[str]:
    """
    C{"keepalive=2,close=1"} -> one kind per client.
    """
    clients = []
    for part in text.split(","):
        kind, _, count = part.strip().partition("=")
        if kind not in KINDS:
            raise SystemExit(f"sampler: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        clients += [kind] * int(count or 1)
    return clients


class Client(threading.Thread):
    def __init__(
        self,
        index: int,
        kind: str,
        ports: list[int],
        path: str,
        interval: float,
        timeout: float,
        until: float,
        max_requests: int,
        context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.kind = kind
        self.ports = ports
        self.port_index = index % len(ports)
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.until = until
        self.max_requests = max_requests
        self.context = context
        self.tls = kind.startswith("tls")
        self.close = kind.endswith("close")
        self.rows: list[tuple[float, float, str, int, int]] = []
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self, port: int) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)

    def run(self) -> None:
        next_at = time.monotonic()
        while len(self.rows) < self.max_requests and not STOP.is_set():
            now = time.monotonic()
            if now >= self.until:
                break
            if next_at > now:
                STOP.wait(min(next_at - now, self.until - now))
                continue
            self.rows.append(self.one())
            next_at = max(next_at + self.interval, time.monotonic())
        if self.conn is not None:
            self.conn.close()

    def one(self) -> tuple[float, float, str, int, int]:
        port = self.ports[self.port_index]
        if self.close and len(self.ports) > 1:
            self.port_index = (self.port_index + 1) % len(self.ports)
        start = time.monotonic()
        phase = "connect"
        pid = 0
        try:
            if self.conn is None or self.conn.sock is None or self.close:
                if self.conn is not None:
                    self.conn.close()
                self.conn = self._connection(port)
                self.conn.connect()
            phase = "write"
            headers = {"Connection": "close"} if self.close else {}
            self.conn.request("GET", self.path, headers=headers)
            phase = "read"
            response = self.conn.getresponse()
            body = response.read()
            if self.close:
                self.conn.close()
            if not 200 <= response.status < 300:
                outcome = "status"
            else:
                outcome = "ok"
                try:
                    pid = int(body.split()[0])
                except (ValueError, IndexError):
                    pass
        except (socket.timeout, TimeoutError):
            outcome = "timeout"
        except ConnectionRefusedError:
            outcome = "connect"
        except (OSError, http.client.HTTPException):
            outcome = phase
        if outcome != "ok" and self.conn is not None:
            self.conn.close()
            self.conn = None
        return (start, time.monotonic() - start, outcome, pid, port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampler")
    parser.add_argument("--ports", required=True, help="comma-separated loopback ports")
    parser.add_argument("--mix", default="keepalive=2,close=2")
    parser.add_argument("--path", default="/pid")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=100_000, help="per client")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: STOP.set())
    ports = [int(p) for p in args.ports.split(",")]
    kinds = parse_mix(args.mix)
    context = None
    if any(k.startswith("tls") for k in kinds):
        context = ssl.create_default_context(cafile=str(CERT))
    until = time.monotonic() + min(args.duration, 600.0)
    clients = [
        Client(i, kind, ports, args.path, args.interval, args.timeout, until,
               args.max_requests, context)
        for i, kind in enumerate(kinds)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + min(args.duration, 600.0) + args.timeout + 10
    for client in clients:
        # Short joins, so the signal handler runs as soon as a signal comes.
        while client.is_alive() and time.monotonic() < deadline:
            client.join(0.1)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "latency", "outcome", "pid", "port", "client", "kind"])
        for client in clients:
            for start, latency, outcome, pid, port in list(client.rows):
                writer.writerow(
                    [f"{start:.6f}", f"{latency:.6f}", outcome, pid, port, client.index, client.kind]
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
