"""
Workers (issue 6): hello-world throughput with workers = 2 against
workers = 1, beside two plain Twisted processes sharing one socket (the
reference), and restart behaviour under load with workers = 1 and 2.

    python -m benchmarks.workers [--duration 10] [--rounds 3] [--restarts 4]

Run from the repository's root with the working tree on PYTHONPATH (as
benchmarks/run does); needs wrk.  The load generator is wrk with two
threads, 64 connections.  Rounds alternate the targets so that a noisy
machine weighs on all of them alike; medians are reported.  Writes a
Markdown table to stdout and to benchmarks/results/workers-TIME.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness.processes import Process, free_port

ROOT = Path(__file__).resolve().parent.parent

#: name: (module and arguments, serving processes)
TARGETS = {
    "plain twisted.web, 1 process": (["benchmarks.apps.plain_twisted", "{port}"], 1),
    "plain twisted.web, 2 processes, one socket": (
        ["benchmarks.apps.plain_twisted_shared", "{port}", "2"],
        2,
    ),
    "graceful, workers = 1": (["benchmarks.apps.graceful_workers", "{port}", "1"], 1),
    "graceful, workers = 2": (["benchmarks.apps.graceful_workers", "{port}", "2"], 2),
}


class Server:
    def __init__(self, module_args: list[str], port: int) -> None:
        args = [a.format(port=port) for a in module_args]
        self.port = port
        self.process = Process(
            [sys.executable, "-m", *args],
            log=ROOT / "benchmarks" / "results" / f"workers-server-{port}.log",
        ).start()

    def wait_ready(self, expect_processes: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/pid", timeout=1) as r:
                    seen.add(r.read().decode().strip())
                if len(seen) >= expect_processes:
                    return
            except OSError:
                time.sleep(0.1)
        if not seen:
            raise RuntimeError(f"server on {self.port} did not answer")

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self) -> None:
        self.process.kill()


def wrk_command(port: int, seconds: float) -> list[str]:
    return ["wrk", "-t2", "-c64", f"-d{int(seconds)}s", f"http://127.0.0.1:{port}/"]


def wrk(port: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        wrk_command(port, seconds), capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    return wrk_result(out)


def wrk_result(out: str) -> dict[str, float]:
    """
    Requests per second, requests, and errors (socket errors and non-2xx
    answers) from wrk's report.
    """
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return {"rps": rps, "requests": total, "errors": errors}


def throughput(duration: float, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in TARGETS}
    for round_number in range(rounds):
        for name, (args, processes) in TARGETS.items():
            port = free_port()
            server = Server(args, port)
            try:
                server.wait_ready(processes)
                wrk(port, 2)  # warm up
                result = wrk(port, duration)
                results[name].append(result["rps"])
                print(
                    f"round {round_number + 1}/{rounds}: {name}: {result['rps']:.0f} requests/s",
                    flush=True,
                )
            finally:
                server.stop()
    return results


def restarts_under_load(workers: int, duration: float, restarts: int) -> dict[str, float]:
    port = free_port()
    server = Server(TARGETS[f"graceful, workers = {workers}"][0], port)
    try:
        server.wait_ready(workers)
        load = subprocess.Popen(wrk_command(port, duration), stdout=subprocess.PIPE, text=True)
        interval = duration / (restarts + 1)
        for _ in range(restarts):
            time.sleep(interval)
            if workers == 1:
                pid = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/pid").read())
                os.kill(pid, signal.SIGUSR1)
            else:
                server.signal(signal.SIGUSR1)  # the master
        out, _ = load.communicate(timeout=duration + 30)
        result = wrk_result(out)
        total, errors = result["requests"], result["errors"]
        print(f"restarts under load, workers = {workers}: {total} requests, {errors} errors", flush=True)
        return result
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=4)
    args = parser.parse_args(argv)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    results = throughput(args.duration, args.rounds)
    median = {name: statistics.median(values) for name, values in results.items()}
    plain_ratio = median["plain twisted.web, 2 processes, one socket"] / median["plain twisted.web, 1 process"]
    graceful_ratio = median["graceful, workers = 2"] / median["graceful, workers = 1"]
    restart_rows = [restarts_under_load(w, 15.0, args.restarts) for w in (1, 2)]
    lines = [
        f"# Workers benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)",
        "",
        f"`python -m benchmarks.workers --duration {args.duration:g} --rounds {args.rounds} "
        f"--restarts {args.restarts}`; load: `wrk -t2 -c64`, medians of {args.rounds} rounds.",
        "",
        "| server | requests/s (median) | rounds |",
        "|---|---:|---|",
    ]
    for name, values in results.items():
        lines.append(f"| {name} | {median[name]:.0f} | {', '.join(f'{v:.0f}' for v in values)} |")
    lines += [
        "",
        f"- plain twisted.web, 2 processes / 1 process: **{plain_ratio:.2f}x**",
        f"- graceful, workers = 2 / workers = 1: **{graceful_ratio:.2f}x** (target 1.5x)",
        "",
        f"| restarts under load (15 s, {args.restarts} restarts) | requests | errors | requests/s |",
        "|---|---:|---:|---:|",
    ]
    for workers, row in zip((1, 2), restart_rows):
        lines.append(
            f"| graceful, workers = {workers} | {row['requests']:.0f} | {row['errors']:.0f} | {row['rps']:.0f} |"
        )
    report = "\n".join(lines) + "\n"
    path = ROOT / "benchmarks" / "results" / f"workers-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(report)
    print()
    print(report)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
