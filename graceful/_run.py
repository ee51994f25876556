# -*- test-case-name: tests.unit.test_run -*-
"""
C{graceful run} and C{graceful check}: the command line becomes the same
dict the TOML config is read into, and the config parser checks it, so each
option has its TOML key and its errors are the config's one-liners.

The process then serves as C{graceful.server(...).start(); graceful.wait()}
would: a restart re-runs the same command line (L{original_command}), which
builds the same config and adopts the same sockets.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
import tomllib
import traceback
from pathlib import Path
from typing import Any, MutableMapping

from ._errors import ConfigError

#: The one server C{graceful run MODULE:APP} serves, as C{graceful.server()}.
SERVER = "default"

#: Each option's key: C{graceful.KEY} in the [graceful] table, C{server.KEY}
#: in the server's table.
OPTION_KEYS: dict[str, str] = {
    "app": "server.app",
    "host": "server.host",
    "port": "server.ports",
    "uds": "server.unix_sockets",
    "workers": "graceful.workers",
    "env_file": "graceful.env_file",
    "app_dir": "graceful.app_dir",
    "factory": "server.factory",
    "root_path": "server.root_path",
    "lifespan": "server.lifespan",
    "ssl_certfile": "server.cert",
    "ssl_keyfile": "server.key",
    "ssl_keyfile_password": "server.key_password",
    "ssl_ca_certs": "server.ca_certs",
    "ssl_cert_reqs": "server.cert_reqs",
    "ssl_ciphers": "server.ciphers",
    "ssl_min_version": "server.tls_min_version",
    "log_level": "graceful.log_level",
    "log_format": "graceful.log_format",
    "log_config": "graceful.log_config",
    "access_log": "graceful.access_log",
    "access_log_format": "graceful.access_log_format",
    "proxy_headers": "graceful.proxy_headers",
    "limit_concurrency": "graceful.limit_concurrency",
    "forwarded_allow_ips": "graceful.forwarded_allow_ips",
    "timeout_graceful_shutdown": "graceful.drain_timeout",
    "drain_spread": "graceful.drain_spread",
    "ready_timeout": "graceful.ready_timeout",
    "max_requests": "graceful.max_requests",
    "preload": "graceful.preload",
    "admin": "server.admin",
    "pidfile": "graceful.pidfile",
    "reload": "graceful.reload",
    "reload_dir": "graceful.reload_dirs",
    "backlog": "graceful.backlog",
    "timeout_keep_alive": "graceful.timeout_keep_alive",
    "http": "server.http_impl",
    "ws_max_size": "graceful.ws_max_size",
    "ws_ping_interval": "graceful.ws_ping_interval",
    "threads": "graceful.wsgi_threads",
}

#: Options whose values are paths: made absolute from the current directory,
#: as a relative path in the TOML is taken from the file's folder.
_PATHS = {
    "uds", "env_file", "app_dir", "ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "pidfile",
    "reload_dir", "log_config",
}

#: What C{graceful run MODULE:APP} serves with no --config and no address.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

#: Where errors in options given on the command line say they come from.
COMMAND_LINE = "graceful run"


def option_name(dest: str) -> str:
    return "MODULE:APP" if dest == "app" else "--" + dest.replace("_", "-")


def _value(dest: str, value: Any) -> Any:
    if dest in _PATHS:
        if isinstance(value, list):
            return [os.path.abspath(os.path.expanduser(v)) for v in value]
        return os.path.abspath(os.path.expanduser(value))
    if dest == "access_log":
        return "-" if value else ""
    if dest == "ssl_cert_reqs":
        # uvicorn's numbers (ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED) too.
        return {"0": "none", "1": "optional", "2": "required"}.get(value, value)
    if dest == "forwarded_allow_ips":
        return [ip.strip() for ip in value.split(",") if ip.strip()]
    return value


def config_data(options: argparse.Namespace, toml: dict[str, Any] | None) -> dict[str, Any]:
    """
    The config, in the TOML's shape, that C{options} ask for: C{toml} (the
    --config file's, if any) with every option given on the command line
    put over it.
    """
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (toml or {}).items()}
    table = data.setdefault("graceful", {})
    servers = data.setdefault("servers", {})
    if not isinstance(table, dict) or not isinstance(servers, dict):
        return data  # the parser names what is wrong
    given = {
        dest: value for dest in OPTION_KEYS
        if (value := getattr(options, dest, None)) is not None
    }
    server_options = {d for d in given if OPTION_KEYS[d].startswith("server.")}
    if toml is None:
        server: dict[str, Any] = servers.setdefault(SERVER, {})
        server.setdefault("host", DEFAULT_HOST)
        if not {"port", "uds"} & set(given):
            server["ports"] = [DEFAULT_PORT]
        table["access_log"] = "-"  # uvicorn logs requests unless told not to
    elif server_options:
        if len(servers) != 1:
            names = ", ".join(servers) or "none"
            raise ConfigError(
                f"{options.config}: {', '.join(sorted(option_name(d) for d in server_options))} "
                f"need a config with one server (it has: {names})"
            )
        name = next(iter(servers))
        server = servers[name] = dict(servers[name]) if isinstance(servers[name], dict) else {}
    for dest, value in given.items():
        where, key = OPTION_KEYS[dest].split(".")
        value = _value(dest, value)
        if dest == "access_log" and not value:
            table.pop("access_log", None)
            continue
        (server if where == "server" else table)[key] = value
    return data


def translate(message: str) -> str:
    """
    A config error about the command line's own options, naming the
    option rather than its TOML key.
    """
    for dest, key in sorted(OPTION_KEYS.items(), key=lambda item: -len(item[1])):
        where, name = key.split(".")
        table = f"servers.{SERVER}" if where == "server" else "graceful"
        message = message.replace(f"{table}.{name}", option_name(dest))
    return message.replace(f"servers.{SERVER} has", "the command line has")


def build_config(options: argparse.Namespace) -> Any:
    """
    The L{graceful._config.Config} that C{options} ask for.
    """
    from ._config import parse_config, read_config_data

    if options.config:
        path = Path(options.config)
        return parse_config(config_data(options, read_config_data(path)), path)
    try:
        return parse_config(config_data(options, None), Path.cwd() / COMMAND_LINE)
    except ConfigError as e:
        raise ConfigError(shown(e)) from None


def shown(error: ConfigError) -> str:
    """
    The error's one line, saying C{graceful run:} and the option's name
    rather than the path of a config file that is not there.
    """
    message = str(error).splitlines()[0]
    path = f"{Path.cwd() / COMMAND_LINE}: "
    if not message.startswith(path):
        return message
    return translate(COMMAND_LINE + ": " + message[len(path):])


#: The addresses of the --fd sockets, as the first generation found them:
#: later generations (and workers) get every socket from fd 3 in an order of
#: their parent's, so they must not read them again.
FD_ADDRESSES = "GRACEFUL_FD_ADDRESSES"


def take_fds(options: argparse.Namespace, environ: MutableMapping[str, str], pid: int) -> None:
    """
    C{--fd N}: serve the listening sockets this process was started with
    (by systemd, a supervisor, or a shell), as if systemd had passed them:
    their addresses join C{--port}, C{--host} and C{--uds}, so the servers
    claim them, and every later generation is handed them like any other.

    @raise ConfigError: the descriptors are not 3, 4, ... in order, or one is
        not a listening socket.
    """
    if not options.fd:
        return
    addresses = environ.get(FD_ADDRESSES)
    if addresses is None:
        wanted = list(range(3, 3 + len(options.fd)))
        if options.fd != wanted:
            raise ConfigError(
                f"--fd: give the descriptors from 3 on, in order, as systemd passes them "
                f"({', '.join(map(str, wanted))}), not {', '.join(map(str, options.fd))}"
            )
        found = []
        for fd in options.fd:
            try:
                with socket.socket(fileno=os.dup(fd)) as probe:
                    listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    family, name = probe.family, probe.getsockname()
            except OSError as e:
                raise ConfigError(f"--fd {fd}: not a socket: {e.strerror}") from None
            if not listening:
                raise ConfigError(f"--fd {fd}: not a listening socket")
            if family == socket.AF_UNIX:
                found.append(f"unix:{os.fsdecode(name)}")
            else:
                found.append(f"tcp:{name[0]}:{name[1]}")
        addresses = ",".join(found)
        environ[FD_ADDRESSES] = addresses
        environ["LISTEN_FDS"], environ["LISTEN_PID"] = str(len(options.fd)), str(pid)
    hosts = set()
    for address in addresses.split(","):
        kind, _, rest = address.partition(":")
        if kind == "unix":
            options.uds = [*(options.uds or []), rest]
        else:
            host, _, port = rest.rpartition(":")
            options.port = [*(options.port or []), int(port)]
            hosts.add("" if host in ("0.0.0.0", "::") else host)
    if options.host is None and len(hosts) == 1:
        options.host = hosts.pop()


def _fail(error: ConfigError) -> int:
    sys.stderr.write(f"graceful: error: {shown(error)}\n")
    sys.stderr.flush()
    return 1


def check(options: argparse.Namespace) -> int:
    """
    Check the config and import its apps; print what would serve.
    """
    from ._config import load_apps

    try:
        take_fds(options, dict(os.environ), os.getpid())
        config = build_config(options)
        apps = load_apps(config, os.getcwd())
    except ConfigError as e:
        return _fail(e)
    for server in config.servers:
        kind = apps[server.name][0]
        sys.stdout.write(f"{server.name}: {server.app} ({kind}) on {', '.join(addresses(server))}\n")
    sys.stdout.write("config OK\n")
    return 0


def addresses(server: Any) -> list[str]:
    host = server.host or "0.0.0.0"
    host = f"[{host}]" if ":" in host else host
    plain = "https" if server.cert and not server.https_ports else "http"
    return (
        [f"{plain}://{host}:{port}" for port in server.ports]
        + [f"https://{host}:{port}" for port in server.https_ports]
        + [f"unix:{path}" for path in server.unix_sockets]
    )


def run(options: argparse.Namespace) -> int:
    """
    Serve until shut down.
    """
    from ._config import apply_config, check_apps_apart, load_apps, twisted_tls_needed_by
    from ._logging import begin_logging
    from . import _process
    from ._process import preload_point, runtime as process_runtime, serves_apps
    from .process.transports import import_transport

    try:
        take_fds(options, os.environ, os.getpid())
        config = build_config(options)
    except ConfigError as e:
        return _fail(e)
    try:
        begin_logging(config.settings.log_level, config.settings.log_format,
                      config.settings.log_config)
    except ConfigError as e:
        return _fail(e)
    _process.apps_come_later = True
    runtime = process_runtime()
    runtime._log_to_stdout = False
    try:
        serves = serves_apps(config.settings)
        if serves:
            apps = load_apps(config, runtime.cwd)
        else:
            apps = None
            if not runtime.is_handoff:
                # A new master's workers report a bad app to the old one.
                check_apps_apart(config, runtime.cwd)
        # Before the reactor: it imports Twisted's transport.
        import_transport(twisted_tls_needed_by(config, apps))
        # A worker template waits here; its children go on as workers.
        preload_point()
        runtime = process_runtime()
        runtime._log_to_stdout = False
        if config.settings.pidfile and not runtime.is_handoff:
            runtime.set_pidfile(config.settings.pidfile)
        apply_config(config, runtime, apps, serves=serves)
        for server in runtime.servers.values():
            runtime.prepare_server(server)
    except ConfigError as e:
        for server in runtime.servers.values():
            server.release_prepared()
        if config.settings.reload:
            _print_cause(e)
        runtime.old_process.report_error(shown(e))
        return _fail(e)
    runtime.serve_prepared()
    if config.settings.reload and runtime.worker is None:
        from ._reload import Reloader

        directories = [config.settings.app_dir or runtime.cwd, *config.settings.reload_dirs]
        runtime.reactor.callWhenRunning(Reloader(runtime, directories).start)
    runtime.wait()
    return 0


def _print_cause(error: ConfigError) -> None:
    """
    C{--reload}: the whole traceback of an app that does not import, from
    the app's own frames (the importing machinery's say nothing), since the
    one-line error hides where the mistake is.
    """
    cause = error.__context__
    if cause is None:
        return
    summary = traceback.TracebackException.from_exception(cause)
    summary.stack = traceback.StackSummary.from_list([
        frame for frame in summary.stack
        if not frame.filename.startswith(("<frozen", _PACKAGE, _IMPORTLIB))
    ])
    sys.stderr.write("".join(summary.format()))
    sys.stderr.flush()


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_IMPORTLIB = os.path.dirname(importlib.__file__) + os.sep
