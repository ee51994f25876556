# -*- test-case-name: tests.unit.ctl.test_output -*-
"""
What C{graceful ctl} prints: the status and list tables, the JSON, and the
rolling restart's progress (a line per event, or a bar on a terminal).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Iterable, Sequence, TextIO

from .._status import LastRestart
from .client import NodeError, NodeStatus
from .roll import Progress


class PlainProgress:
    """
    One line per event: for logs, CI and pipes.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _say(self, index: int, total: int, node: str, text: str) -> None:
        self.out.write(f"[{index + 1}/{total}] {node}: {text}\n")
        self.out.flush()

    def begin(self, index: int, total: int, node: str, before: NodeStatus) -> None:
        self._say(index, total, node, f"restarting (pid {before.pid}, generation {before.generation})")

    def waiting(self, index: int, total: int, node: str, elapsed: float) -> None:
        pass

    def done(
        self, index: int, total: int, node: str, before: NodeStatus, after: NodeStatus, elapsed: float
    ) -> None:
        self._say(index, total, node, _done_text(before, after, elapsed))

    def failed(self, index: int, total: int, node: str, reason: str) -> None:
        self._say(index, total, node, f"FAILED: {reason}")

    def finish(self) -> None:
        pass


class BarProgress(PlainProgress):
    """
    On a terminal: the finished nodes' lines above an in-place bar.
    """

    WIDTH = 24

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._drawn = False

    def _clear(self) -> None:
        if self._drawn:
            self.out.write("\r\x1b[K")
            self._drawn = False

    def _say(self, index: int, total: int, node: str, text: str) -> None:
        self._clear()
        super()._say(index, total, node, text)

    def _bar(self, finished: int, total: int, text: str) -> None:
        filled = self.WIDTH * finished // max(total, 1)
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {finished}/{total} {text}"
        # A line that wraps could not be redrawn in place.
        columns = shutil.get_terminal_size().columns
        if len(line) >= columns:
            line = line[: columns - 4] + "..." if columns > 20 else line[: max(columns - 1, 1)]
        self._clear()
        self.out.write(line)
        self.out.flush()
        self._drawn = True

    def begin(self, index: int, total: int, node: str, before: NodeStatus) -> None:
        self._bar(index, total, f"{node}: restarting")

    def waiting(self, index: int, total: int, node: str, elapsed: float) -> None:
        self._bar(index, total, f"{node}: waiting for the new process ({elapsed:.1f}s)")

    def done(
        self, index: int, total: int, node: str, before: NodeStatus, after: NodeStatus, elapsed: float
    ) -> None:
        super().done(index, total, node, before, after, elapsed)
        self._bar(index + 1, total, "")

    def finish(self) -> None:
        self._clear()
        self.out.flush()


def _done_text(before: NodeStatus, after: NodeStatus, elapsed: float) -> str:
    if after is before:
        return (
            f"ok: generation {before.generation} (pid {before.pid}) was restarted "
            "a moment ago; not restarted again"
        )
    return (
        f"ok: generation {before.generation} -> {after.generation}, "
        f"pid {before.pid} -> {after.pid}, {elapsed:.1f}s"
    )


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """
    Columns aligned on the widest cell; numbers right-aligned.
    """
    rows = [list(header)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = [
        all(_is_number(row[i]) for row in rows[1:]) and len(rows) > 1 for i in range(len(header))
    ]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _is_number(cell: str) -> bool:
    return cell.replace(".", "", 1).isdigit() or cell == "-"


def duration(seconds: float) -> str:
    """
    C{75} -> C{"1m15s"}, C{7500} -> C{"2h05m"}.
    """
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _last_restart_text(last: LastRestart | None, now: float) -> str:
    if last is None:
        return "-"
    ago = f", {duration(now - last.at)} ago" if last.at is not None else ""
    if last.ok:
        handoff = f" in {last.handoff_seconds:.2f}s" if last.handoff_seconds is not None else ""
        return f"ok{handoff}{ago}"
    return f"FAILED{ago}: {last.error or 'no reason given'}"


def status_table(results: Sequence[NodeStatus | NodeError], now: float) -> str:
    rows = []
    for result in results:
        if isinstance(result, NodeError):
            rows.append([result.node, "-", "-", "-", "ERROR", "-", result.reason])
            continue
        uptime = duration(now - result.started_at) if result.started_at is not None else "-"
        rows.append(
            [
                result.node,
                str(result.pid),
                str(result.generation),
                uptime,
                result.state,
                str(result.in_flight),
                _last_restart_text(result.last_restart, now),
            ]
        )
    header = ["NODE", "PID", "GEN", "UPTIME", "STATE", "IN-FLIGHT", "LAST RESTART"]
    return format_table(header, rows)


def list_table(results: Sequence[NodeStatus | NodeError]) -> str:
    rows = []
    for result in results:
        if isinstance(result, NodeError):
            rows.append([result.node, "ERROR", "-", "-", "-"])  # the reason goes to stderr
            continue
        for server in result.servers:
            ports = ", ".join(
                f"{port.where}/https" if port.tls else port.where for port in server.ports
            )
            requests = "-" if server.requests is None else str(server.requests)
            rows.append([result.node, server.name, ports or "-", str(server.in_flight), requests])
    return format_table(["NODE", "SERVER", "PORTS", "IN-FLIGHT", "REQUESTS"], rows)


def status_json(result: NodeStatus | NodeError) -> dict[str, Any]:
    if isinstance(result, NodeError):
        return {"node": result.node, "error": result.reason}
    return {
        "node": result.node,
        "pid": result.pid,
        "generation": result.generation,
        "started_at": result.started_at,
        "state": result.state,
        "in_flight": result.in_flight,
        "servers": [
            {
                "name": server.name,
                "ports": [port.to_json() for port in server.ports],
                "in_flight": server.in_flight,
                "requests": server.requests,
            }
            for server in result.servers
        ],
        "last_restart": None if result.last_restart is None else result.last_restart.to_json(),
    }


def progress_for(choice: str, out: TextIO) -> Progress:
    tty = getattr(out, "isatty", lambda: False)()
    if choice == "bar" or (choice == "auto" and tty and os.environ.get("TERM") != "dumb"):
        return BarProgress(out)
    return PlainProgress(out)
