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

import importlib.util
import sys
from pathlib import Path
from typing import Callable

from benchmarks import _cpu
from benchmarks._cpu import Table, graceful_run

BASE = "uvicorn-standard"
GRANIAN = "granian"
NATIVE = "graceful-native"

#: What graceful's channel aims at against its peers.
TARGETS = (
    _cpu.Target("raw ASGI CPU <= 1.0x uvicorn[standard]", ("raw keepalive", "raw close"),
                NATIVE, BASE, 1.0),
    _cpu.Target("FastAPI CPU <= 1.0x uvicorn[standard]", ("fastapi keepalive", "fastapi close"),
                NATIVE, BASE, 1.0),
    _cpu.Target("CPU <= 1.0x granian with Connection: close", ("raw close", "fastapi close"),
                NATIVE, GRANIAN, 1.0),
    _cpu.Target("p99 <= 2x uvicorn[standard]'s",
                ("raw keepalive", "raw close", "fastapi keepalive", "fastapi close"),
                NATIVE, BASE, 2.0, key="p99_ms"),
)


#: The interpreter that runs the servers.
PYTHON = [sys.executable]


def _uvicorn(http: str, loop: str) -> Callable[[str, int], list[str]]:
    return lambda app, port: [
        *PYTHON, "-m", "uvicorn", f"benchmarks.apps.asgi_cpu:{app}", "--host", "127.0.0.1",
        "--port", str(port), "--http", http, "--loop", loop, "--log-level", "warning",
        "--no-access-log",
    ]


COMMANDS: dict[str, Callable[[str, int], list[str]]] = {
    NATIVE: graceful_run("benchmarks.apps.asgi_cpu", "native"),
    "graceful-twisted": graceful_run("benchmarks.apps.asgi_cpu", "twisted"),
    BASE: _uvicorn("httptools", "uvloop"),
    "uvicorn-h11": _uvicorn("h11", "asyncio"),
    GRANIAN: lambda app, port: [
        *PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-ws", "--log-level", "warning",
        f"benchmarks.apps.asgi_cpu:{app}"],
    "hypercorn": lambda app, port: [
        *PYTHON, "-m", "hypercorn", f"benchmarks.apps.asgi_cpu:{app}",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
}


def available(name: str) -> bool:
    module = {GRANIAN: "granian", "hypercorn": "hypercorn"}.get(name, "uvicorn")
    return importlib.util.find_spec(module) is not None


def run(rounds: int, seconds: float, apps: list[str], kinds: list[str], servers: list[str],
        workdir: Path) -> Table:
    """
    Every load (app and kind) on every installed server of C{servers}, in
    interleaved rounds (L{benchmarks._cpu.run}).
    """
    names = [n for n in servers if n in COMMANDS and available(n)]
    return _cpu.run(COMMANDS, names, rounds, seconds, apps, kinds, workdir)


def summary(table: Table) -> list[str]:
    """
    The table in Markdown, with ratios to uvicorn[standard] and granian.
    """
    return _cpu.summary(table, [BASE, GRANIAN])


def main(argv: list[str] | None = None) -> None:
    _cpu.command_line(argv, name="asgi_cpu", description=__doc__.split("\n\n")[0],
                      commands=COMMANDS, available=available, apps="raw,fastapi",
                      bases=[BASE, GRANIAN], targets=TARGETS)


if __name__ == "__main__":
    main()
