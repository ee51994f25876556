"""
What happens to keep-alive connections reused across restarts: errors per
client kind, for each way of closing idle connections at a hand-over.

    PYTHONPATH=. python -m benchmarks.keepalive_reuse --restarts 10

For each strategy, a graceful server (benchmarks/apps/graceful_keepalive.py)
is started on a free loopback port and restarted with SIGUSR1 every
C{--interval} seconds, while client threads each keep one
C{http.client.HTTPConnection} and POST (not idempotent: a client may not
retry it) with random pauses between requests.  Two kinds of client:

- C{plain}: reuses its connection as it is, as C{http.client} does;
- C{checking}: before reusing, looks whether the socket is readable with a
  zero timeout (a FIN or anything unexpected) and reconnects if so, as
  urllib3 (hence requests), and the event-loop clients that notice a close
  as it comes, do.

Strategies (the grace an idle connection gets at a hand-over to send its
next request, answered with C{Connection: close}; closed with a FIN after):

- C{1s}: the former default;
- C{0}: closed at once, at the hand-over;
- C{5s}: a longer grace;
- C{default}: graceful's default now: until the next request, up to
  C{HANDOVER_IDLE_GRACE} (shortly before C{drain_timeout} at most).

Errors are counted by exception class (C{BrokenPipeError},
C{ConnectionResetError}, C{RemoteDisconnected}, ...); a non-200 answer is
an error too.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import random
import select
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import processes as _procs
from harness.probes import probe_pid

ROOT = Path(__file__).resolve().parent.parent

#: name -> the value of GRACEFUL_BENCH_IDLE_GRACE (None: graceful's default).
STRATEGIES: dict[str, str | None] = {"1s": "1", "0": "0", "5s": "5", "default": None}
KINDS = ("plain", "checking")
BODY = b"x" * 64


@dataclass
class Tally:
    requests: int = 0
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, error: str | None) -> None:
        with self.lock:
            self.requests += 1
            if error is None:
                self.ok += 1
            else:
                self.errors[error] += 1


def dropped(sock: socket.socket) -> bool:
    """
    urllib3's check before reusing a pooled connection: readable now means
    the server closed it (or sent what it should not have).
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def client(
    port: int,
    kind: str,
    pauses: tuple[float, float],
    tally: Tally,
    stop: threading.Event,
    rng: random.Random,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while not stop.wait(rng.uniform(*pauses)):
            if kind == "checking" and conn.sock is not None and dropped(conn.sock):
                conn.close()
            try:
                conn.request("POST", "/pid", body=BODY)
                response = conn.getresponse()
                response.read()
                tally.add(None if response.status == 200 else f"HTTP {response.status}")
            except (OSError, http.client.HTTPException) as e:
                tally.add(type(e).__name__)
                conn.close()
    finally:
        conn.close()


def restart(proc: _procs.Process, port: int, limit: float = 30.0) -> float:
    """
    SIGUSR1 to the serving process; seconds until a fresh connection is
    answered by another pid.
    """
    old = probe_pid(port)
    if old is None:
        raise RuntimeError(f"port {port} does not answer:\n{proc.log()[-2000:]}")
    start = time.monotonic()
    os.kill(old, signal.SIGUSR1)
    while time.monotonic() - start < limit:
        pid = probe_pid(port)
        if pid is not None and pid != old:
            return time.monotonic() - start
        time.sleep(0.02)
    raise RuntimeError(f"no new process within {limit:g}s:\n{proc.log()[-2000:]}")


def run_strategy(
    name: str, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, Tally], list[float], int]:
    [port] = _procs.free_ports(1)
    extra = {} if STRATEGIES[name] is None else {"GRACEFUL_BENCH_IDLE_GRACE": str(STRATEGIES[name])}
    proc = _procs.Process(
        [sys.executable, "-m", "benchmarks.apps.graceful_keepalive", str(port)],
        log=workdir / f"server-{name}.log",
        name=f"graceful-{name}",
        cwd=ROOT,
        env=_procs.child_environment(extra),
    ).start()
    tallies = {kind: Tally() for kind in KINDS}
    stop = threading.Event()
    threads = []
    handoffs: list[float] = []
    # What keeping idle connections costs: old generations still alive.
    most = 0
    try:
        deadline = time.monotonic() + 30
        while probe_pid(port) is None:
            if time.monotonic() > deadline or not proc.running():
                raise RuntimeError(f"server did not start:\n{proc.log()[-2000:]}")
            time.sleep(0.05)
        for kind in KINDS:
            for i in range(args.clients):
                rng = random.Random(f"{args.seed}-{name}-{kind}-{i}")
                t = threading.Thread(
                    target=client,
                    args=(port, kind, (args.pause_min, args.pause_max), tallies[kind], stop, rng),
                    daemon=True,
                )
                t.start()
                threads.append(t)
        for _ in range(args.restarts):
            time.sleep(max(0.0, args.interval - (handoffs[-1] if handoffs else 0.0)))
            handoffs.append(restart(proc, port))
            most = max(most, len(proc.members()))
        # Let every client's next request after the last hand-over happen.
        time.sleep(args.pause_max + 1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        proc.stop(grace=15)
    return tallies, handoffs, most


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between restarts")
    parser.add_argument("--clients", type=int, default=8, help="threads of each client kind")
    parser.add_argument("--pause-min", type=float, default=0.2)
    parser.add_argument("--pause-max", type=float, default=2.0)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seed", default="keepalive")
    args = parser.parse_args(argv)
    names = [n for n in args.strategies.split(",") if n]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        print(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}", file=sys.stderr)
        return 1
    _procs.install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="keepalive-reuse-"))
    print(
        f"{args.restarts} restarts every {args.interval:g}s, {args.clients} clients of each kind, "
        f"POST with pauses {args.pause_min:g}-{args.pause_max:g}s; logs in {workdir}"
    )
    print()
    print(
        "| strategy (idle grace at hand-over) | client | requests | errors | by kind "
        "| processes alive at a hand-over, most |"
    )
    print("|---|---|---|---|---|---|")
    for name in names:
        tallies, handoffs, most = run_strategy(name, args, workdir)
        for kind in KINDS:
            t = tallies[kind]
            kinds = ", ".join(f"{k} {n}" for k, n in t.errors.most_common()) or "-"
            print(
                f"| {name} | {kind} | {t.requests} | {sum(t.errors.values())} | {kinds} "
                f"| {most} |"
            )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
