"""
The C{graceful} command: C{run}, C{check}, C{ctl}, C{--version}, C{--help}.

Only the standard library is imported here: C{graceful ctl} must load no
Twisted, and C{graceful run}'s Twisted is imported by L{graceful._run}, once
the command line is known to be good.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

USAGE = 2

_DESCRIPTION = (
    "Named HTTP/HTTPS servers on Twisted that restart with zero downtime: "
    "SIGUSR1 restarts, SIGTERM drains and exits."
)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _run_options(parser: argparse.ArgumentParser) -> None:
    """
    The options of C{run} and C{check}: uvicorn's names where they mean the
    same thing, then graceful's own.  Each one's TOML key is in
    L{graceful._run.OPTION_KEYS}.
    """
    add = parser.add_argument
    add("app", nargs="?", metavar="MODULE:APP",
        help="the app: an ASGI or WSGI app, a twisted.web resource, or (--factory) a factory")
    add("--config", "-c", metavar="FILE",
        help="take the rest from this graceful TOML file; options given here win")
    add("--host", help="bind to this address (default 127.0.0.1)")
    add("--port", type=int, action="append", metavar="PORT",
        help="bind to this port; repeat for several (default 8000)")
    add("--uds", action="append", metavar="PATH", help="bind to this UNIX socket; repeatable")
    add("--fd", type=int, action="append", metavar="FD",
        help="serve the listening socket open on this descriptor (3, 4, ... as systemd passes them)")
    add("--workers", type=int, metavar="N", help="serving processes sharing the sockets (default 1)")
    add("--env-file", metavar="FILE", help="set environment variables from this file before importing the app")
    add("--app-dir", metavar="DIR", help="import the app from this directory (default: the current one)")
    add("--factory", action="store_true", default=None,
        help="MODULE:APP is a function that returns the app: call it")
    add("--root-path", metavar="PATH", help="ASGI root_path: the prefix a proxy strips")
    add("--lifespan", choices=["auto", "on", "off"], help="ASGI lifespan (default auto)")
    add("--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate")
    add("--ssl-keyfile", metavar="FILE", help="the certificate's private key")
    add("--ssl-keyfile-password", metavar="PASSWORD", help="the password of an encrypted key file")
    add("--ssl-ca-certs", metavar="FILE", help="authorities whose client certificates are accepted")
    add("--ssl-cert-reqs", choices=["none", "optional", "required", "0", "1", "2"],
        help="client certificates: none (default), optional or required (uvicorn's 0, 1, 2)")
    add("--ssl-ciphers", metavar="CIPHERS", help="an OpenSSL cipher string")
    add("--ssl-min-version", choices=["1.2", "1.3"], help="the lowest TLS version (default 1.2)")
    add("--log-level", choices=["critical", "error", "warning", "info", "debug"],
        help="the lowest level logged (default info)")
    add("--log-format", choices=["text", "json"], help="text (default), or one JSON object a line")
    add("--log-config", metavar="FILE",
        help="log through Python's logging as this file configures it (.json/.yaml dictConfig, or INI)")
    add("--access-log", action=argparse.BooleanOptionalAction, default=None,
        help="log each request (default on; off under --config unless its access_log says)")
    add("--access-log-format", choices=["twisted", "combined", "json"],
        help="twisted (default: the client in quotes), combined (Apache's), or json")
    add("--proxy-headers", action=argparse.BooleanOptionalAction, default=None,
        help="trust X-Forwarded-* and Forwarded from --forwarded-allow-ips (default off)")
    add("--forwarded-allow-ips", metavar="IPS",
        help="comma-separated addresses trusted to send proxy headers, or '*' "
             "(default 127.0.0.1,::1; UNIX-socket peers always)")
    add("--limit-concurrency", type=int, metavar="N",
        help="answer 503 beyond N requests in progress at once, per server (default: no limit)")
    add("--timeout-graceful-shutdown", type=_seconds, metavar="SECONDS",
        help="seconds a leaving process finishes its requests (drain_timeout, default 30)")
    add("--drain-spread", type=_seconds, metavar="SECONDS",
        help="seconds over which WebSockets are closed while draining")
    add("--ready-timeout", type=_seconds, metavar="SECONDS",
        help="seconds a new process has to serve (default 15)")
    add("--backlog", type=int, metavar="N",
        help="the listen backlog of the sockets bound (default 2048)")
    add("--timeout-keep-alive", type=_seconds, metavar="SECONDS",
        help="close a keep-alive connection idle this long between requests (default 5)")
    add("--http", choices=["auto", "twisted", "native", "httptools", "h11"],
        help="the HTTP/1.1 channel: auto, native or httptools (graceful's own, where installed), "
             "twisted or h11 (twisted.web's)")
    add("--ws-max-size", type=int, metavar="BYTES",
        help="the largest WebSocket message an ASGI app is sent (default 16777216)")
    add("--ws-ping-interval", type=_seconds, metavar="SECONDS",
        help="ping ASGI WebSockets this often (default 20; 0: never)")
    add("--threads", type=int, metavar="N",
        help="threads that run each WSGI app at most (default 16)")
    add("--preload", action=argparse.BooleanOptionalAction, default=None,
        help="fork workers from a process that imported the app (default: on)")
    add("--max-requests", type=int, metavar="N", help="recycle a worker after N requests (0: never)")
    add("--admin", metavar="PATH", help="serve the admin pages under this path, such as /debug/admin")
    add("--pidfile", metavar="FILE", help="keep a pidfile naming the serving process")
    add("--reload", action="store_true", default=None,
        help="development: restart when a file of the app changes")
    add("--reload-dir", action="append", metavar="DIR",
        help="watch this directory too (default: the app's); repeatable")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="graceful", description=_DESCRIPTION)
    top.add_argument("--version", action="store_true", help="print the version and exit")
    commands = top.add_subparsers(dest="command", metavar="{run,check,ctl}")
    run = commands.add_parser(
        "run", help="serve an app", description="Serve MODULE:APP (or --config FILE) until SIGTERM; "
        "SIGUSR1 restarts with zero downtime.",
    )
    _run_options(run)
    check = commands.add_parser(
        "check", help="check a config (and import its apps), print what would serve, and exit",
        description="Check what `graceful run` would serve with these options, and exit.",
    )
    _run_options(check)
    commands.add_parser("ctl", help="status, list, restart, shutdown, history and workers of running nodes",
                        add_help=False)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        from .ctl.cli import main as ctl_main

        return ctl_main(args[1:])
    try:
        options = parser().parse_args(args)
    except SystemExit as e:  # --help, or a usage error argparse has printed
        return e.code if isinstance(e.code, int) else USAGE
    if options.version:
        from . import __version__

        sys.stdout.write(f"graceful {__version__}\n")
        return 0
    if options.command is None:
        parser().print_help(sys.stderr)
        return USAGE
    if options.app is None and options.config is None:
        sys.stderr.write(f"graceful {options.command}: error: give MODULE:APP or --config FILE\n")
        return USAGE
    from . import _run

    if options.command == "check":
        return _run.check(options)
    return _run.run(options)
