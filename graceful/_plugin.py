# -*- test-case-name: tests.unit.test_plugin -*-
"""
The twistd / twist plugin: C{twistd -n graceful --config graceful.toml}.
"""

from __future__ import annotations

import fcntl
import getopt
import os
import sys
from typing import Any

from twisted.application.service import Service
from twisted.python import usage

from ._config import (
    Apps, Config, apply_config, check_apps_apart, load_apps, load_config, twisted_tls_needed_by,
)
from ._errors import ConfigError
from . import _process
from ._process import preload_point, runtime as process_runtime, serves_apps
from .process.runtime import Runtime
from .process.transports import import_transport


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = (
        "Serve the named HTTP/HTTPS servers of a graceful config file; "
        "SIGUSR1 restarts with zero downtime, SIGTERM drains and exits."
    )
    optParameters = [["config", "c", None, "the graceful TOML config file"]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        self.loaded: tuple[Config, Apps | None] | None = None
        self.load_error: ConfigError | None = None
        # The apps are imported here, before twist installs its reactor
        # (twistd does so only after makeService): an ASGI app needs
        # Twisted's asyncio reactor, which graceful installs only then, as
        # it costs plain twisted.web a third of its requests per second.  A
        # bad config is reported by makeService, in one place.
        _process.apps_come_later = True
        try:
            config = load_config(self["config"])
            runtime = process_runtime()
            if serves_apps(config.settings):
                # (load_apps installs the asyncio reactor for an ASGI app.)
                self.loaded = (config, load_apps(config, runtime.cwd))
            else:
                # A master: its workers import the apps.
                if not runtime.is_handoff:
                    check_apps_apart(config, runtime.cwd)
                self.loaded = (config, None)
        except ConfigError as e:
            self.load_error = e
        else:
            # Before twistd imports its reactor, which imports Twisted's
            # transport: a WSGI hello's hand-over under twistd took 264 ms
            # with TLS in it, against 204 under graceful run.
            import_transport(twisted_tls_needed_by(*self.loaded))
            preload_point()


class GracefulService(Service):
    """
    Serves the prepared servers once twistd has daemonized.
    """

    def __init__(self, runtime: Runtime, logfile: str | None = None) -> None:
        self.runtime = runtime
        self.logfile = logfile

    def startService(self) -> None:
        super().startService()
        runtime = self.runtime
        runtime.pid = os.getpid()  # twistd may have forked since makeService
        if self.logfile:
            append_only(self.logfile)
        runtime.serve_prepared()
        runtime.reactor.callWhenRunning(runtime.serving_started)

    def stopService(self) -> Any:
        super().stopService()
        return self.runtime.leave()


def makeService(options: Options) -> GracefulService:
    runtime = process_runtime()
    runtime._log_to_stdout = False  # twistd and twist log for us
    _take_over_from_twistd(options, runtime)
    try:
        load_error = getattr(options, "load_error", None)
        if load_error is not None:
            raise load_error
        loaded = getattr(options, "loaded", None)
        if loaded is None:
            apply_config(load_config(options["config"]), runtime)
        else:
            apply_config(loaded[0], runtime, loaded[1], serves=loaded[1] is not None)
        for server in runtime.servers.values():
            runtime.prepare_server(server)
    except ConfigError as e:
        for server in runtime.servers.values():
            server.release_prepared()
        message = str(e).splitlines()[0]
        runtime.old_process.report_error(message)
        sys.stderr.write(f"graceful: error: {message}\n")
        sys.stderr.flush()
        raise SystemExit(1)
    parent = getattr(options, "parent", None)
    logfile = parent.get("logfile") if parent is not None else None
    return GracefulService(runtime, logfile if logfile and logfile != "-" else None)


def append_only(path: str) -> None:
    """
    Make our descriptors of the log file at C{path} append-only.

    twistd opens its log file at the end without O_APPEND, so an old and a
    new process writing it at once would overwrite each other's lines.
    """
    wanted = os.path.abspath(path)
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            fd = int(name)
            if os.readlink(f"/proc/self/fd/{fd}") == wanted:
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
        except (OSError, ValueError):
            continue


def _take_over_from_twistd(options: Options, runtime: Runtime) -> None:
    """
    Under twistd, graceful keeps the pidfile itself: twistd's would refuse to
    start the new process (the old one still lives) and be deleted by the old
    one at exit.  The new process is started with C{--pidfile=} and, when
    twistd daemonized, with C{--nodaemon} (it is already detached) and the
    same log file.
    """
    parent = getattr(options, "parent", None)
    if parent is None or "pidfile" not in parent:
        return  # twist, or a test calling makeService directly
    if parent["pidfile"] and not runtime.is_handoff:
        runtime.set_pidfile(parent["pidfile"])
    parent["pidfile"] = ""
    runtime.arguments = twistd_arguments_for_new_process(
        runtime.arguments, parent.shortOpt, parent.longOpt, daemon=not parent["nodaemon"]
    )


def twistd_arguments_for_new_process(
    arguments: list[str], short_options: str, long_options: list[str], daemon: bool
) -> list[str]:
    """
    twistd's command line for the new process: the same, but with no pidfile
    check and, for a daemon, in the foreground with the same log file.
    """
    opts, rest = getopt.getopt(arguments, short_options, long_options)
    takes_value = {f"--{name[:-1]}" for name in long_options if name.endswith("=")}
    takes_value |= {
        f"-{short_options[i]}" for i in range(len(short_options) - 1)
        if short_options[i + 1] == ":"
    }
    rebuilt: list[str] = []
    logfile = None
    for option, value in opts:
        if option == "--pidfile":
            continue
        if option in ("-l", "--logfile"):
            logfile = value
            continue
        rebuilt += [option, value] if option in takes_value else [option]
    rebuilt.append("--pidfile=")
    if daemon:
        rebuilt.append("--nodaemon")
        logfile = logfile or "twistd.log"
    if logfile:
        rebuilt.append(f"--logfile={os.path.abspath(logfile) if logfile != '-' else '-'}")
    return rebuilt + rest
