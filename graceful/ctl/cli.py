# -*- test-case-name: tests.unit.ctl.test_cli -*-
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

This module reads the command line and carries it out; talking to a node
is L{graceful.ctl.client}'s, the rolling restart L{graceful.ctl.roll}'s and
what is printed L{graceful.ctl.output}'s.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence, TextIO

from .client import (
    DEFAULT_TIMEOUT,
    UNIX_ADMIN_PREFIX,
    AdminClient,
    HttpAdminClient,
    NodeError,
    NodeStatus,
    ask_all,
    split_unix_node,
)
from .output import (
    BarProgress,
    PlainProgress,
    duration,
    format_table,
    list_table,
    progress_for,
    status_json,
    status_table,
)
from .roll import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RESTART_TIMEOUT,
    Progress,
    RollOptions,
    Verdict,
    judge,
    restart_node,
    rolling_restart,
)

# Imported from here before the client, the roll and the output had
# modules of their own.
__all__ = [
    "BarProgress",
    "HttpAdminClient",
    "NodeError",
    "NodeStatus",
    "PlainProgress",
    "Progress",
    "RollOptions",
    "UsageError",
    "Verdict",
    "duration",
    "format_table",
    "judge",
    "list_table",
    "main",
    "normalize_node",
    "restart_node",
    "rolling_restart",
    "split_unix_node",
    "status_table",
]

#: Exit statuses.
OK, FAILED, USAGE = 0, 1, 2

#: Read when neither --token nor --token-file is given.
TOKEN_VARIABLE = "GRACEFUL_ADMIN_TOKEN"


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
            out.write(json.dumps([status_json(r) for r in results], indent=1) + "\n")
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
