# -*- test-case-name: tests.unit.admin.test_page -*-
"""
The admin HTML page, and the small pages that answer its forms.

Plain HTML and a little inline CSS: no script and no external asset, so the
page works on a machine with no internet and under a strict
Content-Security-Policy.  The shutdown form asks for a confirmation with a
required checkbox instead of a script's C{confirm()}.

Everything shown is escaped.  The forms carry the admin token as a hidden
field only when the request for the page presented it.

After the page's restart form, the browser comes back to
C{prefix?restarted_from=N} (N: the generation that asked).  That page says
how the restart goes and reloads itself every second while it runs, so the
new generation shows up by itself; it stops reloading once the new
generation answers, or says why the restart failed.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from html import escape
from typing import Iterable, Sequence

from .._history import RestartRecord
from .._status import DrainStatus, LastRestart, PortStatus, ProcessStatus, WorkerStatus
from .restarts_view import history_table, restart_progress

#: Seconds between reloads of a page that follows a restart.
RELOAD_SECONDS = 1

_CSS = """
:root { color-scheme: light dark; --fg: #1d232b; --muted: #5d6773; --bg: #f6f7f9;
  --card: #fff; --line: #dde1e6; --ok: #17803d; --bad: #b42318; --warn: #9a6700;
  --accent: #2457c5; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ed; --muted: #9aa4af;
  --bg: #14171b; --card: #1c2026; --line: #2e343c; --ok: #4cc273; --bad: #f0705f;
  --warn: #e0b341; --accent: #7aa2f7; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
header { display: flex; align-items: center; gap: .75rem; flex-wrap: wrap; }
h1 { font-size: 1.35rem; margin: 0; }
h2 { font-size: 1rem; margin: 1.75rem 0 .5rem; color: var(--muted);
  text-transform: uppercase; letter-spacing: .05em; }
.state { font-size: .8rem; font-weight: 600; padding: .15rem .6rem; border-radius: 1rem;
  border: 1px solid currentColor; }
.state-serving { color: var(--ok); } .state-restarting { color: var(--warn); }
.state-draining { color: var(--bad); }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr));
  gap: .75rem; margin: 1.25rem 0 0; padding: 0; }
.facts div { background: var(--card); border: 1px solid var(--line); border-radius: .5rem;
  padding: .6rem .8rem; }
.facts dt { font-size: .8rem; color: var(--muted); }
.facts dd { margin: 0; font-size: 1.3rem; font-weight: 600;
  font-variant-numeric: tabular-nums; }
table { width: 100%; border-collapse: collapse; background: var(--card);
  border: 1px solid var(--line); border-radius: .5rem; overflow: hidden; }
