"""
The same FastAPI hello world under graceful (workers = 1) and under
uvicorn, hypercorn and daphne, one process each, side by side in one run.

    PYTHONPATH=. python -m benchmarks.asgi [--seconds 5] [--rounds 2] [--restarts 5]

For each server: wrk keep-alive and wrk with C{Connection: close} (requests/s
and p99; the best of C{--rounds} interleaved rounds), then wrk keep-alive for
the length of C{--restarts} restarts done the way the server can: SIGUSR1
for graceful, stop and start again for the others, which have no restart
that keeps the socket; the failed requests (wrk's connect, read, write,
timeout errors and non-2xx answers).  Pure-Python servers only: uvicorn runs
h11 on asyncio (uvloop and httptools are not installed by the benchmark).
Needs wrk, fastapi, uvicorn, hypercorn and daphne.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from harness import processes as _procs
from harness.probes import probe_pid, wait_answering

from ._load import Wrk

ROOT = Path(__file__).resolve().parent.parent
APP = "benchmarks.apps.fastapi_hello:app"

#: How each server is started on a port.
COMMANDS: dict[str, Callable[[int], list[str]]] = {
    "graceful": lambda port: [sys.executable, "-m", "benchmarks.apps.graceful_fastapi", str(port)],
    "uvicorn": lambda port: [
        sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
        "--http", "h11", "--loop", "asyncio", "--log-level", "warning", "--no-access-log",
    ],
    "hypercorn": lambda port: [
        sys.executable, "-m", "hypercorn", APP, "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
    ],
    "daphne": lambda port: [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", APP,
    ],
}


class Server:
    """
    One server on its port; restarted the way it can be.
    """

    def __init__(self, name: str, port: int, workdir: Path) -> None:
        self.name, self.port, self.workdir = name, port, workdir
        self.starts = 0
        self.proc = self._start()

    def _start(self) -> _procs.Process:
        self.starts += 1
        proc = _procs.Process(
            COMMANDS[self.name](self.port),
            log=self.workdir / f"{self.name}-{self.starts}.log",
            name=self.name, cwd=ROOT,
        ).start()
        wait_answering(self.port, False, 30, proc)
        return proc

    def restart(self) -> None:
        if self.name == "graceful":
            old = probe_pid(self.port)
            assert old is not None
            os.kill(old, signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pid = probe_pid(self.port)
                if pid is not None and pid != old:
                    return
                time.sleep(0.02)
            raise RuntimeError("graceful: no new process")
        self.proc.stop(grace=3.0)
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.stop(grace=3.0)


def _wrk(port: int, seconds: float, workdir: Path, close: bool) -> dict[str, Any]:
    run = Wrk(f"http://127.0.0.1:{port}/", seconds, 32, workdir / "wrk.log", close=close)
    result = run.result()
    if result is None:
        raise RuntimeError("wrk gave no result")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--only", default=",".join(COMMANDS))
    options = parser.parse_args(argv)
    _procs.install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="graceful-asgi-bench-"))
    names = options.only.split(",")
    ports = dict(zip(names, _procs.free_ports(len(names))))
    servers = {name: Server(name, ports[name], workdir) for name in names}
    results: dict[str, dict[str, Any]] = {name: {"keepalive": [], "close": []} for name in names}
    try:
        for _ in range(options.rounds):
            for name in names:
                for kind in ("keepalive", "close"):
                    results[name][kind].append(
                        _wrk(ports[name], options.seconds, workdir, kind == "close")
                    )
        for name in names:
            server = servers[name]
            length = options.restarts * 2.0 + 2.0
            run = Wrk(f"http://127.0.0.1:{ports[name]}/", length, 32, workdir / "wrk.log")
            time.sleep(1.0)
            for _ in range(options.restarts):
                server.restart()
                time.sleep(1.0)
            result = run.result()
            results[name]["restarts"] = result
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for name in names:
        best = {k: max(results[name][k], key=lambda r: r["rps"]) for k in ("keepalive", "close")}
        rows.append({
            "server": name,
            "keepalive_rps": best["keepalive"]["rps"],
            "keepalive_p99_ms": best["keepalive"]["p99_us"] / 1000,
            "close_rps": best["close"]["rps"],
            "close_p99_ms": best["close"]["p99_us"] / 1000,
            "restart_requests": results[name]["restarts"]["requests"],
            "restart_failed": results[name]["restarts"]["failed"],
        })
    fastest = max(r["keepalive_rps"] for r in rows if r["server"] != "graceful")
    print("| server | keep-alive req/s | p99 ms | close req/s | p99 ms "
          f"| requests across {options.restarts} restarts | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['server']} | {r['keepalive_rps']:,.0f} | {r['keepalive_p99_ms']:.1f} "
              f"| {r['close_rps']:,.0f} | {r['close_p99_ms']:.1f} "
              f"| {r['restart_requests']:,} | {r['restart_failed']:,} |")
    mine = next(r for r in rows if r["server"] == "graceful")
    print(f"\ngraceful keep-alive / fastest other: {mine['keepalive_rps'] / fastest:.2f}")
    print(json.dumps({"rows": rows, "raw": results}, default=str)[:20000])


if __name__ == "__main__":
    main()
