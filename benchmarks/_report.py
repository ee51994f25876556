"""
The results: a Markdown report and a PNG of latency over time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _stats
from .workers import tables as workers_tables


def _n(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}"


def _ms3(summary: dict) -> str:
    if not summary or not summary.get("count"):
        return "–"
    return " / ".join(_n(summary[k], 1 if summary[k] < 100 else 0) for k in ("p50", "p99", "max"))


def _wrk_failed(wrk: dict | None) -> str:
    if not wrk:
        return "–"
    parts = [f"{k} {wrk[k]}" for k in ("connect", "read", "write", "timeout", "status") if wrk[k]]
    return f"**{wrk['failed']:,}**" + (f" ({', '.join(parts)})" if parts else "")


def _sampler_failed(s: dict) -> str:
    if not s["failed"]:
        return "**0**"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
    return f"**{s['failed']}** ({kinds}; {s['failed_in_window']} in windows)"


def _rss(values: list[float]) -> str:
    values = [v for v in values if v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{values[0]:.0f} → {values[-1]:.0f} (max {max(values):.0f}, {len(values)} gen.)"


def _secs(middle: float | None, most: float | None) -> str:
    if middle is None:
        return "–"
    return f"{middle:.3f} / {most:.3f}"


def restart_tables(runs: list[dict]) -> list[str]:
    lines = [
        "| server | operation | load | restarts ok | seconds of load | wrk requests (req/s) | "
        "wrk failed | sampler requests | sampler failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        ok = sum(r["ok"] for r in run["restarts"])
        planned = len(run["restarts"]) + run.get("skipped_restarts", 0)
        wrk = run["wrk"]
        lines.append(
            f"| {run['target']} | {run['operation']} | {run['mode']} | {ok}/{planned} | "
            f"{run['duration']:.1f} | "
            + (f"{wrk['requests']:,} ({wrk['rps']:,.0f})" if wrk else "–")
            + f" | {_wrk_failed(wrk)} | {run['sampler']['requests']:,} | "
            f"{_sampler_failed(run['sampler'])} |"
        )
    lines += [
        "",
        "| server | load | latency steady p50 / p99 / max (ms) | latency in restart windows "
        "p50 / p99 / max (ms) | handoff median / max (s) | new generation's CPU to answer (s) | "
        "old generation gone median / max (s) | RSS per generation (MiB) | machine load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        handoffs = [r["handoff"] for r in run["restarts"] if r["handoff"] is not None]
        gone = [r["old_gone"] for r in run["restarts"] if r["old_gone"] is not None]
        cpu = [r["new_cpu"] for r in run["restarts"] if r.get("new_cpu") is not None]
        load = run.get("load") or []
        lines.append(
            f"| {run['target']} | {run['mode']} | {_ms3(run['sampler']['steady'])} | "
            f"{_ms3(run['sampler']['window'])} | "
            f"{_secs(_stats.median(handoffs), max(handoffs, default=None))} | "
            f"{_n(_stats.median(cpu), 2)} | "
            f"{_secs(_stats.median(gone), max(gone, default=None))} | "
            f"{_rss(run['rss_generations_mb'])} | "
            f"{' → '.join(f'{x:.1f}' for x in load) or '–'} |"
        )
    notes = [(run, note) for run in runs for note in run["notes"]]
    errors = [(run, r["error"]) for run in runs for r in run["restarts"] if r["error"]]
    if notes or errors:
        lines += ["", "What the servers logged or the restarts reported:", ""]
        for run, text in errors:
            lines.append(f"- {run['target']} {run['mode']}: restart error: `{text}`")
        for run, text in notes:
            lines.append(f"- {run['target']} {run['mode']}: `{text.replace('`', '')}`")
    return lines


def overhead_tables(overhead: dict) -> list[str]:
    summary = overhead["summary"]
    lines = [
        "| server | keep-alive req/s | × twisted.web | CPU µs/request | × twisted.web (CPU) | "
        "`Connection: close` req/s | × twisted.web | CPU µs/request | × twisted.web (CPU) | "
        "failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    for name, by_mode in summary.items():
        cells = [f"{name}"]
        failed = 0
        for mode in ("keepalive", "close"):
            row = by_mode.get(mode)
            if row is None:
                cells += ["–"] * 4
                continue
            failed += row["failed"]
            cells += [
                f"{row['rps']:,.0f}", ratio(row["rps_ratio"]),
                _n(row["cpu_us_per_request"], 1), ratio(row["cpu_ratio"]),
            ]
        cells.append(str(failed))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Every run's req/s, and its CPU ratio to the twisted.web run of the same "
              "round (rounds in order):", ""]
    for name, by_mode in summary.items():
        runs = "; ".join(
            f"{mode} {', '.join(f'{x:,}' for x in row['rps_runs'])}"
            + (f" (CPU × {', '.join(f'{x:.2f}' for x in row.get('cpu_ratio_runs', []))})"
               if name != "twisted.web" else "")
            for mode, row in by_mode.items()
        )
        lines.append(f"- {name}: {runs}")
    return lines


def profile_lines(profiles: dict) -> list[str]:
    lines: list[str] = []
    for name, profile in profiles.items():
        if "error" in profile:
            lines.append(f"- {name}: {profile['error']}")
            continue
        total = profile["samples"] or 1
        lines += [
            "",
            f"**{name}** under {profile.get('load', 'keep-alive')} load ({profile['samples']} "
            f"samples, `{profile['file']}`): functions with the most samples of their own:",
            "",
            "| own % | function |",
            "|---|---|",
        ]
        for key, count in profile["own"][:12]:
            lines.append(f"| {100 * count / total:.1f} | `{key}` |")
    graceful = profiles.get("graceful")
    if graceful and "inclusive" in graceful:
        total = graceful["samples"] or 1
        ours = [(k, c) for k, c in graceful["inclusive"] if "graceful/" in k]
        if ours:
            lines += [
                "",
                "graceful's own functions in the graceful profile (share of all samples spent "
                "inside each, callees included):",
                "",
                "| inclusive % | function |",
                "|---|---|",
            ]
            for key, count in ours[:15]:
                lines.append(f"| {100 * count / total:.1f} | `{key}` |")
    plain = profiles.get("twisted.web")
    if graceful and plain and "inclusive" in graceful and "inclusive" in plain:
        g_total, p_total = graceful["samples"] or 1, plain["samples"] or 1
        g_share = {k: c / g_total for k, c in graceful["inclusive"]}
        p_share = {k: c / p_total for k, c in plain["inclusive"]}
        gaps = sorted(
            ((g_share.get(k, 0) - p_share.get(k, 0), k) for k in set(g_share) | set(p_share)),
            reverse=True,
        )
        gaps = [(d, k) for d, k in gaps if d > 0.005 and "graceful/process/runtime" not in k
                and "graceful/http/server" not in k and "<module>" not in k
                and "runpy" not in k and "main (" not in k][:12]
        if gaps:
            lines += [
                "",
                "Where graceful's profile spends a larger share than twisted.web's (inclusive "
                "share in graceful minus share in twisted.web, in points):",
                "",
                "| points | graceful % | twisted.web % | function |",
                "|---|---|---|---|",
            ]
            for d, k in gaps:
                lines.append(
                    f"| +{100 * d:.1f} | {100 * g_share.get(k, 0):.1f} | "
                    f"{100 * p_share.get(k, 0):.1f} | `{k}` |"
                )
    return lines


def _growth(rows: list[dict], x_key: str, y_key: str, unit: str) -> str:
    points = [(r[x_key], r[y_key]) for r in rows if r.get(y_key) is not None]
    if len(points) < 2:
        return ""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    (x0, y0), (x1, y1) = points[0], points[-1]
    names = {
        "handoff_median": "handoff (median)",
        "ready_median": "graceful's own ready time (median)",
        "new_cpu_median": "new process's CPU to answer (median)",
        "old_gone_median": "old generation gone (median)",
    }
    return (
        f"{names.get(y_key, y_key)}: {y0:.3f} s at {x0} → {y1:.3f} s at {x1} {unit} "
        f"(× {y1 / y0:.2f}; least-squares slope {slope * 1000:.2f} ms per {unit.rstrip('s')})"
        if y0 else ""
    )


def scale_tables(ports: list[dict], connections: list[dict]) -> list[str]:
    lines: list[str] = []
    if ports:
        lines += [
            "| ports (= servers) | startup (s) | handoff median / max (s) | graceful's own "
            "ready time, median (s) | new process's CPU to answer (s) | old gone median / max (s) "
            "| all ports on new pid | wrk failed | sampler failed | latency in windows "
            "p50 / p99 / max (ms) | RSS (MiB) | machine load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in ports:
            lines.append(
                f"| {r['ports']} | {r['startup']:.2f} | "
                f"{_secs(r['handoff_median'], r['handoff_max'])} | {_n(r['ready_median'], 3)} | "
                f"{_n(r['new_cpu_median'], 2)} | "
                f"{_secs(r['old_gone_median'], r['old_gone_max'])} | "
                f"{r['ports_answering_new']}/{r['ports']} | {_wrk_failed(r['wrk'])} | "
                f"{_sampler_failed(r['sampler'])} | {_ms3(r['sampler']['window'])} | "
                f"{r['rss_mb']:.0f} | {r['load']:.1f} |"
            )
        for key in ("handoff_median", "ready_median", "new_cpu_median", "old_gone_median"):
            text = _growth(ports, "ports", key, "ports")
            if text:
                lines += ["", f"- {text}"]
    if connections:
        lines += [
            "",
            "| connections (wrk) | handoff median / max (s) | new process's CPU to answer (s) | "
            "old gone median / max (s) | wrk req/s | wrk failed | sampler failed | "
            "latency steady p50 / p99 / max (ms) | latency in windows p50 / p99 / max (ms) | "
            "RSS (MiB) | machine load |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in connections:
            wrk = r["wrk"]
            lines.append(
                f"| {r['connections']} | {_secs(r['handoff_median'], r['handoff_max'])} | "
                f"{_n(r['new_cpu_median'], 2)} | "
                f"{_secs(r['old_gone_median'], r['old_gone_max'])} | "
                f"{_n(wrk['rps'] if wrk else None)} | {_wrk_failed(wrk)} | "
                f"{_sampler_failed(r['sampler'])} | {_ms3(r['sampler']['steady'])} | "
                f"{_ms3(r['sampler']['window'])} | {r['rss_mb']:.0f} | {r['load']:.1f} |"
            )
        for key in ("handoff_median", "new_cpu_median", "old_gone_median"):
            text = _growth(connections, "connections", key, "connections")
            if text:
                lines += ["", f"- {text}"]
    notes = [(r, n) for r in ports + connections for n in r.get("notes", [])]
    if notes:
        lines += ["", "Logged by graceful during the scale runs:", ""]
        lines += [f"- `{n.replace('`', '')}`" for _, n in notes[:12]]
    return lines


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# graceful benchmark results",
        "",
        f"- command: `{results['command']}`",
        f"- started: {results['started']}, took {results['took']:.0f} s",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average'])}",
        f"- software: {m['python']}; {m['packages']}; {m['wrk']}; {m['nginx']}; "
        f"graceful at commit {m['commit']}",
        "",
        "How to read these tables: benchmarks/README.md.",
    ]
    if results.get("restart"):
        plan = results["restart_plan"]
        lines += [
            "",
            "## Restart under load",
            "",
            f"Each row: one server under load while it restarts {plan['restarts']} times: "
            f"{plan['first_at']:g} s into the load, then {plan['interval']:g} s after the previous "
            f"signal but never before {plan['min_gap']:g} s after the previous restart ended "
            f"(old generation gone), and {plan['tail']:g} s of load after the last one. Load: "
            + (f"wrk -t1 -c{plan['connections']} on `/` (keep-alive, `Connection: close` "
               "or TLS keep-alive), plus " if plan["use_wrk"] else "")
            + "the sampler's clients on `/pid`, each one request every 10 ms.",
            "",
        ]
        lines += restart_tables(results["restart"])
        if results.get("plot"):
            lines += ["", f"![latency over time]({results['plot']})"]
    if results.get("overhead"):
        o = results["overhead"]
        lines += [
            "",
            "## Overhead: hello world, one process each",
            "",
            f"wrk -t1 -c{o['connections']}, {o['duration']:g} s a run, {o['rounds']} interleaved "
            "rounds; req/s and CPU µs/request are medians over the rounds, the × twisted.web "
            "ratios medians of each round's ratio to the twisted.web run of the same round. "
            "CPU µs/request is the server's own CPU time (user + system, from /proc) over the "
            "requests it answered: it moves far less with what else the machine runs than "
            "req/s does.",
            "",
        ]
        lines += overhead_tables(o)
        micro = o.get("micro") or {}
        if "us_per_request" in micro:
            costs = micro["us_per_request"]
            base = costs.get("twisted.web")
            lines += [
                "",
                "In process, without sockets (benchmarks/micro.py: the same keep-alive request "
                "fed to each site's channel on an in-memory transport; best of several passes), "
                "the Python work of one request:",
                "",
                "| site | µs / request | over twisted.web |",
                "|---|---|---|",
            ]
            for name, value in costs.items():
                extra = (
                    f"+{value - base:.2f} µs ({100 * (value - base) / base:+.1f}%)"
                    if base and name != "twisted.web" else "–"
                )
                lines.append(f"| {name} | {value:.2f} | {extra} |")
        elif micro.get("error"):
            lines += ["", f"benchmarks/micro.py failed: `{micro['error']}`"]
        g = o["summary"].get("graceful", {})
        parts = [
            f"{label}: {100 * g[mode]['rps_ratio']:.0f}% by req/s, "
            f"{100 * g[mode]['cpu_ratio']:.0f}% by CPU per request"
            for mode, label in (("keepalive", "keep-alive"), ("close", "`Connection: close`"))
            if mode in g and g[mode].get("rps_ratio") is not None
            and g[mode].get("cpu_ratio") is not None
        ]
        if parts:
            lines += ["", "graceful against plain twisted.web: " + "; ".join(parts)
                      + ". Target: 95% or more."]
    if results.get("profile"):
        lines += ["", "## Profile: where the time goes", ""]
        lines += profile_lines(results["profile"])
    if results.get("scale_ports") or results.get("scale_connections"):
        plan = results["scale_plan"]
        lines += [
            "",
            "## Scale",
            "",
            f"graceful only; {plan['restarts']} restarts under load, {plan['first_at']:g} s in, "
            f"then {plan['interval']:g} s apart (or {plan['min_gap']:g} s after the previous one "
            f"ended), {plan['tail']:g} s of load after the last. Ports: servers from a generated config under "
            "`twistd -n graceful`, one port each; wrk -c32 keep-alive on the first port and "
            "4 sampler clients making a new connection to the next port for every request. "
            "Connections: examples/basic.py under wrk -cN keep-alive and 4 sampler clients "
            "(2 keep-alive, 2 close).",
            "",
        ]
        lines += scale_tables(results.get("scale_ports", []), results.get("scale_connections", []))
    if results.get("workers"):
        lines += [
            "",
            "## Workers: graceful `workers = N` beside N plain twisted.web processes on one socket",
            "",
        ]
        lines += workers_tables(results["workers"])
    if results.get("failures"):
        lines += ["", "## Runs that could not be measured", ""]
        for failure in results["failures"]:
            first = failure["error"].splitlines()[0] if failure["error"] else ""
            lines.append(f"- {failure['what']}: `{first.replace('`', '')}`")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> bool:
    """
    Latency of every sampled request over time, one panel per server and
    load, restarts marked; False when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    targets = list(dict.fromkeys(r["target"] for r in runs))
    modes = list(dict.fromkeys(r["mode"] for r in runs))
    fig, axes = plt.subplots(
        len(targets), len(modes), figsize=(4.2 * len(modes), 2.0 * len(targets) + 0.6),
        squeeze=False, sharey=True,
    )
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#bcbd22"]
    for run in runs:
        ax = axes[targets.index(run["target"])][modes.index(run["mode"])]
        t0 = run["t0"]
        samples = run.get("_samples", [])
        order = {pid: i for i, pid in enumerate(dict.fromkeys(s.pid for s in samples if s.pid))}
        ok = [s for s in samples if s.ok]
        bad = [s for s in samples if not s.ok]
        ax.scatter(
            [s.start - t0 for s in ok], [max(s.latency * 1000, 0.05) for s in ok],
            s=1.5, c=[palette[order.get(s.pid, 0) % len(palette)] for s in ok], linewidths=0,
        )
        if bad:
            ax.scatter([s.start - t0 for s in bad], [max(s.latency * 1000, 0.05) for s in bad],
                       s=14, c="red", marker="x", linewidths=0.8, label="failed")
        for r in run["restarts"]:
            start = r["signal"] - t0
            end = start + max(x for x in (r["handoff"], r["old_gone"], 0.0) if x is not None)
            ax.axvspan(start, end, color="orange", alpha=0.18, linewidth=0)
            ax.axvline(start, color="black", linewidth=0.6, linestyle="--")
        ax.set_yscale("log")
        ax.set_xlim(0, run["duration"] + 0.5)
        wrk = run["wrk"]
        failed = run["sampler"]["failed"] + (wrk["failed"] if wrk else 0)
        ax.set_title(f"{run['target']} · {run['mode']}: {failed:,} failed", fontsize=9,
                     color="red" if failed else "black")
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=8)
    for row in axes:
        row[0].set_ylabel("latency (ms)", fontsize=8)
    fig.suptitle(
        "Sampled request latency; dashed: restart signal, shaded: until the old generation "
        "exited; colours: generations, red x: failed",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=72)
    plt.close(fig)
    try:  # a palette PNG: a third of the size, the same picture
        from PIL import Image

        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=64)
        small.save(path, optimize=True)
    except Exception:
        pass
    return True
