# -*- test-case-name: tests.unit.ctl.test_operations -*-
"""
C{graceful ctl history} and C{graceful ctl workers N}: every node's last
restarts, one line per restart; and a master's worker count without a
restart.  Standard library and attrs only, like the rest of C{graceful ctl}.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol, Sequence, TextIO

from .._history import RestartLog, RestartRecord
from .._status import StatusError


class OperationsClient(Protocol):
    """
    The two requests these commands make of a node.
    """

    def history(self, node: str) -> Any:
        "The node's C{GET history} answer."

    def workers(self, node: str, count: int) -> Any:
        "The node's C{POST workers} answer."


def read_history(node: str, answer: Any) -> list[RestartRecord]:
    """
    The records of a C{GET history} answer.

    @raise StatusError: it is not one.
    """
    if not isinstance(answer, dict) or "history" not in answer:
        raise StatusError("not a history: no history key (is the node older than this ctl?)")
    return RestartLog.from_json(answer["history"]).records


def _clock(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _after(at: float | None, started: float) -> str | None:
    return None if at is None else f"+{max(0.0, at - started):.2f}s"


def _canary(canary: Any) -> str:
    """
    C{canary failed, error ratio 0.4998 against 0.0000}: the new generation's
    share of 5xx answers and resets in the window, then the old one's.
    """
    if not isinstance(canary, dict):
        return f"canary {canary}"  # a newer node's shape: shown as it came
    how = "passed" if canary.get("passed") else "failed"
    try:
        new, old = float(canary["new_error_ratio"]), float(canary["old_error_ratio"])
    except (KeyError, TypeError, ValueError):
        return f"canary {how}"
    return f"canary {how}, error ratio {new:.4f} against {old:.4f}"


def history_line(node: str, record: RestartRecord) -> str:
    """
    One restart, as C{graceful ctl history} prints it:

        NODE  gen 3  1201 -> 1207  ok  2026-12-05 11:40:02  ready +0.81s  ...
    """
    pids = f"{record.old_pid} -> {record.new_pid if record.new_pid is not None else '?'}"
    outcome = record.outcome.upper() if record.outcome == "failed" else record.outcome
    parts = [node, f"gen {record.generation}", pids, outcome, _clock(record.started)]
    if record.kind != "handover":
        parts.insert(2, record.kind)
    for name, at in (
        ("ready", record.ready),
        ("handed over", record.handed_over),
        ("released", record.released),
        ("exited", record.exited),
    ):
        shown = _after(at, record.started)
        if shown is not None:
            parts.append(f"{name} {shown}")
    if record.verify is not None:
        parts.append(f"verify {'ok' if record.verify.ok else 'failed'}")
    if record.canary is not None:
        parts.append(_canary(record.canary))
    if record.reason:
        parts.append(f"reason: {record.reason}")
    return "  ".join(parts)


def print_history(
    client: OperationsClient,
    nodes: Sequence[str],
    out: TextIO,
    err: TextIO,
    as_json: bool,
    node_error: type[Exception],
) -> bool:
    """
    Every node's history, oldest restart first; whether every node answered.
    C{node_error} is what the client raises for a node it cannot ask (its
    C{reason} says why).
    """
    ok = True
    everything = []
    for node in nodes:
        try:
            records = read_history(node, client.history(node))
        except (node_error, StatusError) as e:
            err.write(f"graceful ctl: {node}: {getattr(e, 'reason', e)}\n")
            ok = False
            continue
        if as_json:
            everything.append({"node": node, "history": [r.to_json() for r in records]})
        elif not records:
            out.write(f"{node}  no restart yet\n")
        for record in records if not as_json else ():
            out.write(history_line(node, record) + "\n")
    if as_json:
        out.write(json.dumps(everything, indent=1) + "\n")
    out.flush()
    return ok


def set_workers(
    client: OperationsClient,
    nodes: Sequence[str],
    count: int,
    out: TextIO,
    err: TextIO,
    node_error: type[Exception],
) -> bool:
    """
    Ask every node to keep C{count} workers; whether all accepted.
    """
    ok = True
    for node in nodes:
        try:
            answer = client.workers(node, count)
        except node_error as e:
            err.write(f"graceful ctl: {node}: {getattr(e, 'reason', e)}\n")
            ok = False
            continue
        pid = answer.get("pid") if isinstance(answer, dict) else None
        out.write(f"{node}: {count} worker(s) asked for (master {pid})\n")
    return ok
