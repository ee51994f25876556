"""
The status JSON of a master: its own facts, every worker, and the servers
with their in-flight requests summed over the workers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ._core import ProcessCore
from ._workers import Worker


def group_status(
    process: ProcessCore,
    generation: int,
    workers: Sequence[Worker],
    slots: Mapping[int, Worker],
    last_reason: Mapping[int, str],
    restarting: bool,
    leaving: bool,
    counts: Mapping[str, int],
    replacements: Mapping[str, int],
) -> dict[str, Any]:
    now = process.reactor.seconds()
    listed = [
        {
            "pid": w.pid,
            "slot": w.slot,
            "generation": w.generation,
            "ready": w.ready,
            "draining": w.retiring,
            "in_flight": w.in_flight,
            "requests": w.requests,
            "rss_mib": w.report.get("rss_mib"),
            "last_heartbeat": round(now - w.last_heartbeat, 3) if w.ready else None,
            "last_replaced_reason": last_reason.get(w.slot),
            "started_at": w.started_at,
        }
        for w in sorted(workers, key=lambda w: (w.slot, w.started_at))
    ]
    servers: dict[str, dict[str, Any]] = {}
    for w in workers:
        for s in w.report.get("servers", []):
            entry = servers.setdefault(
                s["name"], {"name": s["name"], "ports": s["ports"], "in_flight": 0, "requests": 0}
            )
            entry["in_flight"] += s.get("in_flight", 0)
            entry["requests"] += s.get("requests", 0)
            if w is slots.get(w.slot):
                entry["ports"] = s["ports"]
    status = process.own_status("master", leaving, restarting, None)
    status.update(
        {
            # The newest workers' code; the master's own is master_generation.
            "generation": generation,
            "master_generation": process.generation,
            "workers": listed,
            **counts,
            "last_replaced_reason": {str(k): v for k, v in sorted(last_reason.items())},
            # Workers replaced so far, by why: roll, recycle, memory, timeout, died.
            "worker_replacements": dict(sorted(replacements.items())),
            "servers": list(servers.values())
            or [
                {"name": name, "ports": [], "in_flight": 0, "requests": 0}
                for name in process.servers
            ],
        }
    )
    return status
