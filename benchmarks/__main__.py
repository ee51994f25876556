"""
graceful's benchmark: restart under load side by side with gunicorn, nginx
and plain Twisted; overhead against plain twisted.web, uvicorn and
gunicorn; how restarts scale with ports and connections; how workers scale
beside plain twisted.web processes sharing one socket.

    benchmarks/setup              # once: wrk, nginx, and a venv with the peers
    benchmarks/run                # the full suite (about 13 minutes on 2 cores)
    benchmarks/run --smoke        # one restart, a few seconds, Python only

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from harness import processes as _procs

from . import _cpu, _report, _scenarios, asgi_cpu, workers
from ._load import wrk_path
from ._progress import Progress
from ._targets import RESTART_TARGETS, Context, nginx_path

HERE = Path(__file__).resolve().parent
SECTIONS = ("restart", "overhead", "scale", "workers", "asgi")
#: What runs without --only (asgi, about 7 minutes on 2 cores, is asked for).
DEFAULT_SECTIONS = ("restart", "overhead", "scale", "workers")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _counts(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in _csv(text)})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}")
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"counts must be 1 or more: {text!r}")
    return counts


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="graceful's benchmark; results go to benchmarks/results/TIMESTAMP/.",
    )
    parser.add_argument("--smoke", action="store_true",
                        help="one graceful restart under the Python sampler only, a few seconds")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/TIMESTAMP)")
    parser.add_argument("--only", type=_csv, default=list(DEFAULT_SECTIONS),
                        help=f"sections to run, from {','.join(SECTIONS)}")
    parser.add_argument("--targets", type=_csv, default=list(RESTART_TARGETS),
                        help=f"restart targets, from {','.join(RESTART_TARGETS)}")
    parser.add_argument("--modes", type=_csv, default=list(_scenarios.MODES),
                        help="loads for the restart section: keepalive,close,tls")
    parser.add_argument("--restarts", type=int, default=5, help="restarts per run")
    parser.add_argument("--interval", type=float, default=2.5,
                        help="seconds from one restart signal to the next (at least 0.5 s "
                             "after the previous restart ended), before the first, and after "
                             "the last")
    parser.add_argument("--max-duration", type=float, default=120.0,
                        help="upper bound of one restart run's load, in seconds")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("-r", "--rounds", type=int, default=5,
                        help="overhead and workers: interleaved rounds")
    parser.add_argument("--overhead-duration", type=float, default=3.0,
                        help="overhead: seconds of one wrk run")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="py-spy profile of graceful and twisted.web: auto = when graceful "
                             "is below 95%% of twisted.web")
    parser.add_argument("--ports", type=lambda t: [int(x) for x in _csv(t)], default=[1, 4, 16, 64],
                        help="scale: numbers of ports (one server each), e.g. 1,4,16,64")
    parser.add_argument("--scale-connections", type=lambda t: [int(x) for x in _csv(t)],
                        default=[10, 100, 1000],
                        help="scale: numbers of wrk connections, e.g. 10,100,1000")
    parser.add_argument("--workers", dest="worker_counts", type=_counts, default=None,
                        help="workers: counts to measure, e.g. 1,2,4 (default 1, 2, 4, ... "
                             "up to the usable cores)")
    parser.add_argument("--workers-duration", type=float, default=4.0,
                        help="workers: seconds of one wrk run")
    parser.add_argument("--workers-connections", type=int, default=64,
                        help="workers: wrk connections")
    parser.add_argument("--workers-threads", type=int, default=None,
                        help="workers: wrk threads (default 2, a quarter of the cores on "
                             "machines with more than 8)")
    parser.add_argument("--workers-restarts", type=int, default=4,
                        help="workers: SIGUSR1s in 15 s of load at workers = 1, 2 and the "
                             "most (0: none)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter of the Python servers (default: this one)")
    args = parser.parse_args(argv)
    for section in args.only:
        if section not in SECTIONS:
            parser.error(f"unknown section {section!r}")
    for target in args.targets:
        if target not in RESTART_TARGETS:
            parser.error(f"unknown target {target!r}")
    return args


def _available(args: argparse.Namespace, progress: Progress | None = None) -> list[str]:
    """
    The restart targets whose software is here; says which are skipped.
    """
    skipped = []
    targets = []
    for name in args.targets:
        missing = None
        if name.startswith("nginx") and nginx_path() is None:
            missing = "nginx"
        if name.startswith("gunicorn") and not _importable(args.python, "gunicorn"):
            missing = "gunicorn"
        if missing:
            skipped.append(f"{name} ({missing} missing: run benchmarks/setup)")
        else:
            targets.append(name)
    if skipped:
        print("skipping: " + "; ".join(skipped), file=sys.stderr)
    return targets


def _importable(python: str, module: str) -> bool:
    import subprocess

    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    began = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (args.out or HERE / "results" / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="logs-", dir=out))
    ctx = Context(python=args.python, workdir=workdir)
    _procs.install_cleanup()

    if args.smoke:
        sections = ["restart"]
        targets = ["graceful"]
        modes = ["mixed"]
        plan = _scenarios.RestartPlan(
            restarts=1, interval=1.5, first_at=1.5, tail=1.5, max_duration=30.0, use_wrk=False
        )
    else:
        sections = args.only
        if wrk_path() is None and any(s in sections for s in SECTIONS):
            print("benchmarks: wrk is not installed: run benchmarks/setup first "
                  "(or --smoke, which needs only Python)", file=sys.stderr)
            return 2
        targets = _available(args) if "restart" in sections else []
        modes = [m for m in args.modes if m in _scenarios.MODES]
        plan = _scenarios.RestartPlan(
            restarts=args.restarts, interval=args.interval, first_at=args.interval,
            tail=args.interval, max_duration=args.max_duration, connections=args.connections,
        )
    scale_plan = _scenarios.RestartPlan(
        restarts=3, interval=3.0, first_at=2.0, tail=2.0, max_duration=60.0
    )
    overhead_names = ["twisted.web", "graceful", "graceful-resource", "uvicorn", "gunicorn"]
    if "overhead" in sections:
        overhead_names = [
            n for n in overhead_names
            if n not in ("uvicorn", "gunicorn") or _importable(args.python, n)
        ]

    steps = len(targets) * len(modes) if "restart" in sections else 0
    steps += 1 if "overhead" in sections else 0
    steps += len(args.ports) + len(args.scale_connections) if "scale" in sections else 0
    steps += 1 if "workers" in sections else 0
    steps += 1 if "asgi" in sections else 0
    progress = Progress(steps + 1)
    results: dict = {
        "command": "python -m benchmarks " + shlex.join(argv) if argv else "python -m benchmarks",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": _scenarios.machine(args.python),
        "restart_plan": asdict(plan),
        "scale_plan": asdict(scale_plan),
    }
    try:
        if "restart" in sections:
            results["restart"] = []
            for name in targets:
                for mode in modes:
                    progress.step(f"restart under load: {name} {mode}")
                    try:
                        run = _scenarios.run_restart(
                            ctx, progress, RESTART_TARGETS[name], mode, plan, out
                        )
                    except Exception as e:  # one broken peer must not sink the rest
                        _failed(results, progress, f"restart under load: {name} {mode}", e)
                        continue
                    results["restart"].append(run)
                    progress.note(_summary_line(run))
        if "overhead" in sections:
            progress.step("overhead")
            try:
                results["overhead"] = _scenarios.run_overhead(
                    ctx, progress, overhead_names, args.rounds, args.overhead_duration,
                    args.connections,
                )
            except Exception as e:
                _failed(results, progress, "overhead", e)
        if results.get("overhead"):
            g = results["overhead"]["summary"].get("graceful", {}).get("keepalive", {})
            ratio = g.get("rps_ratio")
            progress.note(
                f"overhead: graceful at {ratio * 100:.0f}% of twisted.web (keep-alive req/s), "
                f"{(g.get('cpu_ratio') or 0) * 100:.0f}% by CPU/request"
                if ratio else "overhead: no ratio"
            )
            # req/s moves with whatever else the machine runs; CPU per
            # request does not: it decides whether to look closer.
            by_mode = results["overhead"]["summary"].get("graceful", {})
            cpu_ratios = {
                mode: row["cpu_ratio"] for mode, row in by_mode.items()
                if row.get("cpu_ratio") is not None
            }
            low = any(r < 0.95 for r in cpu_ratios.values())
            if cpu_ratios and (args.profile == "always" or (args.profile == "auto" and low)):
                # Profile the load where graceful does worst.
                worst = min(cpu_ratios, key=lambda mode: cpu_ratios[mode])
                results["profile"] = _scenarios.run_profile(
                    ctx, progress, ["twisted.web", "graceful"], 8.0, args.connections, out,
                    close=worst == "close",
                )
        if "scale" in sections:
            try:
                results["scale_ports"] = _scenarios.run_scale_ports(
                    ctx, progress, args.ports, scale_plan, out
                )
            except Exception as e:
                _failed(results, progress, "scale: ports", e)
            try:
                results["scale_connections"] = _scenarios.run_scale_connections(
                    ctx, progress, args.scale_connections, scale_plan, out
                )
            except Exception as e:
                _failed(results, progress, "scale: connections", e)
        if "asgi" in sections:
            progress.step("asgi: CPU per request, interleaved")
            try:
                asgi_cpu.PYTHON[:] = [args.python]
                table = asgi_cpu.run(
                    args.rounds, args.overhead_duration, ["raw", "fastapi"],
                    ["keepalive", "close"], list(asgi_cpu.COMMANDS), workdir,
                )
                results["asgi"] = table
                checked = _cpu.verdicts(table, asgi_cpu.TARGETS)
                (out / "asgi.md").write_text(
                    "\n".join([*asgi_cpu.summary(table), "", "Targets:", *checked]) + "\n"
                )
            except Exception as e:
                _failed(results, progress, "asgi", e)
        if "workers" in sections:
            progress.step("workers")
            cores = workers.usable_cores()
            settings = workers.Settings(
                counts=args.worker_counts or workers.default_counts(cores),
                rounds=args.rounds,
                duration=args.workers_duration,
                connections=args.workers_connections,
                threads=args.workers_threads or workers.default_threads(cores),
                restarts=args.workers_restarts,
            )
            try:
                results["workers"] = workers.run_workers(ctx, progress, settings)
            except Exception as e:
                _failed(results, progress, "workers", e)
            if results.get("workers", {}).get("target"):
                t = results["workers"]["target"]
                progress.note(
                    f"workers: graceful workers = {t['workers']} at {t['ratio'] * 100:.1f}% of "
                    f"plain twisted.web on one socket (target {t['threshold'] * 100:.0f}%: "
                    f"{'met' if t['met'] else 'NOT met'})"
                )
        progress.step("writing the report")
        if results.get("restart") and _report.plot(results["restart"], out / "latency.png"):
            results["plot"] = "latency.png"
        results["took"] = time.monotonic() - began
        (out / "results.md").write_text(_report.markdown(results))
        (out / "results.json").write_text(json.dumps(_public(results), indent=1, default=str))
        progress.finish()
    except KeyboardInterrupt:
        progress.note("interrupted: stopping every process the benchmark started")
        return 130
    finally:
        _procs.cleanup()
    print(f"results: {out / 'results.md'}")
    if results.get("plot"):
        print(f"plot:    {out / results['plot']}")
    return 0


def _failed(results: dict, progress: Progress, what: str, error: Exception) -> None:
    text = f"{type(error).__name__}: {error}".strip()
    results.setdefault("failures", []).append({"what": what, "error": text[:2000]})
    progress.note(f"  FAILED {what}: {text.splitlines()[0][:200]}")
    _procs.cleanup()


def _summary_line(run: dict) -> str:
    wrk = run["wrk"]
    handoffs = [r["handoff"] for r in run["restarts"] if r["handoff"] is not None]
    ok = sum(r["ok"] for r in run["restarts"])
    return (
        f"  {run['target']:<16} {run['mode']:<9} restarts {ok}/{len(run['restarts'])}"
        + (f"  wrk {wrk['requests']:>7,} req, {wrk['failed']:>5,} failed" if wrk else "")
        + f"  sampler {run['sampler']['requests']:>5,} req, {run['sampler']['failed']:>4} failed"
        + (f"  handoff max {max(handoffs):.3f}s" if handoffs else "")
    )


def _public(value):
    "Results without the in-memory samples (they are in samples/*.csv)."
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
