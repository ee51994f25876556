# -*- test-case-name: tests.unit.admin.test_page -*-
"""
The admin page's view of restarts: the table of the last ones (from the
restart history), and while one is under way, how far the new process is
and what the old one still has open.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING, Any, Sequence

from .._history import RestartRecord
from .._status import ProcessStatus

if TYPE_CHECKING:
    from .host import AdminHost

#: The restarts the page's table shows: the newest.
SHOWN_RESTARTS = 20


def _clock(at: float | None) -> str:
    if at is None:
        return "?"
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(record: RestartRecord) -> str:
    # Hand-over seconds as the status's handoff_seconds: from starting the
    # new process to its ready.
    if record.ready is None:
        return "-"
    return f"{record.ready - record.started:.2f}s"


def history_table(records: Sequence[RestartRecord]) -> str:
    """
    The last L{SHOWN_RESTARTS} restarts, newest first: when, outcome,
    hand-over seconds, reason.
    """
    shown = list(reversed(records[-SHOWN_RESTARTS:]))
    if not shown:
        return '<p id="history" class="muted">No restart yet.</p>'
    outcome_class = {"ok": "ok", "failed": "bad", "running": "muted"}
    rows = "\n".join(
        "<tr>"
        f"<td><time>{escape(_clock(r.started))}</time></td>"
        f'<td class="num">{r.generation}</td>'
        f'<td class="{outcome_class.get(r.outcome, "muted")}">{escape(r.outcome)}</td>'
        f'<td class="num">{escape(_seconds(r))}</td>'
        f'<td class="num">{r.old_pid} &rarr; {"-" if r.new_pid is None else r.new_pid}</td>'
        f"<td>{escape(r.reason or '')}</td>"
        "</tr>"
        for r in shown
    )
    return f"""<table id="history">
<thead><tr><th>when</th><th class="num">generation</th><th>outcome</th><th class="num">hand-over</th><th class="num">pids</th><th>reason</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>"""


def _by_kind(counts: dict[str, int]) -> str:
    shown = [f"{escape(kind)} {count}" for kind, count in sorted(counts.items()) if count]
    return ", ".join(shown) or "none"


def restart_progress(
    status: ProcessStatus,
    records: Sequence[RestartRecord],
    ready_timeout: float,
    now: float,
) -> str:
    """
    Cards for a restart under way: the new process (its pid, and seconds
    since it started against C{ready_timeout}) while this one waits for it;
    this process's connections left by kind while it drains; or, in the
    new process, the old one still draining.
    """
    cards = []
    last = records[-1] if records else None
    if status.restarting and last is not None and last.outcome == "running":
        pid = "starting" if last.new_pid is None else f"pid {last.new_pid}"
        cards.append(
            '<div><dt>new process</dt><dd id="new-process">'
            f"{escape(pid)}, {max(0.0, now - last.started):.1f}s of {ready_timeout:g}s"
            "</dd></div>"
        )
    if status.drain is not None:
        left: dict[str, int] = {}
        for server in status.servers:
            for kind, count in (server.connections or {}).items():
                left[kind] = left.get(kind, 0) + count
        cards.append(
            '<div><dt>left while draining</dt><dd id="drain-left">'
            f"{_by_kind(left)}</dd></div>"
        )
    elif (
        last is not None
        and last.outcome == "ok"
        and last.new_pid == status.pid
        and last.handed_over is not None
        and last.exited is None
    ):
        cards.append(
            '<div><dt>old process</dt><dd id="old-process">'
            f"pid {last.old_pid} draining for {max(0.0, now - last.handed_over):.1f}s"
            "</dd></div>"
        )
    return "\n".join(cards)


def counted_in(request: Any, runtime: AdminHost) -> str | None:
    """
    The server whose in-flight count holds C{request} (the one for the
    page), if this process's status counts it: not on the private admin
    socket, whose site is no server's, nor in a worker, which shows the
    group's counts as its master last pushed them.
    """
    if runtime.role == "worker":
        return None
    channel = getattr(request, "channel", None)
    for server in runtime.servers.values():
        site = server.site
        if site is not None and channel in site.channels:
            return server.name
    return None
