"""
The measurements: restart under load, overhead, and scale.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import processes as _procs
from harness.probes import probe_pid, wait_answering

from . import _stats
from ._load import Sampler, Wrk
from ._progress import Progress
from ._targets import (
    OVERHEAD_TARGETS,
    ROOT,
    Context,
    Graceful,
    Restart,
    Target,
)

MODES = ("keepalive", "close", "tls")
#: What the sampler's clients do in each mode: the same as wrk's load
#: ("mixed" is the smoke mode's, with no wrk).
SAMPLER_MIX = {
    "keepalive": "keepalive=4", "close": "close=4", "tls": "tls=4",
    "mixed": "keepalive=2,close=2",
}


@dataclass
class RestartPlan:
    """
    When to restart: the first restart C{first_at} seconds into the load,
    each next one C{interval} seconds after the previous signal but never
    before C{min_gap} seconds after the previous restart ended (the old
    generation gone), and C{tail} seconds of load after the last one.  Every
    server gets all its restarts; the run lasts as long as that takes, up to
    C{max_duration}.
    """

    restarts: int = 5
    interval: float = 2.5
    first_at: float = 2.5
    tail: float = 2.5
    min_gap: float = 0.5
    max_duration: float = 120.0
    connections: int = 32
    use_wrk: bool = True
    mix: str | None = None  # the sampler's clients; default: SAMPLER_MIX[mode]

    @property
    def duration(self) -> float:
        "How long a run lasts when every restart ends within its interval."
        return self.first_at + (self.restarts - 1) * self.interval + self.tail


def _log_notes(text: str, limit: int = 8) -> list[str]:
    "Lines of a server's log that say something went wrong."
    hits = [
        line.strip()[:200]
        for line in text.splitlines()
        if re.search(r"failed|error|Traceback|refused|timed out|aborted|\[(alert|crit|emerg)\]",
                     line, re.I)
    ]
    return hits[:limit]


def _restart_loop(
    target: Target,
    plan: RestartPlan,
    t0: float,
    progress: Progress,
    label: str,
) -> tuple[list[Restart], int, float]:
    """
    Restart C{plan.restarts} times on C{plan}'s schedule from C{t0}, then
    keep the load on for C{plan.tail}; the records, how many restarts did
    not fit in C{plan.max_duration}, and how long the load ran.
    """
    records: list[Restart] = []
    skipped = 0
    limit = t0 + plan.max_duration

    def tick() -> None:
        progress.tick(
            f"{label}: t={time.monotonic() - t0:4.1f}s restarts {len(records)}/{plan.restarts}"
        )

    target.ctx.tick = tick
    next_at = t0 + plan.first_at
    for _ in range(plan.restarts):
        while time.monotonic() < next_at:
            tick()
            time.sleep(0.02)
        if time.monotonic() > limit - plan.tail:
            skipped += 1
            continue
        record = target.restart()
        records.append(record)
        next_at = max(record.signal + plan.interval, time.monotonic() + plan.min_gap)
        tick()
    end = min(limit, time.monotonic() + plan.tail)
    while time.monotonic() < end:
        tick()
        time.sleep(0.05)
    return records, skipped, time.monotonic() - t0


def run_restart(
    ctx: Context,
    progress: Progress,
    target_cls: type[Target],
    mode: str,
    plan: RestartPlan,
    out: Path,
) -> dict:
    """
    One server under load (wrk and the sampler) while it restarts
    C{plan.restarts} times.
    """
    port = _procs.free_ports(1)[0]
    tls = mode == "tls"
    target = target_cls(ctx, port, tls)
    label = f"{target.name} {mode}"
    samples_path = out / "samples" / f"{target.name}-{mode}.csv"
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    wrk = None
    sampler = None
    load_before = os.getloadavg()[0]
    try:
        target.start()
        time.sleep(0.2)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
        sampler = Sampler(
            ctx.python, [port], plan.mix or SAMPLER_MIX[mode], plan.max_duration + 1,
            samples_path, ctx.env(), ctx.workdir / f"sampler-{target.name}-{mode}.log",
        )
        if plan.use_wrk:
            wrk = Wrk(url, plan.max_duration + 1, plan.connections,
                      ctx.workdir / f"wrk-{target.name}-{mode}.log", close=mode == "close")
        t0 = time.monotonic()
        records, skipped, elapsed = _restart_loop(target, plan, t0, progress, label)
        rss_last = target.rss_mb()
        for load in (wrk, sampler):
            if load is not None:
                load.stop()
        wrk_result = wrk.result() if wrk else None
        samples = sampler.result()
        log = target.log_text()
    finally:
        _stop_run(target, wrk, sampler)
    windows = [(r.signal, r.window_end) for r in records]
    return {
        "target": target.name,
        "software": target.software,
        "operation": target.operation,
        "mode": mode,
        "port": port,
        "t0": t0,
        "duration": elapsed,
        "connections": plan.connections if plan.use_wrk else 0,
        "wrk": wrk_result,
        "sampler": _stats.sampler_summary(samples, windows),
        "restarts": [r.as_dict() for r in records],
        "skipped_restarts": skipped,
        "rss_generations_mb": [round(r.rss_old_mb, 1) for r in records] + [round(rss_last, 1)],
        "notes": _log_notes(log),
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "samples_file": str(samples_path.relative_to(out)),
        "_samples": samples,
    }


# -- overhead ----------------------------------------------------------------


def _cpu(target: Target) -> float:
    return sum(_procs.cpu_seconds(p) for p in target.generation())


def run_overhead(
    ctx: Context,
    progress: Progress,
    names: list[str],
    rounds: int,
    duration: float,
    connections: int,
) -> dict:
    """
    Hello-world throughput of every server in turn, several interleaved
    rounds, keep-alive and Connection: close; medians per server.
    """
    targets: dict[str, Target] = {}
    runs: dict[str, dict[str, list[dict]]] = {}
    try:
        ports = _procs.free_ports(len(names))
        for name, port in zip(names, ports):
            progress.tick(f"starting {name}")
            targets[name] = OVERHEAD_TARGETS[name](ctx, port, False)
            targets[name].start()
        for name, target in targets.items():  # warm up
            progress.tick(f"warming up {name}")
            Wrk(f"http://127.0.0.1:{target.port}/", 1, connections,
                ctx.workdir / f"wrk-warmup-{name}.log").result()
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for mode in ("keepalive", "close"):
                for name in order:
                    progress.tick(f"round {r + 1}/{rounds} {mode}: {name}")
                    target = targets[name]
                    cpu0 = _cpu(target)
                    result = Wrk(
                        f"http://127.0.0.1:{target.port}/", duration, connections,
                        ctx.workdir / f"wrk-overhead-{name}.log", close=mode == "close",
                    ).result()
                    cpu1 = _cpu(target)
                    if result is None:
                        continue
                    result["cpu_us_per_request"] = (
                        (cpu1 - cpu0) / result["requests"] * 1e6 if result["requests"] else None
                    )
                    runs.setdefault(name, {}).setdefault(mode, []).append(result)
        software = {name: t.software for name, t in targets.items()}
    finally:
        for target in targets.values():
            target.stop()
    summary: dict[str, dict[str, dict]] = {}
    for name, by_mode in runs.items():
        for mode, results in by_mode.items():
            summary.setdefault(name, {})[mode] = {
                "rps": _stats.median([x["rps"] for x in results]),
                "rps_runs": [round(x["rps"]) for x in results],
                "cpu_us_per_request": _stats.median([x["cpu_us_per_request"] for x in results]),
                "p50_ms": _stats.median([x["p50_us"] / 1000 for x in results]),
                "p99_ms": _stats.median([x["p99_us"] / 1000 for x in results]),
                "failed": sum(x["failed"] for x in results),
            }
    # Ratios to twisted.web round by round (the two ran back to back, on
    # the same machine state), then their median: steadier than a ratio of
    # medians when the machine's load moves between rounds.
    base_runs = runs.get("twisted.web", {})
    for name, by_mode in runs.items():
        for mode, results in by_mode.items():
            ref = base_runs.get(mode, [])
            pairs = list(zip(ref, results))
            row = summary[name][mode]
            row["rps_ratio"] = _stats.median(
                [x["rps"] / r["rps"] for r, x in pairs if r["rps"]]
            )
            row["cpu_ratio"] = _stats.median([
                r["cpu_us_per_request"] / x["cpu_us_per_request"]
                for r, x in pairs
                if r["cpu_us_per_request"] and x["cpu_us_per_request"]
            ])
            row["cpu_ratio_runs"] = [
                round(r["cpu_us_per_request"] / x["cpu_us_per_request"], 3)
                for r, x in pairs
                if r["cpu_us_per_request"] and x["cpu_us_per_request"]
            ]
    progress.tick("in-process cost per request (benchmarks/micro.py)")
    return {
        "rounds": rounds,
        "duration": duration,
        "connections": connections,
        "software": software,
        "summary": summary,
        "micro": run_micro(ctx),
    }


def run_micro(ctx: Context) -> dict:
    """
    benchmarks/micro.py: microseconds of Python per request, without sockets.
    """
    import json

    try:
        done = subprocess.run(
            [ctx.python, "-m", "benchmarks.micro"], cwd=ROOT, env=ctx.env(),
            capture_output=True, text=True, timeout=120,
        )
    except subprocess.TimeoutExpired:
        return {"error": "benchmarks.micro took over 120 s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    try:
        return {"us_per_request": json.loads(done.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        return {"error": f"unexpected output: {done.stdout[:200]!r}"}


# -- profile -------------------------------------------------------------------


def py_spy(python: str) -> str | None:
    candidate = Path(python).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def run_profile(
    ctx: Context,
    progress: Progress,
    names: list[str],
    duration: float,
    connections: int,
    out: Path,
    close: bool = False,
) -> dict:
    """
    Where the time goes: py-spy samples each server under the same wrk load
    (keep-alive, or C{Connection: close} with C{close}).
    """
    exe = py_spy(ctx.python)
    if exe is None:
        # By server, as profile_lines reads it.
        return {name: {"error": "py-spy is not installed (benchmarks/setup installs it)"} for name in names}
    profiles = {}
    for name in names:
        progress.tick(f"profiling {name} ({'Connection: close' if close else 'keep-alive'})")
        port = _procs.free_ports(1)[0]
        target = OVERHEAD_TARGETS[name](ctx, port, False)
        try:
            target.start()
            Wrk(f"http://127.0.0.1:{port}/", 1, connections, ctx.workdir / "wrk-profile.log").result()
            raw = out / f"profile-{name}-{'close' if close else 'keepalive'}.txt"
            wrk = Wrk(f"http://127.0.0.1:{port}/", duration + 2, connections,
                      ctx.workdir / "wrk-profile.log", close=close)
            time.sleep(0.5)
            subprocess.run(
                [exe, "record", "--nonblocking", "-r", "200", "-d", str(int(duration)),
                 "-f", "raw", "-o", str(raw), "-p", str(next(iter(target.generation())))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration + 30,
            )
            wrk.result()
            profiles[name] = _folded_summary(raw)
            profiles[name]["file"] = raw.name
            profiles[name]["load"] = "Connection: close" if close else "keep-alive"
        except Exception as e:
            profiles[name] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            target.stop()
    return profiles


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _frame_key(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def _folded_summary(path: Path, top: int = 25) -> dict:
    """
    From py-spy's folded stacks: total samples, the functions with the most
    samples of their own, and the share of samples inside each function.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [_frame_key(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for key in set(frames):
            inclusive[key] = inclusive.get(key, 0) + count
    return {
        "samples": total,
        "own": sorted(own.items(), key=lambda kv: -kv[1])[:top],
        "inclusive": sorted(inclusive.items(), key=lambda kv: -kv[1]),
    }


# -- scale -----------------------------------------------------------------------


class GracefulConfig(Graceful):
    """
    graceful under twistd, from a generated config: C{servers} servers
    sharing C{ports} ports (one port each when they are as many).
    """

    name = "graceful-twistd"
    software = "twistd -n graceful --config (generated)"

    def __init__(self, ctx: Context, ports: list[int], servers: int) -> None:
        super().__init__(ctx, ports[0], False)
        self.ports = ports
        self.servers = servers
        self.config = ctx.workdir / f"scale-{len(ports)}.toml"

    def command(self) -> list[str]:
        groups: list[list[int]] = [[] for _ in range(self.servers)]
        for i, port in enumerate(self.ports):
            groups[i % self.servers].append(port)
        lines = ["[graceful]", "drain_timeout = 30.0", "ready_timeout = 30.0", ""]
        for i, ports in enumerate(groups):
            lines += [
                f"[servers.s{i}]",
                'app = "benchmarks.apps.hello:router"',
                'host = "127.0.0.1"',
                f"ports = {ports}",
                "",
            ]
        self.config.write_text("\n".join(lines))
        twistd = Path(self.ctx.python).parent / "twistd"
        script = str(twistd) if twistd.exists() else (shutil.which("twistd") or "twistd")
        return [self.ctx.python, script, "-n", "--pidfile=", "graceful", "--config", str(self.config)]

    def cwd(self) -> Path:
        return self.ctx.workdir

    def ready_times(self) -> list[float]:
        "graceful's own measure: 'is ready after X s' in the old process's log."
        return [float(x) for x in re.findall(r"is ready after ([0-9.]+)s", self.log_text())]


def _restart_row(records: list[Restart]) -> dict:
    handoffs = [r.handoff for r in records if r.handoff is not None]
    gone = [r.old_gone for r in records if r.old_gone is not None]
    return {
        "restarts": len(records),
        "restarts_ok": sum(r.ok for r in records),
        "handoff_median": _stats.median(handoffs),
        "handoff_max": max(handoffs, default=None),
        "old_gone_median": _stats.median(gone),
        "old_gone_max": max(gone, default=None),
        "new_cpu_median": _stats.median([r.new_cpu for r in records if r.new_cpu is not None]),
        "restart_list": [r.as_dict() for r in records],
        "load": round(os.getloadavg()[0], 2),
    }


def _collect_run(target, wrk, sampler, records, skipped: int, elapsed: float) -> dict:
    """
    Stop the loads of one restart run and summarize it: the fields every
    scale row has.
    """
    rss = target.rss_mb()
    wrk.stop()
    sampler.stop()
    windows = [(r.signal, r.window_end) for r in records]
    return {
        **_restart_row(records),
        "skipped_restarts": skipped,
        "duration": elapsed,
        "wrk": wrk.result(),
        "sampler": _stats.sampler_summary(sampler.result(), windows),
        "rss_mb": round(rss, 1),
        "notes": _log_notes(target.log_text()),
    }


def _stop_run(target, wrk, sampler) -> None:
    for load in (wrk, sampler):
        if load is not None:
            load.proc.kill()
    target.stop()


def run_scale_ports(
    ctx: Context, progress: Progress, counts: list[int], plan: RestartPlan, out: Path
) -> list[dict]:
    rows = []
    for n in counts:
        progress.step(f"scale: {n} port(s)")
        ports = _procs.free_ports(n)
        target = GracefulConfig(ctx, ports, servers=n)
        wrk = sampler = None
        samples_path = out / "samples" / f"scale-ports-{n}.csv"
        samples_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            began = time.monotonic()
            target.start()
            for port in ports:
                wait_answering(port, False, 30.0, target.proc)
            startup = time.monotonic() - began
            sampler = Sampler(ctx.python, ports, "close=4", plan.max_duration + 1, samples_path,
                              ctx.env(), ctx.workdir / f"sampler-scale-{n}.log")
            wrk = Wrk(f"http://127.0.0.1:{ports[0]}/", plan.max_duration + 1, plan.connections,
                      ctx.workdir / f"wrk-scale-{n}.log")
            t0 = time.monotonic()
            records, skipped, elapsed = _restart_loop(target, plan, t0, progress, f"{n} port(s)")
            serving = target.serving
            ports_ok = sum(probe_pid(p) == serving for p in ports)
            run = _collect_run(target, wrk, sampler, records, skipped, elapsed)
            ready = target.ready_times()
        finally:
            _stop_run(target, wrk, sampler)
        rows.append({
            "ports": n,
            "servers": n,
            "startup": startup,
            "ready_median": _stats.median(ready),
            "ports_answering_new": ports_ok,
            **run,
        })
    return rows


def run_scale_connections(
    ctx: Context, progress: Progress, counts: list[int], plan: RestartPlan, out: Path
) -> list[dict]:
    rows = []
    for c in counts:
        progress.step(f"scale: {c} connections")
        port = _procs.free_ports(1)[0]
        target = Graceful(ctx, port, False)
        wrk = sampler = None
        samples_path = out / "samples" / f"scale-connections-{c}.csv"
        samples_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.start()
            sampler = Sampler(ctx.python, [port], "keepalive=2,close=2", plan.max_duration + 1,
                              samples_path, ctx.env(), ctx.workdir / f"sampler-conns-{c}.log")
            wrk = Wrk(f"http://127.0.0.1:{port}/", plan.max_duration + 1, c,
                      ctx.workdir / f"wrk-conns-{c}.log")
            t0 = time.monotonic()
            records, skipped, elapsed = _restart_loop(
                target, plan, t0, progress, f"{c} connections"
            )
            run = _collect_run(target, wrk, sampler, records, skipped, elapsed)
        finally:
            _stop_run(target, wrk, sampler)
        rows.append({"connections": c, **run})
    return rows


def machine(python: str) -> dict:
    """
    What ran the benchmark.
    """
    import os
    import platform

    def version(args: list[str]) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except Exception:
            return "missing"

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    from ._load import wrk_path
    from ._targets import nginx_path

    packages = version([
        python, "-c",
        "import importlib.metadata as m\n"
        "out=[]\n"
        "for n in ('Twisted','gunicorn','uvicorn','uvloop','httptools','pyOpenSSL'):\n"
        "    try: out.append(f'{n} {m.version(n)}')\n"
        "    except Exception: pass\n"
        "print(', '.join(out))",
    ])
    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": version([python, "--version"]),
        "packages": packages,
        "wrk": version([wrk_path() or "wrk", "--version"]).split(" Copyright")[0]
        if wrk_path() else "missing",
        "nginx": version([nginx_path() or "nginx", "-v"]) if nginx_path() else "missing",
        "commit": commit,
        "load_average": os.getloadavg(),
    }
