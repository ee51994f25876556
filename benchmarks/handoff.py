"""
Handoff time of the examples: from SIGUSR1 to the first answer from the new
process (a fresh connection asks /pid every 5 ms).  No load, so this is the
time a restart itself takes.

    python -m benchmarks.handoff [--restarts 15]

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
            except OSError:
                pass
            time.sleep(0.005)
        times.append(time.monotonic() - began)
        time.sleep(1.5)  # let the old process finish draining
    return times


def report(name: str, times: list[float]) -> str:
    return (
        f"{name}: median {statistics.median(times) * 1000:.0f} ms, "
        f"min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f} (n={len(times)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=15)
    args = parser.parse_args(argv)
    port = free_port()
    basic = Process.python(EXAMPLES / "basic.py", str(port)).start()
    try:
        wait_until(lambda: pid_of(port))
        print(report("examples/basic.py", measure(port, args.restarts)), flush=True)
    finally:
        basic.stop()
    directory = Path(tempfile.mkdtemp(prefix="graceful-handoff-"))
    tls_port = free_port()
    (directory / "graceful.toml").write_text(
        f'[servers.s1]\napp = "examples.apps:basic"\nports = [{port}]\n\n'
        f'[servers.s2]\napp = "examples.apps:other"\nhttps_ports = [{tls_port}]\n'
        f'cert = "{ROOT / "certs" / "server.crt"}"\nkey = "{ROOT / "certs" / "server.key"}"\n'
    )
    twistd = Process.twistd(
        "-n", f"--pidfile={directory / 'twistd.pid'}", "graceful",
        "--config", str(directory / "graceful.toml"),
    ).start()
    try:
        wait_until(lambda: pid_of(port))
        times = measure(port, args.restarts)
        print(report("twistd, two servers, HTTP and HTTPS", times), flush=True)
    finally:
        twistd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
