"""
CPU per request of WSGI servers, side by side in one run: a raw WSGI hello
world and a Flask JSON route, keep-alive and C{Connection: close}, one
serving process each, under graceful's native channel, graceful's
twisted.web path, gunicorn's sync worker (one) and granian's WSGI interface
(one worker).

    PYTHONPATH=. python -m benchmarks.wsgi_cpu [--seconds 4] [--rounds 5]
        [--apps raw,flask] [--kinds keepalive,close] [--servers ...]

Rounds are interleaved; CPU per request is the user+system time of the
server's whole process tree (gunicorn's master and worker, granian's
worker) over wrk's requests (benchmarks/_cpu.py).  The summary gives each
server's median, and the median of its per-round ratios to gunicorn sync
and to granian.  gunicorn's sync worker closes every connection after its
response, so its "keepalive" rows are new connections too.
"""

from __future__ import annotations

import importlib.util
import sys

from . import _cpu
from ._cpu import Command, command_line, graceful_run

#: The interpreter that runs the servers.
PYTHON = [sys.executable]
GUNICORN = "gunicorn-sync"
GRANIAN = "granian"
NATIVE = "graceful-native"
_LOADS = ("raw keepalive", "raw close", "flask keepalive", "flask close")

#: What graceful's channel aims at against its peers.
TARGETS = (
    _cpu.Target("CPU <= 1.0x gunicorn sync", _LOADS, NATIVE, GUNICORN, 1.0),
    _cpu.Target("CPU <= 2.0x granian", _LOADS, NATIVE, GRANIAN, 2.0),
)

COMMANDS: dict[str, Command] = {
    NATIVE: graceful_run("benchmarks.apps.wsgi_cpu", "native"),
    "graceful-twisted": graceful_run("benchmarks.apps.wsgi_cpu", "twisted"),
    GUNICORN: lambda app, port: [
        *PYTHON, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
        f"benchmarks.apps.wsgi_cpu:{app}"],
    GRANIAN: lambda app, port: [
        *PYTHON, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--log-level", "warning",
        f"benchmarks.apps.wsgi_cpu:{app}"],
}


def available(name: str) -> bool:
    module = {GUNICORN: "gunicorn", GRANIAN: "granian"}.get(name, "graceful")
    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> None:
    command_line(argv, name="wsgi_cpu", description=(__doc__ or "").split("\n\n")[0],
                 commands=COMMANDS, available=available, apps="raw,flask",
                 bases=[GUNICORN, GRANIAN], targets=TARGETS)


if __name__ == "__main__":
    main()