th, td { text-align: left; padding: .5rem .8rem; border-bottom: 1px solid var(--line); }
th { font-size: .8rem; color: var(--muted); font-weight: 600; }
tr:last-child td { border-bottom: 0; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.port { display: inline-block; margin: 0 .35rem .2rem 0; padding: 0 .45rem;
  border: 1px solid var(--line); border-radius: .3rem; font-family: ui-monospace,
  SFMono-Regular, Menlo, monospace; font-size: .85rem; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .muted { color: var(--muted); }
.notice { margin: 1rem 0 0; padding: .7rem .9rem; border-radius: .5rem;
  border: 1px solid currentColor; background: var(--card); }
.actions { display: grid; grid-template-columns: repeat(auto-fit, minmax(17rem, 1fr));
  gap: .75rem; }
form { background: var(--card); border: 1px solid var(--line); border-radius: .5rem;
  padding: .8rem; display: flex; flex-direction: column; gap: .6rem; margin: 0; }
label { font-size: .9rem; }
form p { margin: 0; }
select { width: 100%; margin-top: .25rem; padding: .35rem; font: inherit; }
button { font: inherit; font-weight: 600; padding: .45rem 1rem; border-radius: .4rem;
  border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer;
  align-self: flex-start; }
button.danger { border-color: var(--bad); background: var(--bad); }
button:disabled { opacity: .45; cursor: not-allowed; }
footer { margin-top: 2rem; font-size: .85rem; color: var(--muted); }
a { color: var(--accent); }
"""


def _when(at: float | None) -> str:
    if at is None:
        return "?"
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """
    A span of time as a person reads it: C{45s}, C{3m 05s}, C{2h 03m}, C{4d 02h}.
    """
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _document(title: str, body: str, refresh: int | None = None) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{refresh}">\n' if refresh else ""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{meta}<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    ).encode("utf-8")


def _ports(ports: Iterable[PortStatus]) -> str:
    shown = [
        f'<span class="port">{"https" if p.tls else "http"} '
        f'{escape("unix:" + p.unix if p.unix is not None else ":" + str(p.port))}</span>'
        for p in ports
    ]
    return "".join(shown) or '<span class="muted">not listening</span>'


def _last_restart(last: LastRestart | None, now: float) -> str:
    if last is None:
        return '<p id="last-restart" class="muted">No restart yet.</p>'
    at = last.at
    ago = f" ({duration(now - at)} ago)" if at is not None else ""
    when = f'<time>{escape(_when(at))}</time>{escape(ago)}'
    if last.ok:
        seconds = last.handoff_seconds
        took = f", handoff took {seconds:.2f}s" if seconds is not None else ""
        return f'<p id="last-restart"><strong class="ok">ok</strong> at {when}{escape(took)}</p>'
    error = last.error or "unknown error"
    return (
        f'<p id="last-restart"><strong class="bad">failed</strong> at {when}: '
        f'<span class="bad">{escape(str(error))}</span></p>'
    )


def restart_notice(
    status: ProcessStatus, restarted_from: int | None
) -> tuple[str, str, bool] | None:
    """
    What to tell the person who asked the restart from generation
    C{restarted_from}: C{(css class, html, reload?)}, or L{None}.
    """
    if restarted_from is None:
        return None
    generation = status.generation
    if generation > restarted_from:
        return (
            "ok",
            f"Restarted: generation {restarted_from} &rarr; {generation}, "
            f"now served by pid {status.pid}.",
            False,
        )
    if status.restarting:
        return (
            "muted",
            f"Restarting: generation {generation + 1} is starting; generation "
            f"{generation} serves meanwhile. This page reloads itself.",
            True,
        )
    if status.draining:
        return (
            "muted",
            f"Handing over: generation {generation} finishes its requests and leaves. "
            "This page reloads itself.",
            True,
        )
    last = status.last_restart
    if last is not None and not last.ok:
        error = escape(last.error or "unknown error")
        return (
            "bad",
            f"The restart failed: {error}. Generation {generation} goes on serving.",
            False,
        )
    return None


def _connections(counts: dict[str, int]) -> str:
    """
    C{http/1.1 2 · websocket 3}: the kinds with open connections.
    """
    shown = [f"{escape(str(k))} {int(v)}" for k, v in counts.items() if v]
    return " &middot; ".join(shown) or '<span class="muted">none</span>'


def _drain(drain: DrainStatus | None) -> str:
    if drain is None:
        return ""
    return (
        '<div><dt>draining</dt><dd id="drain">'
        f"{drain.connections_left} connection(s) left after "
        f"{float(drain.elapsed):.1f}s of {float(drain.timeout):g}s"
        "</dd></div>"
    )


def admin_page(
    status: ProcessStatus,
    *,
    prefix: str,
    token: str | None = None,
    allowed_executables: Iterable[str] = (),
    restarted_from: int | None = None,
    now: float | None = None,
    history: Sequence[RestartRecord] = (),
    ready_timeout: float = 15.0,
    own_server: str | None = None,
) -> bytes:
    """
    The admin page for C{status}.

    @param prefix: where the admin pages are, for the forms and links.
    @param token: the token the request presented, to carry in the forms;
        L{None} when it presented none.
    @param history: the restart history's records, oldest first.
    @param ready_timeout: what a new process is allowed to become ready.
    @param own_server: the server whose in-flight count holds the request
        for this page, which is left out of the counts shown.
    """
    now = time.time() if now is None else now
    state = status.state
    pid = str(status.pid)
    generation = str(status.generation)
    servers = status.servers
    notice = restart_notice(status, restarted_from)
    refresh = RELOAD_SECONDS if (notice and notice[2]) or status.restarting else None

    rows = "\n".join(
        "<tr>"
        f'<td class="server-name">{escape(s.name)}</td>'
        f"<td>{_ports(s.ports)}</td>"
        f'<td class="num in-flight">{max(0, s.in_flight - (s.name == own_server))}</td>'
        f'<td class="num">{s.requests or 0}</td>'
        f'<td class="connections">{_connections(s.connections or {})}</td>'
        "</tr>"
        for s in servers
    ) or '<tr><td colspan="5" class="muted">No server started.</td></tr>'

    workers_html = _workers(status.workers)
    # The request for this page is in flight as it is rendered: not shown.
    own = any(s.name == own_server for s in servers)
    in_flight = max(0, status.in_flight - own)

    hidden = (
        f'<input type="hidden" name="token" value="{escape(token, quote=True)}">'
        if token
        else ""
    )
    busy = state != "serving"
    disabled = " disabled" if busy else ""
    why_disabled = (
        f'<p class="muted">A {"restart" if state == "restarting" else "shutdown or handoff"} '
        "is under way.</p>"
        if busy
        else ""
    )
    allowed = [a for a in allowed_executables if a]
    if allowed:
        options = "".join(
            f'<option value="{escape(a, quote=True)}">{escape(a)}</option>' for a in allowed
        )
        executable = (
            '<label>Executable<select name="executable" id="executable">'
            f'<option value="">the same command line</option>{options}</select></label>'
        )
    else:
        executable = ""
    action = escape(prefix, quote=True)
    notice_html = (
        f'<p class="notice {notice[0]}" id="notice" role="status">{notice[1]}</p>'
        if notice
        else ""
    )
    if status.uptime is not None:
        uptime = duration(status.uptime)
    else:
        uptime = "?" if status.started_at is None else duration(now - status.started_at)
    master = (
        f'<div><dt>master generation</dt><dd id="master-generation">{status.master_generation}</dd></div>\n'
        if status.role == "master" and status.master_generation is not None
        else ""
    )

    body = f"""<header>
<h1>graceful admin</h1>
<span class="state state-{state}" id="state">{state}</span>
</header>
{notice_html}
<dl class="facts">
<div><dt>pid</dt><dd id="pid">{pid}</dd></div>
<div><dt>generation</dt><dd id="generation">{generation}</dd></div>
{master}<div><dt>uptime</dt><dd id="uptime" title="started {escape(_when(status.started_at))}">{escape(uptime)}</dd></div>
<div><dt>in flight</dt><dd id="in-flight">{in_flight}</dd></div>
{_drain(status.drain)}
{restart_progress(status, history, ready_timeout, now)}
</dl>
<h2>Servers</h2>
<table id="servers">
<thead><tr><th>server</th><th>ports</th><th class="num">in flight</th><th class="num">requests</th><th>connections</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{workers_html}
<h2>Last restart</h2>
{_last_restart(status.last_restart, now)}
<h2>Restart history</h2>
{history_table(history)}
<h2>Actions</h2>
<div class="actions">
<form method="post" action="{action}/restart" id="restart-form">
{hidden}<strong>Restart</strong>
{executable}
<p class="muted">A new process{" (the same command line, unless you pick another)" if allowed else ", started with the same command line,"} takes over every port; no request is refused.</p>
<button type="submit" id="restart"{disabled}>Restart</button>
</form>
<form method="post" action="{action}/shutdown" id="shutdown-form">
{hidden}<strong>Shut down</strong>
<p class="muted">Stops accepting, finishes the requests in flight, exits.</p>
<label><input type="checkbox" name="confirm" value="yes" id="confirm" required{disabled}>
Yes, shut down pid {pid}</label>
<button type="submit" class="danger" id="shutdown"{disabled}>Shut down</button>
</form>
</div>
{why_disabled}
<footer>
<a href="{action}/status">status (JSON)</a> &middot;
<a href="{action}/metrics">metrics (Prometheus)</a> &middot;
shown at {escape(_when(now))}
</footer>"""
    return _document(f"graceful · pid {status.pid} · generation {status.generation}", body, refresh)


def _workers(workers: tuple[WorkerStatus, ...] | None) -> str:
    """
    The worker table of a group (C{workers > 1}); nothing for a single
    process.
    """
    if not workers:
        return ""
    rows = "\n".join(
        "<tr>"
        f'<td class="num">{w.slot}</td>'
        f'<td class="worker-pid">{w.pid}</td>'
        f'<td class="num">{w.generation}</td>'
        f"<td>{w.state}</td>"
        f'<td class="num">{w.in_flight}</td>'
        f'<td class="num">{w.requests}</td>'
        f'<td class="num">{"-" if w.rss_mib is None else f"{w.rss_mib:.1f}"}</td>'
        f'<td class="num">{"-" if w.last_heartbeat is None else f"{w.last_heartbeat:.1f}s"}</td>'
        f"<td>{escape(w.last_replaced_reason or '-')}</td>"
        "</tr>"
        for w in workers
    )
    return f"""<h2>Workers</h2>
<table id="workers">
<thead><tr><th class="num">slot</th><th>pid</th><th class="num">generation</th><th>state</th><th class="num">in flight</th><th class="num">requests</th><th class="num">RSS MiB</th><th class="num">last report</th><th>slot last replaced for</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>"""


def message_page(title: str, message: str, prefix: str | None = None) -> bytes:
    """
    A short page for a browser: what happened, and the way back.  C{title}
    and C{message} are plain text.
    """
    back = (
        f'<p><a href="{escape(prefix, quote=True)}">Back to the admin page</a></p>'
        if prefix
        else ""
    )
    body = f"<header><h1>{escape(title)}</h1></header>\n<p>{escape(message)}</p>\n{back}"
    return _document(title, body)
