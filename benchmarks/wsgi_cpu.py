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

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

from harness import processes as _procs

from ._cpu import Command, run, summary

#: The interpreter that runs the servers.
PYTHON = [sys.executable]
GUNICORN = "gunicorn-sync"
GRANIAN = "granian"

COMMANDS: dict[str, Command] = {
    "graceful-native": lambda app, port: [
        *PYTHON, "-m", "benchmarks.apps.graceful_wsgi", app, str(port), "native"],
    "graceful-twisted": lambda app, port: [
        *PYTHON, "-m", "benchmarks.apps.graceful_wsgi", app, str(port), "twisted"],
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
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--apps", default="raw,flask")
    parser.add_argument("--kinds", default="keepalive,close")
    parser.add_argument("--servers", default=",".join(COMMANDS))
    options = parser.parse_args(argv)
    _procs.install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="graceful-wsgi-cpu-"))
    names = [n for n in options.servers.split(",") if available(n)]
    table = run(COMMANDS, names, options.rounds, options.seconds, options.apps.split(","),
                options.kinds.split(","), workdir)
    print("\n" + "\n".join(summary(table, [b for b in (GUNICORN, GRANIAN) if b in names])))
    (workdir / "wsgi_cpu.json").write_text(json.dumps(table))
    print(f"\nraw numbers: {workdir / 'wsgi_cpu.json'}")


if __name__ == "__main__":
    main()
