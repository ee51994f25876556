"""
The pieces of the CPU-per-request benchmarks (benchmarks/asgi_cpu.py and
benchmarks/wsgi_cpu.py): the CPU of a serving process and all its
descendants, one wrk load measured against it, interleaved rounds over
several servers, and their Markdown summary.

A server may serve from a child (granian, gunicorn's worker): the CPU of a
load is the user+system time of the whole process tree from /proc, read
before and after, with what reaped children used (each process's
cutime+cstime) so that a worker that exits inside the window still counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from harness import processes as _procs
from harness.probes import wait_answering
from harness.wrk import Wrk

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

#: A server's command line for an app and a port.
Command = Callable[[str, int], list[str]]
#: For each load ("raw keepalive"), each server's rows, one per round.
Table = dict[str, dict[str, list[dict[str, Any]]]]


@dataclass(frozen=True)
class Target:
    """
    A goal the benchmark checks: on each of C{loads}, the median of the
    per-round ratios of C{server}'s C{key} (C{"cpu_us"}, C{"p99_ms"}) to
    C{base}'s is at most C{limit}.
    """

    what: str
    loads: tuple[str, ...]
    server: str
    base: str
    limit: float
    key: str = "cpu_us"


def graceful_run(module: str, http: str) -> Command:
    """
    graceful serving an app of C{module} as its users start it: one
    C{graceful run} line with uvicorn's option names, no access log (as
    every peer here runs), on the HTTP implementation C{http}.
    """
    return lambda app, port: [
        sys.executable, "-m", "graceful", "run", f"{module}:{app}", "--host", "127.0.0.1",
        "--port", str(port), "--http", http, "--no-access-log", "--log-level", "warning",
    ]


def _own_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0  # gone meanwhile: its parent's cutime has it once reaped
    # utime, stime, cutime, cstime: fields 14-17 of stat, [11]-[14] here.
    return sum(int(f) for f in fields[11:15])


def children(pid: int) -> set[int]:
    """
    The live children of C{pid}.
    """
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found.update(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            return _procs.children(pid)  # a kernel without CONFIG_PROC_CHILDREN
    return found


def tree_cpu_seconds(pid: int) -> float:
    """
    User and system CPU of C{pid}, its threads and its descendants (live,
    or exited and reaped), in seconds.
    """
    ticks = 0
    seen: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        ticks += _own_ticks(current)
        todo.extend(children(current))
    return ticks / TICK


def measure(port: int, pid: int, seconds: float, close: bool, log: Path,
            connections: int = 32) -> dict[str, Any]:
    """
    One wrk load on C{port}: requests a second, CPU microseconds a request
    of C{pid}'s process tree, p99 and failures.
    """
    before = tree_cpu_seconds(pid)
    result = Wrk(f"http://127.0.0.1:{port}/", seconds, connections, log, close=close).result()
    used = tree_cpu_seconds(pid) - before
    if result is None or not result["requests"]:
        raise RuntimeError(f"wrk gave no result on port {port}")
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "cpu_us": used / result["requests"] * 1e6,
        "p99_ms": result["p99_us"] / 1000,
        "failed": result["failed"],
    }


def run(commands: dict[str, Command], names: Sequence[str], rounds: int, seconds: float,
        apps: Sequence[str], kinds: Sequence[str], workdir: Path) -> Table:
    """
    Every load (app and kind) on every server of C{names}, one serving
    process each, in interleaved rounds (each round runs every server once,
    in turn, so a noisy neighbour costs every server alike).
    """
    table: Table = {}
    for app in apps:
        ports = dict(zip(names, _procs.free_ports(len(names))))
        procs = {}
        try:
            for name in names:
                proc = _procs.Process(
                    commands[name](app, ports[name]), log=workdir / f"{name}-{app}.log",
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


def summary(table: Table, bases: Sequence[str]) -> list[str]:
    """
    The table in Markdown: medians, and for each of C{bases} the median of
    each round's ratio to that server (and of the p99's to the first base's).
    """
    lines = [
        "| load | server | CPU us/request (median) | "
        + "".join(f"x {b} | " for b in bases)
        + f"req/s | p99 ms | p99 x {bases[0]} | failed |",
        "|---|---|---:|" + "---:|" * len(bases) + "---:|---:|---:|---:|",
    ]

    def ratio(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]] | None,
              key: str) -> str:
        if not base_rows:
            return "-"
        return f"{statistics.median(r[key] / b[key] for r, b in zip(rows, base_rows)):.2f}"

    for load, by_server in table.items():
        for name, rows in by_server.items():
            ratios = [ratio(rows, by_server.get(base), "cpu_us") for base in bases]
            lines.append(
                f"| {load} | {name} | {statistics.median(r['cpu_us'] for r in rows):.1f} | "
                + "".join(f"{r} | " for r in ratios)
                + f"{statistics.median(r['rps'] for r in rows):,.0f} | "
                f"{statistics.median(r['p99_ms'] for r in rows):.1f} | "
                f"{ratio(rows, by_server.get(bases[0]), 'p99_ms')} | "
                f"{sum(r['failed'] for r in rows)} |"
            )
    return lines


def verdicts(table: Table, targets: Sequence[Target]) -> list[str]:
    """
    Each target, load by load: the measured ratio, and met, or missed by
    how much (the ratio over the limit).  A load or server that did not run
    is left out.
    """
    lines = []
    for target in targets:
        parts = []
        for load in target.loads:
            rows = table.get(load, {}).get(target.server)
            base_rows = table.get(load, {}).get(target.base)
            if not rows or not base_rows:
                continue
            ratio = statistics.median(
                r[target.key] / b[target.key] for r, b in zip(rows, base_rows)
            )
            verdict = ("met" if ratio <= target.limit
                       else f"missed by {100 * (ratio / target.limit - 1):.0f}%")
            parts.append(f"{load} {ratio:.2f}x ({verdict})")
        if parts:
            lines.append(f"- {target.what}: " + ", ".join(parts))
    return lines


def command_line(argv: list[str] | None, *, name: str, description: str,
                 commands: dict[str, Command], available: Callable[[str], bool],
                 apps: str, bases: Sequence[str], targets: Sequence[Target] = ()) -> None:
    """
    A CPU benchmark's command line (C{--seconds --rounds --apps --kinds
    --servers}): runs it, prints the summary with ratios to each of
    C{bases} that ran and each of C{targets}, met or by how much missed,
    and keeps the raw numbers in C{<name>.json}.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--apps", default=apps)
    parser.add_argument("--kinds", default="keepalive,close")
    parser.add_argument("--servers", default=",".join(commands))
    options = parser.parse_args(argv)
    _procs.install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix=f"graceful-{name.replace('_', '-')}-"))
    names = [n for n in options.servers.split(",") if n in commands and available(n)]
    table = run(commands, names, options.rounds, options.seconds, options.apps.split(","),
                options.kinds.split(","), workdir)
    print("\n" + "\n".join(summary(table, [b for b in bases if b in names] or bases[:1])))
    checked = verdicts(table, targets)
    if checked:
        print("\nTargets (medians of the per-round ratios):\n" + "\n".join(checked))
    (workdir / f"{name}.json").write_text(json.dumps(table))
    print(f"\nraw numbers: {workdir / f'{name}.json'}")
