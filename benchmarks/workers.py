"""
Workers: hello-world throughput of graceful with C{workers = N} beside N
plain twisted.web processes sharing one listening socket (the reference), N
= 1, 2, 4, ... up to the machine's cores; and SIGUSR1 rolls under load.

    benchmarks/run --only workers [--workers 1,2,4] [--rounds 5] [--workers-duration 4]
    python -m benchmarks.workers [the same options]     # the same as --only workers

It answers two questions:

- the decided target: C{workers = 2} serves at least 95% of what two plain
  twisted.web processes sharing one socket serve in the same run;
- scaling: each count's throughput over the same server's at N = 1, and the
  factor per doubling of N, for graceful and for the reference alike.  On a
  machine where wrk shares the cores with the servers (2 cores: always) the
  factor says more about the machine than about graceful; the table says
  when it does.

Every server is started once and stays up; rounds run every server in turn,
the counts in an order that rotates from round to round and each count's
pair back to back, so that whatever else the machine does weighs on all rows
alike.  Ratios are taken round by round (the
two runs a few seconds apart) and their median reported, with the spread of
the rounds beside it.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass

from harness import processes as _procs
from harness.probes import probe_pid

from . import _stats
from ._load import Wrk
from ._progress import Progress
from ._targets import Context, Target

#: The decided throughput target: graceful at this many workers serves at
#: least this share of as many plain twisted.web processes on one socket.
TARGET_WORKERS = 2
TARGET_RATIO = 0.95

KINDS = ("graceful", "plain")
LABELS = {
    "graceful": "graceful, workers = N",
    "plain": "plain twisted.web, N processes, one socket",
}


def usable_cores() -> int:
    "The cores this process may run on (its affinity), else the machine's."
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_counts(cores: int) -> list[int]:
    """
    1, 2, 4, ... up to C{cores}, then C{cores} itself when it is not a power
    of two; 2 always, since the target is measured there.
    """
    counts = [1]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    if counts[-1] != cores and cores > 1:
        counts.append(cores)
    if TARGET_WORKERS not in counts:
        counts.append(TARGET_WORKERS)
    return sorted(counts)


def default_threads(cores: int) -> int:
    """
    wrk threads: 2 (as the measurements so far), more on big machines so
    that the load generator does not become the ceiling: one C thread of wrk
    keeps about four Python hello-world processes busy.
    """
    return max(2, cores // 4)


def wrk_shares(workers: int, threads: int, cores: int) -> bool:
    "Whether N serving processes and wrk's threads need more than the cores."
    return workers + threads > cores


class _Group(Target):
    """
    A server of N serving processes under one parent (graceful's master or
    the plain reference's forking parent), started in its own session.
    """

    kind = ""
    module = ""

    def __init__(self, ctx: Context, port: int, workers: int) -> None:
        super().__init__(ctx, port, False)
        self.workers = workers
        self.name = f"{self.kind}-{workers}"

    def command(self) -> list[str]:
        return [self.ctx.python, "-m", self.module, str(self.port), str(self.workers)]

    def serving(self) -> set[int]:
        "The processes that serve: the parent's children, or the one process."
        members = self.proc.members()
        children = {p for p, parent in members.items() if parent == self.proc.pid}
        return children or ({self.proc.pid} if self.proc.pid in members else set())

    def start(self) -> None:
        super().start()
        self._wait_for(
            f"{self.workers} serving processes", lambda: len(self.serving()) >= self.workers, 30.0
        )


class GracefulWorkers(_Group):
    kind = "graceful"
    module = "benchmarks.apps.graceful_workers"
    software = "graceful, g.set_workers(N), route() handlers"


class PlainShared(_Group):
    kind = "plain"
    module = "benchmarks.apps.plain_twisted_shared"
    software = "N forked twisted.web processes adopting one listening socket"


def _cpu_by_pid(target: _Group) -> dict[int, float]:
    return {p: _procs.cpu_seconds(p) for p in target.generation()}


def _busy(before: dict[int, float], after: dict[int, float], serving: set[int]) -> int:
    """
    How many serving processes did at least a quarter of an even share of
    the run's work: 2 of 2 when the kernel spread the connections, 1 of 2
    when one process took them all.
    """
    used = {p: after.get(p, 0.0) - before.get(p, 0.0) for p in serving}
    total = sum(used.values())
    if not used or total <= 0:
        return 0
    fair = total / len(used)
    return sum(1 for v in used.values() if v >= fair / 4)


@dataclass
class Settings:
    counts: list[int]
    rounds: int
    duration: float
    connections: int
    threads: int
    restarts: int
    restart_duration: float = 15.0


def run_workers(ctx: Context, progress: Progress, settings: Settings) -> dict:
    """
    Throughput rounds over every (kind, count), then rolls under load.
    """
    cores = usable_cores()
    keys = [(kind, n) for n in settings.counts for kind in KINDS]
    targets: dict[tuple[str, int], _Group] = {}
    runs: dict[str, dict[int, list[dict | None]]] = {k: {n: [] for n in settings.counts} for k in KINDS}
    restarts: list[dict] = []
    load_before = os.getloadavg()
    try:
        ports = _procs.free_ports(len(keys))
        for (kind, n), port in zip(keys, ports):
            progress.tick(f"starting {kind}, {n} process(es)")
            cls = GracefulWorkers if kind == "graceful" else PlainShared
            targets[(kind, n)] = cls(ctx, port, n)
            targets[(kind, n)].start()
        for (kind, n), target in targets.items():
            progress.tick(f"warming up {kind}, {n} process(es)")
            _wrk(ctx, target, 2.0, settings, "warmup").result()
        for r in range(settings.rounds):
            for kind, n in round_order(settings.counts, r):
                progress.tick(f"round {r + 1}/{settings.rounds}: {kind}, {n} process(es)")
                runs[kind][n].append(_measure(ctx, targets[(kind, n)], settings))
        for n in _restart_counts(settings.counts) if settings.restarts else []:
            progress.tick(f"rolls under load: graceful, workers = {n}")
            restarts.append(_rolls(ctx, targets[("graceful", n)], settings))
    finally:
        for target in targets.values():
            target.stop()
    return {
        "cores": cores,
        "counts": settings.counts,
        "rounds": settings.rounds,
        "duration": settings.duration,
        "connections": settings.connections,
        "threads": settings.threads,
        "runs": {kind: {str(n): v for n, v in by_n.items()} for kind, by_n in runs.items()},
        **summarise(runs, settings.counts, cores, settings.threads),
        "restarts": restarts,
        "restart_duration": settings.restart_duration,
        # On a shared machine the 1-minute load says how much else ran.
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def round_order(counts: list[int], r: int) -> list[tuple[str, int]]:
    """
    The runs of round C{r}: the counts in an order that rotates from round
    to round, and at each count graceful and the reference back to back (the
    pair the ratio compares), which of the two goes first alternating.
    """
    shift = r % len(counts)
    order = []
    for n in counts[shift:] + counts[:shift]:
        # By the count's own index, not its place in this round: each
        # count's pair then alternates from one round to the next.
        kinds = KINDS if (r + counts.index(n)) % 2 == 0 else KINDS[::-1]
        order += [(kind, n) for kind in kinds]
    return order


def _wrk(ctx: Context, target: _Group, duration: float, settings: Settings, what: str) -> Wrk:
    return Wrk(
        f"http://127.0.0.1:{target.port}/", duration, settings.connections,
        ctx.workdir / f"wrk-workers-{what}-{target.name}.log", threads=settings.threads,
    )


def _measure(ctx: Context, target: _Group, settings: Settings) -> dict | None:
    """
    One wrk run: req/s, failures, CPU per request of the whole group (the
    master's or parent's included), and how many serving processes worked.
    """
    serving = target.serving()
    before = _cpu_by_pid(target)
    result = _wrk(ctx, target, settings.duration, settings, "round").result()
    after = _cpu_by_pid(target)
    if result is None:
        return None
    cpu = sum(after.get(p, 0.0) - before.get(p, 0.0) for p in after)
    return {
        "rps": result["rps"],
        "requests": result["requests"],
        "failed": result["failed"],
        "p99_ms": result["p99_us"] / 1000,
        "cpu_us_per_request": cpu / result["requests"] * 1e6 if result["requests"] else None,
        "busy": _busy(before, after, serving),
    }


def _restart_counts(counts: list[int]) -> list[int]:
    "Rolls at 1 (one process re-executing), the target's count and the most."
    return sorted({c for c in (1, TARGET_WORKERS, max(counts)) if c in counts})


def _rolls(ctx: Context, target: _Group, settings: Settings) -> dict:
    """
    SIGUSR1 every few seconds under wrk: with workers the master rolls its
    workers; with one process that process hands over to a new one.  Counts
    wrk's requests and failures and whether every serving process was
    replaced.
    """
    first = target.serving()
    wrk = _wrk(ctx, target, settings.restart_duration, settings, "rolls")
    interval = settings.restart_duration / (settings.restarts + 1)
    sent = 0
    for _ in range(settings.restarts):
        time.sleep(interval)
        if target.workers > 1:
            os.kill(target.proc.pid, signal.SIGUSR1)
        else:
            # One process serves and re-executes itself: signal the one
            # answering now (it is the newest generation).
            pid = probe_pid(target.port)
            if pid is None:
                continue
            target.proc.remember(pid)
            os.kill(pid, signal.SIGUSR1)
        sent += 1
    result = wrk.result() or {"requests": 0, "failed": None, "rps": 0.0}
    # Every process serving at the end is new, and there are as many as
    # before: bounded wait for the last roll to finish.
    deadline = time.monotonic() + 20.0
    last = _answering(target)
    while time.monotonic() < deadline and (last & first or len(last) < target.workers):
        time.sleep(0.2)
        last = _answering(target)
    return {
        "workers": target.workers,
        "restarts": sent,
        "requests": result["requests"],
        "failed": result["failed"],
        "rps": result["rps"],
        "replaced": not (last & first) and len(last) >= target.workers,
    }


def _answering(target: _Group) -> set[int]:
    "Pids answering C{/pid} on fresh connections, a bounded number of probes."
    seen: set[int] = set()
    for _ in range(8 * target.workers):
        pid = probe_pid(target.port)
        if pid:
            seen.add(pid)
        if len(seen) >= target.workers:
            break
    return seen


# -- numbers ------------------------------------------------------------------


def _spread(values: list[float]) -> dict:
    return {
        "median": _stats.median(values),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "runs": [round(v) for v in values],
    }


def _paired(top: list[dict | None], bottom: list[dict | None]) -> list[float]:
    "Round-by-round ratios of two servers' req/s, rounds where both ran."
    return [t["rps"] / b["rps"] for t, b in zip(top, bottom) if t and b and b["rps"]]


def _paired_cpu(top: list[dict | None], bottom: list[dict | None]) -> list[float]:
    """
    Round-by-round ratios of CPU per request, the bottom's over the top's
    (above 1: the top is cheaper), like req/s ratios read.
    """
    return [
        b["cpu_us_per_request"] / t["cpu_us_per_request"]
        for t, b in zip(top, bottom)
        if t and b and t["cpu_us_per_request"] and b["cpu_us_per_request"]
    ]


def per_doubling(factor: float | None, workers: int) -> float | None:
    "The factor per doubling of N that compounds to C{factor} at N."
    if factor is None or workers <= 1 or factor <= 0:
        return None
    return float(factor ** (1 / math.log2(workers)))


def summarise(runs: dict[str, dict[int, list[dict | None]]], counts: list[int], cores: int,
              threads: int) -> dict:
    """
    Rows per count (medians, spreads, round-by-round ratios) and the target
    row's verdict.
    """
    rows = []
    for n in counts:
        row: dict = {"workers": n, "wrk_shares_cores": wrk_shares(n, threads, cores)}
        for kind in KINDS:
            done = [x for x in runs[kind][n] if x]
            row[kind] = {
                **_spread([x["rps"] for x in done]),
                "cpu_us_per_request": _stats.median([x["cpu_us_per_request"] for x in done]),
                "busy": min((x["busy"] for x in done), default=0),
                "failed": sum(x["failed"] for x in done),
            }
            if 1 in runs[kind] and n != 1:
                scale = _paired(runs[kind][n], runs[kind][1])
                row[kind]["scale"] = _stats.median(scale)
                row[kind]["scale_runs"] = [round(x, 3) for x in scale]
                row[kind]["per_doubling"] = per_doubling(row[kind]["scale"], n)
        ratios = _paired(runs["graceful"][n], runs["plain"][n])
        row["ratio"] = _stats.median(ratios)
        row["ratio_runs"] = [round(x, 3) for x in ratios]
        # What req/s cannot say on a busy machine: whether graceful spends
        # more CPU on a request, which other work barely changes.
        cpu = _paired_cpu(runs["graceful"][n], runs["plain"][n])
        row["cpu_ratio"] = _stats.median(cpu)
        row["cpu_ratio_runs"] = [round(x, 3) for x in cpu]
        rows.append(row)
    target = next((r for r in rows if r["workers"] == TARGET_WORKERS), None)
    verdict = None
    if target is not None and target["ratio"] is not None:
        verdict = {
            "workers": TARGET_WORKERS,
            "threshold": TARGET_RATIO,
            "ratio": target["ratio"],
            "ratio_runs": target["ratio_runs"],
            "cpu_ratio": target["cpu_ratio"],
            "met": target["ratio"] >= TARGET_RATIO,
        }
    return {"rows": rows, "target": verdict}


# -- the report -----------------------------------------------------------------


def _rps(cell: dict) -> str:
    if cell["median"] is None:
        return "–"
    return f"{cell['median']:,.0f} ({cell['min']:,.0f}–{cell['max']:,.0f})"


def _x(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def tables(w: dict) -> list[str]:
    "The workers section of results.md."
    lines = [
        f"wrk -t{w['threads']} -c{w['connections']} keep-alive on `/`, {w['duration']:g} s a run, "
        f"{w['rounds']} interleaved rounds; {w['cores']} usable cores"
        + (f"; 1-minute load average {w['load_average'][0]:g} before, {w['load_average'][1]:g} "
           "after" if w.get("load_average") else "")
        + ". req/s: median of the "
        "rounds (lowest–highest); ratios: median of each round's ratio between two runs a "
        "few seconds apart.",
        "",
    ]
    t = w.get("target")
    if t:
        # One decimal: a 94.6% must not print as a "95%" that failed.
        lines += [
            f"Target: graceful `workers = {t['workers']}` at {100 * t['threshold']:.0f}% or more "
            f"of {t['workers']} plain twisted.web processes sharing one socket, same run: "
            f"**{100 * t['ratio']:.1f}%, {'met' if t['met'] else 'not met'}** "
            f"(rounds: {', '.join(f'{100 * x:.1f}%' for x in t['ratio_runs'])})"
            + (f"; by CPU per request {100 * t['cpu_ratio']:.1f}%" if t.get("cpu_ratio") else "")
            + ".",
            "",
        ]
    lines += [
        "| N | graceful, workers = N: req/s | plain twisted.web, N processes, one socket: req/s "
        "| graceful ÷ plain, req/s / CPU | × its N = 1, graceful / plain | per doubling, graceful / plain "
        "| CPU µs / request, graceful / plain | processes busy, graceful / plain "
        "| failed | wrk shares the cores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in w["rows"]:
        g, p = row["graceful"], row["plain"]
        n = row["workers"]
        shares = (
            f"yes: {n} + {w['threads']} wrk threads on {w['cores']} cores"
            if row["wrk_shares_cores"] else "no"
        )
        lines.append(
            f"| {n} | {_rps(g)} | {_rps(p)} | {_x(row['ratio'])} / {_x(row.get('cpu_ratio'))} "
            f"| {_x(g.get('scale', 1.0 if n == 1 else None))} / "
            f"{_x(p.get('scale', 1.0 if n == 1 else None))} "
            f"| {_x(g.get('per_doubling'))} / {_x(p.get('per_doubling'))} "
            f"| {_x(g['cpu_us_per_request'], 1)} / {_x(p['cpu_us_per_request'], 1)} "
            f"| {g['busy']} / {p['busy']} of {n} | {g['failed'] + p['failed']} | {shares} |"
        )
    if any(r["wrk_shares_cores"] for r in w["rows"]):
        lines += [
            "",
            "Where wrk shares the cores, the servers and the load generator compete for CPU: "
            "a factor per doubling below 1.5 there says as much about the machine as about the "
            "server, and the plain reference beside it shows how much. The graceful ÷ plain "
            "column compares the two under the same conditions.",
        ]
    if w.get("restarts"):
        lines += [
            "",
            f"SIGUSR1 under load ({w['restart_duration']:g} s of the same wrk; workers = 1 hands "
            "over to a new process, workers = N rolls its workers one at a time):",
            "",
            "| graceful | restarts | requests | failed | req/s | every serving process replaced |",
            "|---|---|---|---|---|---|",
        ]
        for r in w["restarts"]:
            lines.append(
                f"| workers = {r['workers']} | {r['restarts']} | {r['requests']:,} "
                f"| {r['failed'] if r['failed'] is not None else 'no wrk result'} "
                f"| {r['rps']:,.0f} | {'yes' if r['replaced'] else '**no**'} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    from .__main__ import main as suite

    return suite(["--only", "workers", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
