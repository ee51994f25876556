"""
CPU per request of ASGI servers, side by side in one run: a raw ASGI hello
world and a FastAPI JSON route, keep-alive and C{Connection: close}, one
serving process each, under graceful's native channel, graceful's
twisted.web path, uvicorn[standard] (httptools, uvloop), uvicorn with h11,
and granian and hypercorn where installed.

    PYTHONPATH=. python -m benchmarks.asgi_cpu [--seconds 4] [--rounds 5]
        [--apps raw,fastapi] [--kinds keepalive,close] [--servers ...]

Rounds are interleaved (each round runs every server once, in turn), so
that a noisy neighbour costs every server alike; CPU per request is the
user+system time of the server's whole process tree (granian answers from a
child process) from /proc over wrk's requests.  The
summary is the median, over rounds, of each server's ratio to
uvicorn[standard] in that round.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from benchmarks._cpu import tree_cpu_seconds
from harness import processes as _procs
from harness.probes import wait_answering
from harness.wrk import Wrk

ROOT = Path(__file__).resolve().parent.parent
BASE = "uvicorn-standard"


#: The interpreter that runs the servers.
PYTHON = [sys.executable]


def _uvicorn(http: str, loop: str) -> Callable[[str, int], list[str]]:
    return lambda app, port: [
        *PYTHON, "-m", "uvicorn", f"benchmarks.apps.asgi_cpu:{app}", "--host", "127.0.0.1",
        "--port", str(port), "--http", http, "--loop", loop, "--log-level", "warning",
        "--no-access-log",
    ]


COMMANDS: dict[str, Callable[[str, int], list[str]]] = {
    "graceful-native": lambda app, port: [
        *PYTHON, "-m", "benchmarks.apps.graceful_asgi", app, str(port), "native"],
    "graceful-twisted": lambda app, port: [
        *PYTHON, "-m", "benchmarks.apps.graceful_asgi", app, str(port), "twisted"],
    BASE: _uvicorn("httptools", "uvloop"),
    "uvicorn-h11": _uvicorn("h11", "asyncio"),
    "granian": lambda app, port: [
        *PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-ws", "--log-level", "warning",
        f"benchmarks.apps.asgi_cpu:{app}"],
    "hypercorn": lambda app, port: [
        *PYTHON, "-m", "hypercorn", f"benchmarks.apps.asgi_cpu:{app}",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
}


def available(name: str) -> bool:
    module = {"granian": "granian", "hypercorn": "hypercorn"}.get(name, "uvicorn")
    return importlib.util.find_spec(module) is not None


def measure(port: int, pid: int, seconds: float, close: bool, log: Path) -> dict[str, Any]:
    before = tree_cpu_seconds(pid)
    result = Wrk(f"http://127.0.0.1:{port}/", seconds, 32, log, close=close).result()
    used = tree_cpu_seconds(pid) - before
    if result is None or not result["requests"]:
        raise RuntimeError(f"wrk gave no result on port {port}")
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "cpu_us": used / result["requests"] * 1e6,
        "p99_ms": result["p99_us"] / 1000,
        "failed": result["failed"],
    }


Table = dict[str, dict[str, list[dict[str, Any]]]]


def run(rounds: int, seconds: float, apps: list[str], kinds: list[str], servers: list[str],
        workdir: Path) -> Table:
    """
    Every load (app and kind) on every server, in interleaved rounds: for
    each load, the rows of each server, one per round.
    """
    names = [n for n in servers if available(n)]
    table: Table = {}
    for app in apps:
        ports = dict(zip(names, _procs.free_ports(len(names))))
        procs = {}
        try:
            for name in names:
                proc = _procs.Process(
                    COMMANDS[name](app, ports[name]), log=workdir / f"{name}-{app}.log",
                    name=name, cwd=ROOT,
                ).start()
                procs[name] = proc
                wait_answering(ports[name], False, 30, proc)
            for kind in kinds:
                for round_ in range(rounds):
                    for name in names:
                        row = measure(ports[name], procs[name].pid, seconds,
                                      kind == "close", workdir / "wrk.log")
                        table.setdefault(f"{app} {kind}", {}).setdefault(name, []).append(row)
                        print(f"{app} {kind} round {round_ + 1} {name}: "
                              f"{row['cpu_us']:.1f} us/request, {row['rps']:,.0f} req/s, "
                              f"p99 {row['p99_ms']:.1f} ms", flush=True)
        finally:
            for proc in procs.values():
                proc.stop(grace=3.0)
    return table


def summary(table: Table) -> list[str]:
    """
    The table in Markdown: medians, and the medians of each round's ratios
    to uvicorn[standard].
    """
    lines = [
        "| load | server | CPU us/request (median) | x uvicorn[standard] | req/s | p99 ms "
        "| p99 x uvicorn[standard] | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for load, by_server in table.items():
        base = by_server.get(BASE)
        for name, rows in by_server.items():
            cpu = statistics.median(r["cpu_us"] for r in rows)
            ratio = p99 = "-"
            if base:
                ratio = f"{statistics.median(r['cpu_us'] / b['cpu_us'] for r, b in zip(rows, base)):.2f}"
                p99 = f"{statistics.median(r['p99_ms'] / b['p99_ms'] for r, b in zip(rows, base)):.2f}"
            lines.append(
                f"| {load} | {name} | {cpu:.1f} | {ratio} | "
                f"{statistics.median(r['rps'] for r in rows):,.0f} | "
                f"{statistics.median(r['p99_ms'] for r in rows):.1f} | {p99} | "
                f"{sum(r['failed'] for r in rows)} |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--apps", default="raw,fastapi")
    parser.add_argument("--kinds", default="keepalive,close")
    parser.add_argument("--servers", default=",".join(COMMANDS))
    options = parser.parse_args(argv)
    _procs.install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="graceful-asgi-cpu-"))
    table = run(options.rounds, options.seconds, options.apps.split(","),
                options.kinds.split(","), options.servers.split(","), workdir)
    print("\n" + "\n".join(summary(table)))
    (workdir / "asgi_cpu.json").write_text(json.dumps(table))
    print(f"\nraw numbers: {workdir / 'asgi_cpu.json'}")


if __name__ == "__main__":
    main()
