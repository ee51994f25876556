"""
HTTP/2 beside HTTP/1.1 on the same graceful HTTPS port, and HTTP/2 across
restarts.

    python -m benchmarks.h2 [--seconds 5] [--connections 4] [--streams 10] [--restarts 3]

Starts benchmarks/apps/graceful_hello.py with TLS on a free port (the
working tree first on PYTHONPATH) and measures, one after the other:

- C{h2load h2}: h2load over HTTP/2, C{--connections} connections with
  C{--streams} concurrent streams each;
- C{h2load h1}: the same tool over HTTP/1.1 (C{--h1}), one request at a time
  per connection;
- C{wrk h1}: wrk over HTTPS/1.1 with the same number of connections;
- C{restarts}: short h2load rounds (every request of a round sent at once:
  h2load does not reconnect after a GOAWAY, so a longer round counts the
  requests it had not sent yet as failed) back to back while C{--restarts}
  SIGUSR1 restarts happen; the rounds' failed and errored streams.

Then the same h2load runs against hypercorn (a pure-Python server that
serves h2) with a bare ASGI hello, in the same run, and h2load rounds across
its stop-and-start restarts (it has no other kind).

Prints Markdown tables and the JSON of every number.  Needs h2load
(nghttp2-client), wrk and the http2 extra; hypercorn for the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from harness.probes import probe_pid
from harness.processes import CERT, KEY, Process, child_environment, free_port, wait_until

H2LOAD_RPS = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
H2LOAD_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def pid_of(port: int) -> int | None:
    "The pid the HTTPS port answers /pid with, or None."
    return probe_pid(port, tls=True, timeout=2)


def h2load(args: list[str], timeout: float) -> dict:
    out = subprocess.run(
        [shutil.which("h2load") or "h2load", *args], capture_output=True, text=True,
        timeout=timeout,
    ).stdout
    rps = H2LOAD_RPS.search(out)
    counts = H2LOAD_REQUESTS.search(out)
    if counts is None:
        raise RuntimeError(f"h2load printed no summary:\n{out}")
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    result: dict = dict(zip(names, map(int, counts.groups())))
    result["rps"] = float(rps.group(1)) if rps else 0.0
    result["protocol"] = "h2" if "Application protocol: h2" in out else "http/1.1"
    return result


def rounds_across_restarts(
    url: str, connections: int, streams: int, restarts: int, restart: Callable[[], None]
) -> dict:
    """
    Short h2load rounds back to back while C{restart} runs C{restarts} times,
    a second apart; the rounds' totals.  A round that finds nothing
    listening counts every one of its streams as failed.
    """
    rounds: list[dict] = []
    done = threading.Event()
    n = connections * streams

    def run_rounds() -> None:
        while not done.is_set() and len(rounds) < 1000:
            try:
                rounds.append(
                    h2load(["-n", str(n), "-c", str(connections), "-m", str(streams), url], 30)
                )
            except RuntimeError:
                rounds.append({"total": n, "succeeded": 0, "failed": n, "errored": 0,
                               "protocol": "none"})

    thread = threading.Thread(target=run_rounds)
    thread.start()
    try:
        for _ in range(restarts):
            time.sleep(1.0)
            restart()
        time.sleep(1.0)
    finally:
        done.set()
        thread.join(60)
    return {
        "restarts": restarts,
        "rounds": len(rounds),
        "streams": sum(r["total"] for r in rounds),
        "succeeded": sum(r["succeeded"] for r in rounds),
        "failed": sum(r["failed"] for r in rounds),
        "errored": sum(r["errored"] for r in rounds),
        "protocol": "h2" if all(r["protocol"] == "h2" for r in rounds) else "mixed",
    }


def hypercorn_peer(options: argparse.Namespace, env: dict[str, str]) -> dict | None:
    """
    The same h2load runs against hypercorn serving h2 over TLS (a bare ASGI
    hello), and h2load rounds across stop-and-start restarts, its only kind.
    None without hypercorn.
    """
    try:
        import hypercorn  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    command = [
        sys.executable, "-m", "hypercorn", "benchmarks.apps.asgi_hello:app",
        "--bind", f"127.0.0.1:{port}", "--certfile", str(CERT),
        "--keyfile", str(KEY), "--log-level", "warning",
    ]

    def start() -> Process:
        proc = Process(command, env=env, log=Path(os.devnull), name="hypercorn").start()
        wait_until(lambda: pid_of(port), 20, "hypercorn")
        return proc

    def stop(proc: Process) -> None:
        proc.stop(grace=10.0)

    server = start()
    url = f"https://127.0.0.1:{port}/"
    c, m, d = options.connections, options.streams, f"{max(1, round(options.seconds))}"
    try:
        result: dict = {
            "h2load h2": h2load(["-D", d, "-c", str(c), "-m", str(m), url], options.seconds + 30),
            "h2load h1": h2load(["--h1", "-D", d, "-c", str(c), url], options.seconds + 30),
        }

        def restart() -> None:
            nonlocal server
            stop(server)
            server = start()

        result["restarts"] = rounds_across_restarts(url, c, m, options.restarts, restart)
        return result
    finally:
        stop(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--restarts", type=int, default=3)
    options = parser.parse_args()
    for tool in ("h2load", "wrk"):
        if shutil.which(tool) is None:
            print(f"benchmarks.h2: {tool} is not installed", file=sys.stderr)
            return 1
    port = free_port()
    env = child_environment()
    server = Process(
        [sys.executable, "-m", "benchmarks.apps.graceful_hello", str(port), "--tls"],
        env=env, log=Path(os.devnull), name="graceful",
    ).start()
    try:
        server.remember(wait_until(lambda: pid_of(port), 20, "the server"))
        url = f"https://127.0.0.1:{port}/"
        c, m, d = options.connections, options.streams, f"{max(1, round(options.seconds))}"
        results: dict = {}
        results["h2load h2"] = h2load(["-D", d, "-c", str(c), "-m", str(m), url], options.seconds + 30)
        results["h2load h1"] = h2load(["--h1", "-D", d, "-c", str(c), url], options.seconds + 30)
        wrk = subprocess.run(
            [shutil.which("wrk") or "wrk", "-t1", f"-c{c}", f"-d{d}s", url],
            capture_output=True, text=True, timeout=options.seconds + 30,
        ).stdout
        match = WRK_RPS.search(wrk)
        results["wrk h1"] = {"rps": float(match.group(1)) if match else 0.0, "protocol": "http/1.1"}

        def restart() -> None:
            old = pid_of(port)
            os.kill(old, signal.SIGUSR1)  # type: ignore[arg-type]
            new = wait_until(lambda: (lambda p: p if p and p != old else None)(pid_of(port)),
                             20, "the new process")
            server.remember(new)

        results["restarts"] = rounds_across_restarts(url, c, m, options.restarts, restart)
    finally:
        # The whole session: the first process and every one it restarted.
        server.stop(grace=10.0)

    print(f"| load ({c} connections) | protocol | req/s |")
    print("|---|---|---|")
    for name in ("h2load h2", "h2load h1", "wrk h1"):
        extra = f", {m} streams each" if name == "h2load h2" else ""
        print(f"| {name}{extra} | {results[name]['protocol']} | {results[name]['rps']:.0f} |")
    r = results["restarts"]
    print(
        f"\n{r['restarts']} restarts under h2load rounds: {r['rounds']} rounds, "
        f"{r['streams']} streams, {r['succeeded']} succeeded, {r['failed']} failed, "
        f"{r['errored']} errored ({r['protocol']})\n"
    )
    peer = hypercorn_peer(options, env)
    if peer is not None:
        print("| hypercorn, same runs | protocol | req/s |")
        print("|---|---|---|")
        for name in ("h2load h2", "h2load h1"):
            print(f"| {name} | {peer[name]['protocol']} | {peer[name]['rps']:.0f} |")
        p = peer["restarts"]
        print(
            f"\nhypercorn, {p['restarts']} stop-and-start restarts under h2load rounds: "
            f"{p['rounds']} rounds, {p['streams']} streams, {p['failed']} failed, "
            f"{p['errored']} errored\n"
        )
        results["hypercorn"] = peer
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
