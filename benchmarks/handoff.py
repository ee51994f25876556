"""
Handoff time: from SIGUSR1 to the first answer from the new process (a
fresh connection asks /pid every 5 ms).  No load, so this is the time a
restart itself takes.  One serving process (C{workers = 1}, the default):
the new generation is what the signal starts, not a worker behind a master.

    python -m benchmarks.handoff [--restarts 15] [--only asgi]

The scenarios, each started the way a user would: the examples (a program
serving in code; two servers, HTTP and HTTPS, under twistd), and a hello
world (C{benchmarks/apps/hello.py}) served as ASGI and as WSGI from a
config, by C{graceful run} and by C{twistd -n graceful}.  Each line gives
the median, the quartiles and the extremes over the restarts.

The processes cache their bytecode (in a scratch folder, whatever
C{PYTHONDONTWRITEBYTECODE} says), as an installed package has it: compiling
graceful's modules afresh cost each new generation 0.15 s.

Run from the repository's root with the working tree on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness.probes import pid_of
from harness.processes import EXAMPLES, ROOT, Process, free_port, wait_until


def measure(port: int, restarts: int) -> list[float]:
    times = []
    for _ in range(restarts):
        old = pid_of(port)
        began = time.monotonic()
        os.kill(old, signal.SIGUSR1)
        deadline = began + 30
        while time.monotonic() < deadline:
            try:
                if pid_of(port) != old:
                    break
            except (OSError, AssertionError):
                pass
            time.sleep(0.005)
        times.append(time.monotonic() - began)
        time.sleep(1.5)  # let the old process finish draining
    return times


def report(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    quartiles = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return (
        f"{name}: median {statistics.median(ms):.0f} ms, quartiles {quartiles[0]:.0f}-"
        f"{quartiles[2]:.0f}, min {ms[0]:.0f}, max {ms[-1]:.0f} (n={len(ms)})"
    )


def _run(directory: Path, port: int, app: str) -> Process:
    config = directory / f"{app.replace(':', '-')}.toml"
    config.write_text(f'[servers.hello]\napp = "{app}"\nports = [{port}]\n')
    return Process([sys.executable, "-m", "graceful", "run", "--config", str(config)])


def _twistd(directory: Path, port: int, app: str) -> Process:
    config = directory / f"{app.replace(':', '-')}.toml"
    config.write_text(f'[servers.hello]\napp = "{app}"\nports = [{port}]\n')
    pidfile = directory / f"{app.replace(':', '-')}.pid"
    return Process.twistd("-n", f"--pidfile={pidfile}", "graceful", "--config", str(config))


def _examples_twistd(directory: Path, port: int) -> Process:
    tls_port = free_port()
    (directory / "graceful.toml").write_text(
        f'[servers.s1]\napp = "examples.apps:basic"\nports = [{port}]\n\n'
        f'[servers.s2]\napp = "examples.apps:other"\nhttps_ports = [{tls_port}]\n'
        f'cert = "{ROOT / "certs" / "server.crt"}"\nkey = "{ROOT / "certs" / "server.key"}"\n'
    )
    return Process.twistd(
        "-n", f"--pidfile={directory / 'twistd.pid'}", "graceful",
        "--config", str(directory / "graceful.toml"),
    )


#: name -> how to start it, given a scratch directory and the port.
SCENARIOS: dict[str, Callable[[Path, int], Process]] = {
    "examples/basic.py": lambda d, port: Process.python(EXAMPLES / "basic.py", str(port)),
    "twistd, two servers, HTTP and HTTPS": _examples_twistd,
    "ASGI hello, graceful run": lambda d, port: _run(d, port, "benchmarks.apps.hello:asgi"),
    "ASGI hello, twistd": lambda d, port: _twistd(d, port, "benchmarks.apps.hello:asgi"),
    "WSGI hello, graceful run": lambda d, port: _run(d, port, "benchmarks.apps.hello:wsgi"),
    "WSGI hello, twistd": lambda d, port: _twistd(d, port, "benchmarks.apps.hello:wsgi"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=15)
    parser.add_argument("--only", default="", help="the scenarios whose name has this text")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="graceful-handoff-"))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")
    for name, start in SCENARIOS.items():
        if args.only.lower() not in name.lower():
            continue
        port = free_port()
        process = start(directory, port).start()
        try:
            wait_until(lambda: pid_of(port))
            print(report(name, measure(port, args.restarts)), flush=True)
        finally:
            process.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
