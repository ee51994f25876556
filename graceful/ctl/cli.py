"""
C{graceful ctl}: status, list, restart and shutdown across the admin APIs of
many graceful processes ("nodes"), each named by its admin URL.

    graceful ctl --node http://10.0.0.5:8100/debug/admin \\
                 --node http://10.0.0.6:8100/debug/admin \\
                 --token-file /etc/graceful/token  restart
    graceful ctl --node unix:/run/graceful/admin.sock status

A C{unix:PATH} node is a process's private admin socket (C{admin_socket}),
which needs no token; C{unix:PATH:/prefix} names another admin prefix than
C{/debug/admin}.

C{restart} is rolling: one node at a time, and the next only once the
previous one's generation has moved (its new process serves).  The first node
that fails stops the roll, with a non-zero exit that names the node and why;
the nodes after it are left untouched.

Only the standard library is used: this is a tool for operators' machines
and CI jobs, which should not need Twisted to run it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Any, Callable, Iterable, Protocol, Sequence, TextIO

from attrs import frozen

from .._status import LastRestart, ProcessStatus, ServerStatus, StatusError

#: Exit statuses.
OK, FAILED, USAGE = 0, 1, 2

#: Read when neither --token nor --token-file is given.
TOKEN_VARIABLE = "GRACEFUL_ADMIN_TOKEN"

DEFAULT_TIMEOUT = 5.0
DEFAULT_RESTART_TIMEOUT = 60.0
DEFAULT_POLL_INTERVAL = 0.5

#: The admin prefix on a private admin socket.
UNIX_ADMIN_PREFIX = "/debug/admin"

#: The keys that tell a graceful status answer from anything else.
_STATUS_KEYS = ("pid", "generation", "servers")


class NodeError(Exception):
    """
    A node could not be asked, or answered in a way that ends the command:
    unreachable, a wrong token, not a graceful admin API, a failed restart.
    """

    def __init__(self, node: str, reason: str, transient: bool = False) -> None:
        super().__init__(f"{node}: {reason}")
        self.node = node
        self.reason = reason
        #: Worth asking again: no answer, or a server error (5xx), which a
        #: node in the middle of a restart may give for a moment.
        self.transient = transient


# -- what a node reports --------------------------------------------------------


@frozen
class NodeStatus:
    """
    A node's C{GET status} answer, checked.

    @ivar node: the node's admin URL (or C{unix:PATH}).
    @ivar status: what it answered.
    """

    node: str
    status: ProcessStatus

    @classmethod
    def from_json(cls, node: str, data: Any) -> NodeStatus:
        """
        @raise NodeError: C{data} is not what a graceful admin API answers.
        """
        if not isinstance(data, dict) or any(key not in data for key in _STATUS_KEYS):
            raise NodeError(node, "not a graceful admin API: its status has no pid, generation and servers")
        try:
            return cls(node, ProcessStatus.from_json(data))
        except StatusError as e:
            raise NodeError(node, f"not a graceful admin API: unexpected status ({e})") from None

    @property
    def pid(self) -> int:
        return self.status.pid

    @property
    def generation(self) -> int:
        return self.status.generation

    @property
    def started_at(self) -> float | None:
        return self.status.started_at

    @property
    def draining(self) -> bool:
        return self.status.draining

    @property
    def restarting(self) -> bool:
        return self.status.restarting

    @property
    def servers(self) -> tuple[ServerStatus, ...]:
        return self.status.servers

    @property
    def last_restart(self) -> LastRestart | None:
        return self.status.last_restart

    @property
    def failed_restarts(self) -> int:
        return self.status.failed_restarts

    @property
    def in_flight(self) -> int:
        return self.status.in_flight

    @property
    def state(self) -> str:
        return self.status.state


# -- talking to a node ------------------------------------------------------------


class AdminClient(Protocol):
    """
    The three requests C{graceful ctl} makes of a node.
    """

    def status(self, node: str) -> NodeStatus: ...

    def restart(self, node: str) -> Any:
        "The answer: what the node says of the restart it started (or did not need)."

    def shutdown(self, node: str) -> None: ...

    def history(self, node: str) -> Any: ...

    def workers(self, node: str, count: int) -> Any: ...


class HttpAdminClient:
    """
    An L{AdminClient} over HTTP(S), with a bearer token and a time-out for
    every request.  Proxy variables are ignored: admin APIs are reached
    directly.
    """

    def __init__(
        self,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.token = token
        self.timeout = timeout
        handlers: list[Any] = [urllib.request.ProxyHandler({}), _NoRedirects()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def status(self, node: str) -> NodeStatus:
        return NodeStatus.from_json(node, self._request(node, "GET", "status"))

    def restart(self, node: str) -> Any:
        return self._request(node, "POST", "restart")

    def shutdown(self, node: str) -> None:
        self._request(node, "POST", "shutdown")

    def history(self, node: str) -> Any:
        return self._request(node, "GET", "history")

    def workers(self, node: str, count: int) -> Any:
        return self._request(node, "POST", "workers", {"count": str(count)})

    def _request(
        self, node: str, method: str, page: str, form: dict[str, str] | None = None
    ) -> Any:
        url = f"{node}/{page}"
        headers = {"Accept": "application/json", "User-Agent": "graceful-ctl"}
        if self.token and not node.startswith("unix:"):
            headers["Authorization"] = f"Bearer {self.token}"
        data = b"" if method == "POST" else None
        if form:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if node.startswith("unix:"):
            body, content_type = self._unix_request(node, method, page, headers, data)
            return _json_of(node, method, page, body, content_type)
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
                content_type = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            reason = _explain_http_error(method, page, e.code, _error_of(e))
            raise NodeError(node, reason, transient=e.code >= 500)
        except urllib.error.URLError as e:
            raise NodeError(node, f"unreachable: {_explain_os_error(e.reason)}", transient=True)
        except (TimeoutError, OSError) as e:
            raise NodeError(node, f"unreachable: {_explain_os_error(e)}", transient=True)
        except Exception as e:  # http.client's protocol errors: not an HTTP server
            raise NodeError(node, f"not a graceful admin API: {type(e).__name__}: {e}")
        return _json_of(node, method, page, body, content_type)

    def _unix_request(
        self, node: str, method: str, page: str, headers: dict[str, str], data: bytes | None
    ) -> tuple[bytes, str]:
        """
        HTTP over a private admin socket (C{unix:PATH:/prefix}).
        """
        path, prefix = split_unix_node(node)
        connection = _UnixConnection(path, self.timeout)
        try:
            connection.request(method, f"{prefix}/{page}", body=data, headers=headers)
            response = connection.getresponse()
            body = response.read()
            content_type = response.getheader("Content-Type", "") or ""
            code = response.status
        except (TimeoutError, OSError) as e:
            raise NodeError(node, f"unreachable: {_explain_os_error(e)}", transient=True)
        except Exception as e:  # http.client's protocol errors: not an HTTP server
            raise NodeError(node, f"not a graceful admin API: {type(e).__name__}: {e}")
        finally:
            connection.close()
        if code >= 300:
            try:
                message = str(json.loads(body).get("error") or "")
            except (ValueError, AttributeError):
                message = ""
            reason = _explain_http_error(method, page, code, message)
            raise NodeError(node, reason, transient=code >= 500)
        return body, content_type


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def split_unix_node(node: str) -> tuple[str, str]:
    """
    C{unix:/run/graceful/admin.sock:/debug/admin} -> the socket's path and the
    admin prefix (C{/debug/admin} when the node gives none).
    """
    rest = node[len("unix:") :]
    head, sep, tail = rest.rpartition(":")
    if sep and head and tail.startswith("/"):
        return head, tail.rstrip("/")
    return rest, UNIX_ADMIN_PREFIX


def _json_of(node: str, method: str, page: str, body: bytes, content_type: str) -> Any:
    if "json" not in content_type:
        shown = content_type.split(";")[0] or "no content type"
        raise NodeError(
            node,
            f"not a graceful admin API: {method} {page} answered {shown}, not JSON "
            "(is the URL the server's admin prefix?)",
        )
    try:
        return json.loads(body)
    except ValueError:
        raise NodeError(node, f"not a graceful admin API: {method} {page} answered invalid JSON")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """
    A redirect is an answer in its own right: never resend a token elsewhere.
    """

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _error_of(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read()
    except Exception:
        return ""
    finally:
        error.close()
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    return str(message) if message else ""


def _explain_http_error(method: str, page: str, code: int, message: str) -> str:
    said = f": {message}" if message else ""
    if page == "workers" and message and code in (400, 404, 409):
        return f"refused ({code}): {message}"
    if code == 401:
        return f"wrong or missing token (401 Unauthorized{said})"
    if code == 403:
        return f"refused (403 Forbidden{said})"
    if code == 409:
        return f"a restart is already running there (409 Conflict{said})"
    if code == 404:
        return (
            f"not a graceful admin API: {method} {page} answered 404 Not Found "
            "(is the URL the server's admin prefix?)"
        )
    if 300 <= code < 400:
        return f"not a graceful admin API: {method} {page} answered a redirect ({code})"
    return f"{method} {page} answered {code}{said}"


def _explain_os_error(reason: object) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer in time (timed out)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


# -- the rolling restart ------------------------------------------------------


class Progress(Protocol):
    """
    What a rolling restart tells as it goes.
    """

    def begin(self, index: int, total: int, node: str, before: NodeStatus) -> None: ...

    def waiting(self, index: int, total: int, node: str, elapsed: float) -> None: ...

    def done(
        self, index: int, total: int, node: str, before: NodeStatus, after: NodeStatus, elapsed: float
    ) -> None: ...

    def failed(self, index: int, total: int, node: str, reason: str) -> None: ...

    def finish(self) -> None: ...


class Verdict(Enum):
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


def judge(before: NodeStatus, now: NodeStatus) -> tuple[Verdict, str]:
    """
    Where a node's restart stands, from its status before the restart was
    asked for and its status now.

    Done: the generation moved and the process that answers reports the
    good restart that made it (a new process that has not been told it took
    over yet, and may still fail its start, means: wait).  Failed: the same
    process still serves and records a failed restart newer than the one it
    had, or it began shutting down.  Only the status is read, so the verdict
    is the same whichever way the node is reached.
    """
    last = now.last_restart
    newer = last is not None and last != before.last_restart
    if now.generation > before.generation:
        if newer and last is not None and not last.ok:
            return Verdict.FAILED, f"generation {now.generation} reports a failed restart: {last.error}"
        if newer and last is not None and last.ok:
            return Verdict.DONE, ""
        return Verdict.WAITING, ""
    if now.pid != before.pid or now.generation < before.generation:
        return Verdict.FAILED, (
            f"the node changed under us (pid {before.pid} generation {before.generation} -> "
            f"pid {now.pid} generation {now.generation}): restarted by something else?"
        )
    newer_failure = (
        last is not None and not last.ok and last != before.last_restart
    ) or (
        now.failed_restarts is not None
        and before.failed_restarts is not None
        and now.failed_restarts > before.failed_restarts
    )
    if newer_failure and not now.restarting:
        error = last.error if last is not None and not last.ok else None
        return Verdict.FAILED, f"restart failed, the old process still serves: {error or 'no reason given'}"
    handed_over = last is not None and last.ok and last != before.last_restart
    if now.draining and not handed_over and not now.restarting:
        return Verdict.FAILED, "the node is shutting down"
    return Verdict.WAITING, ""


@frozen
class RollOptions:
    restart_timeout: float = DEFAULT_RESTART_TIMEOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    pause: float = 0.0


def restart_node(
    client: AdminClient,
    node: str,
    index: int,
    total: int,
    progress: Progress,
    options: RollOptions,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> NodeStatus:
    """
    Restart one node and wait until its new process serves.

    @return: the node's status afterwards.
    @raise NodeError: it cannot be restarted, its restart failed, or it did
        not come back within C{options.restart_timeout}.
    """
    before = client.status(node)
    if before.draining:
        raise NodeError(node, "the node is shutting down; not restarting it")
    if before.restarting:
        raise NodeError(node, "a restart is already running there")
    progress.begin(index, total, node, before)
    started = clock()
    answer = client.restart(node)
    if isinstance(answer, dict) and answer.get("coalesced"):
        # A restart of the same release ended a moment ago: the node
        # started none (see the admin's RESTART_COALESCE_SECONDS).
        progress.done(index, total, node, before, before, clock() - started)
        return before
    deadline = started + options.restart_timeout
    last_problem = ""
    for _ in range(1 + int(options.restart_timeout / max(options.poll_interval, 0.001)) + 1):
        now = clock()
        if now >= deadline:
            break
        sleep(min(options.poll_interval, max(0.0, deadline - now)))
        progress.waiting(index, total, node, clock() - started)
        try:
            current = client.status(node)
        except NodeError as e:
            if not e.transient:
                raise
            last_problem = f" (last poll: {e.reason})"  # a blip: poll again until the deadline
            continue
        verdict, reason = judge(before, current)
        if verdict is Verdict.DONE:
            progress.done(index, total, node, before, current, clock() - started)
            return current
        if verdict is Verdict.FAILED:
            raise NodeError(node, reason)
    raise NodeError(
        node,
        f"its generation did not move from {before.generation} within "
        f"{options.restart_timeout:g}s (--restart-timeout){last_problem}",
    )


def rolling_restart(
    client: AdminClient,
    nodes: Sequence[str],
    progress: Progress,
    options: RollOptions = RollOptions(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[NodeStatus]:
    """
    Restart C{nodes} one at a time, in order; stop at the first failure.

    @return: every node's status after its restart.
    @raise NodeError: the first node that failed (the later ones untouched).
    """
    results = []
    try:
        for index, node in enumerate(nodes):
            if index and options.pause > 0:
                sleep(options.pause)
            try:
                results.append(
                    restart_node(client, node, index, len(nodes), progress, options, sleep, clock)
                )
            except NodeError as e:
                progress.failed(index, len(nodes), node, e.reason)
                raise
    finally:
        progress.finish()
    return results


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


# -- tables ---------------------------------------------------------------------


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


# -- the command --------------------------------------------------------------------


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="graceful ctl",
        description=(
            "Ask the admin APIs of one or many graceful processes for their status, "
            "or restart (one node at a time) or shut them down."
        ),
        epilog=(
            "A node is a server's admin URL, such as http://10.0.0.5:8100/debug/admin, "
            "or a process's private admin socket, unix:/run/graceful/admin.sock "
            "(no token needed; unix:PATH:/prefix for another prefix than /debug/admin). "
            f"The token may also come from ${TOKEN_VARIABLE}. Exit status: 0 done, "
            "1 a node failed (named on stderr), 2 bad usage."
        ),
    )
    parser.add_argument(
        "command",
        choices=("status", "list", "restart", "shutdown", "history", "workers"),
        help="status: one line per node; list: servers and ports; "
        "restart: rolling, one node at a time; shutdown: graceful, every node; "
        "history: the last restarts, one line each; workers N: keep N workers",
    )
    parser.add_argument(
        "count", nargs="?", type=_worker_count, help="workers: how many (a master's)"
    )
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="URL",
        help="a node's admin URL, or unix:PATH[:/prefix] for an admin socket (repeatable)",
    )
    parser.add_argument(
        "--nodes-file",
        "--node-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of admin URLs, one a line ('#' starts a comment)",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="the admin token (visible to other users in ps)")
    token.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the admin token: admin_token_file, or the file graceful "
        "makes when no token is configured (beside the pidfile, app.pid -> "
        "app.admin-token, else $XDG_RUNTIME_DIR/graceful/admin-PORT.token; "
        "the server logs where)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time-out of each request to a node (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--restart-timeout",
        type=_positive,
        default=DEFAULT_RESTART_TIMEOUT,
        metavar="SECONDS",
        help="how long one node may take to serve from its new process "
        f"(default {DEFAULT_RESTART_TIMEOUT:g}; keep it above the nodes' ready_timeout)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help=f"how often a restarting node is asked for its status (default {DEFAULT_POLL_INTERVAL:g})",
    )
    parser.add_argument(
        "--pause",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="wait between two nodes of a restart, e.g. for a balancer's health checks (default 0)",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "plain"),
        default="auto",
        help="restart progress: a bar on a terminal, plain lines otherwise (default auto)",
    )
    parser.add_argument("--json", action="store_true", help="status and list: print JSON, not a table")
    parser.add_argument("--cafile", metavar="FILE", help="CA certificates for https:// nodes")
    parser.add_argument(
        "--insecure", action="store_true", help="https:// nodes: do not check certificates"
    )
    return parser.parse_args(argv)


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"a worker count is 1 or more, not {count}")
    return count


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


class UsageError(Exception):
    pass


def normalize_node(url: str) -> str:
    """
    C{http://h:8100/debug/admin/} and C{.../debug/admin/status} both mean
    C{http://h:8100/debug/admin}.
    """
    url = url.strip()
    if url.startswith("unix:"):
        path, prefix = split_unix_node(url)
        if not path.startswith("/"):
            raise UsageError(
                f"a unix: node needs an absolute socket path, such as "
                f"unix:/run/graceful/admin.sock, not {url!r}"
            )
        if prefix.endswith("/status"):
            prefix = prefix[: -len("/status")]
        return f"unix:{path}:{prefix or UNIX_ADMIN_PREFIX}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"a node must be an http:// or https:// admin URL, such as "
            f"http://10.0.0.5:8100/debug/admin, or unix:/path/to/admin.sock, not {url!r}"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/status"):
        path = path[: -len("/status")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def read_nodes(urls: Sequence[str], files: Sequence[str]) -> list[str]:
    nodes = list(urls)
    for name in files:
        try:
            text = open(name, encoding="utf-8").read()
        except OSError as e:
            raise UsageError(f"cannot read nodes file {name}: {e.strerror or e}")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                nodes.append(line)
    if not nodes:
        raise UsageError("no node given: use --node URL or --nodes-file FILE")
    normalized = [normalize_node(node) for node in nodes]
    seen = set()
    for node in normalized:
        if node in seen:
            raise UsageError(f"node {node} is given twice")
        seen.add(node)
    return normalized


def read_token(token: str | None, token_file: str | None, environ: dict[str, str]) -> str | None:
    if token_file:
        try:
            token = open(token_file, encoding="utf-8").read().strip()
        except OSError as e:
            raise UsageError(f"cannot read token file {token_file}: {e.strerror or e}")
        if not token:
            raise UsageError(f"token file {token_file} is empty")
    return token or environ.get(TOKEN_VARIABLE) or None


def ssl_context_for(cafile: str | None, insecure: bool) -> ssl.SSLContext | None:
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if cafile:
        try:
            return ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"cannot load --cafile {cafile}: {e}")
    return None


def ask_all(client: AdminClient, nodes: Sequence[str]) -> list[NodeStatus | NodeError]:
    """
    Every node's status, asked in parallel, in the nodes' order.
    """

    def one(node: str) -> NodeStatus | NodeError:
        try:
            return client.status(node)
        except NodeError as e:
            return e

    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return list(pool.map(one, nodes))


def _status_json(result: NodeStatus | NodeError) -> dict[str, Any]:
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


def run(
    arguments: argparse.Namespace,
    client: AdminClient,
    nodes: Sequence[str],
    out: TextIO,
    err: TextIO,
    progress: Progress,
) -> int:
    """
    Carry out C{arguments.command}; the exit status.
    """
    command = arguments.command
    if command in ("history", "workers"):
        return run_operation(arguments, client, nodes, out, err)
    if command in ("status", "list"):
        results = ask_all(client, nodes)
        if arguments.json:
            out.write(json.dumps([_status_json(r) for r in results], indent=1) + "\n")
        elif command == "status":
            out.write(status_table(results, time.time()))
        else:
            out.write(list_table(results))
        out.flush()
        failures = [r for r in results if isinstance(r, NodeError)]
        for failure in failures:
            err.write(f"graceful ctl: {failure.node}: {failure.reason}\n")
        return FAILED if failures else OK
    if command == "restart":
        options = RollOptions(arguments.restart_timeout, arguments.poll_interval, arguments.pause)
        started = time.monotonic()
        try:
            rolling_restart(client, nodes, progress, options)
        except NodeError as e:
            left = list(nodes[nodes.index(e.node) + 1 :]) if e.node in nodes else []
            err.write(f"graceful ctl: restart stopped at {e.node}: {e.reason}\n")
            if left:
                err.write(f"graceful ctl: not restarted: {', '.join(left)}\n")
            return FAILED
        out.write(f"restarted {len(nodes)} node(s) in {time.monotonic() - started:.1f}s\n")
        return OK
    # shutdown: every node is asked, whatever happens to the others.
    status = OK
    for node in nodes:
        try:
            client.shutdown(node)
        except NodeError as e:
            err.write(f"graceful ctl: {node}: {e.reason}\n")
            status = FAILED
        else:
            out.write(f"{node}: shutting down\n")
    return status


def run_operation(
    arguments: argparse.Namespace, client: AdminClient, nodes: Sequence[str], out: TextIO, err: TextIO
) -> int:
    from .operations import print_history, set_workers

    if arguments.command == "history":
        return OK if print_history(client, nodes, out, err, arguments.json, NodeError) else FAILED
    if arguments.count is None:
        err.write("graceful ctl: workers needs a count: graceful ctl ... workers N\n")
        return USAGE
    return OK if set_workers(client, nodes, arguments.count, out, err, NodeError) else FAILED


def progress_for(choice: str, out: TextIO) -> Progress:
    tty = getattr(out, "isatty", lambda: False)()
    if choice == "bar" or (choice == "auto" and tty and os.environ.get("TERM") != "dumb"):
        return BarProgress(out)
    return PlainProgress(out)


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse has printed the usage
        return e.code if isinstance(e.code, int) else USAGE
    try:
        nodes = read_nodes(arguments.node, arguments.nodes_file)
        token = read_token(arguments.token, arguments.token_file, dict(os.environ))
        context = ssl_context_for(arguments.cafile, arguments.insecure)
    except UsageError as e:
        err.write(f"graceful ctl: {e}\n")
        return USAGE
    client = HttpAdminClient(token, arguments.timeout, context)
    try:
        return run(arguments, client, nodes, out, err, progress_for(arguments.progress, out))
    except KeyboardInterrupt:
        err.write("\ngraceful ctl: interrupted\n")
        return 130
