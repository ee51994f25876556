"""
The process: its servers, its place in the line of generations, and the
lifecycle that restarts or shuts it down.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, MutableMapping, Sequence

from attrs import define, field, frozen
from automat import MethodicalMachine
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _drain
from ._event import Event
from ._errors import ConfigError, ExecutableNotAllowed, RestartRefused
from ._handoff import (
    GENERATION_VARIABLE,
    NewProcess,
    NoOldProcess,
    OldProcess,
    PassedSocket,
    RestartFailed,
    describe_exit,
    spawn_new_process,
)
from ._server import Server
from ._sockets import (
    ADMIN_SOCKET_MODE,
    ADMIN_SOCKET_NAME,
    InheritedSocket,
    InheritedSockets,
    ListenSpec,
    bind_unix_socket,
    check_names,
    check_unix_path,
    remove_unix_socket,
    socket_inode,
)
from ._status import ProcessStatus
from ._supervision import (
    NoNotifier,
    NoParentDeathSignal,
    NoPidfile,
    ParentDeathSignal,
    Pidfile,
    SystemdNotifier,
    parent_death_signal,
    pidfile_at,
)
from ._workers import STATUS_INTERVAL, HeldSocket, WorkerGroup, current_rss_mib, worker_slot

PIDFILE_VARIABLE = "GRACEFUL_PIDFILE"
SHUTDOWN_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP")
DEFAULT_DRAIN_SPREAD = 5.0
#: The connection kinds the status always shows, even at 0.
CONNECTION_KINDS = ("http/1.1", "h2", "websocket", "stream")


@define
class Settings:
    """
    The process-wide settings (the C{[graceful]} table of the config).
    """

    drain_timeout: float = 30.0
    #: Seconds over which WebSockets are closed while draining; C{None}:
    #: L{DEFAULT_DRAIN_SPREAD}, or half of a shorter drain_timeout.
    drain_spread: float | None = None
    ready_timeout: float = 15.0
    workers: int = 1
    #: Recycle a worker after this many requests, plus up to the jitter
    #: (0: never).
    max_requests: int = 0
    max_requests_jitter: int = 0
    #: Recycle a worker whose RSS grows past this many MiB (0: never).
    max_worker_memory: float = 0.0
    #: Kill and replace a worker silent for this many seconds (0: never).
    worker_timeout: float = 30.0
    allowed_executables: list[str] = field(factory=list)
    access_log: str | None = None
    directory: str | None = None
    admin_socket: str | None = None

    @property
    def spread(self) -> float:
        """
        The drain_spread in effect: always less than drain_timeout.
        """
        if self.drain_spread is not None and self.drain_spread < self.drain_timeout:
            return self.drain_spread
        return min(DEFAULT_DRAIN_SPREAD, self.drain_timeout / 2)


class LazyReactor:
    """
    The global reactor, not imported yet.
    """

    def resolve(self) -> Any:
        from twisted.internet import reactor

        return reactor


@frozen
class RestartRecord:
    """
    How the last restart went.
    """

    ok: bool
    error: str | None
    at: float
    handoff_seconds: float | None = None


def _first(outputs: Iterable[Any]) -> Any:
    return next(iter(outputs), None)


def _last(outputs: Iterable[Any]) -> Any:
    result = None
    for result in outputs:
        pass
    return result


class _Lifecycle:
    """
    serving -> restarting -> (ready) leaving | (failed) serving;
    serving | restarting -> (shutdown) leaving.
    """

    _machine = MethodicalMachine()

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @_machine.state(initial=True)
    def serving(self) -> None:
        "Serving; no restart under way."

    @_machine.state()
    def restarting(self) -> None:
        "A new process is starting; this one serves until it is ready."

    @_machine.state()
    def leaving(self) -> None:
        "Handed over or shutting down: no longer accepting, draining, exiting."

    @_machine.input()
    def restart(self, executable: str | None) -> Any:
        "Start a new process to take over."

    @_machine.input()
    def ready(self, new_pid: int) -> Any:
        "The new process serves."

    @_machine.input()
    def failed(self, failure: Failure) -> Any:
        "The new process did not come up."

    @_machine.input()
    def shutdown(self) -> Any:
        "Stop serving and exit."

    @_machine.output()
    def _spawn(self, executable: str | None) -> Deferred[int]:
        return self._runtime._spawn(executable)

    @_machine.output()
    def _refuse(self, executable: str | None) -> Deferred[int]:
        return self._runtime._refuse_restart()

    @_machine.output()
    def _hand_over(self, new_pid: int) -> None:
        self._runtime._hand_over(new_pid)

    @_machine.output()
    def _record_failure(self, failure: Failure) -> None:
        self._runtime._restart_failed(failure)

    @_machine.output()
    def _ignore_failure(self, failure: Failure) -> None:
        self._runtime._restart_failed(failure, resume=False)

    @_machine.output()
    def _abandon_new_process(self) -> None:
        self._runtime._abandon_new_process()

    @_machine.output()
    def _leave(self) -> Deferred[None]:
        return self._runtime._shut_down()

    @_machine.output()
    def _already_leaving(self) -> Deferred[None]:
        return self._runtime._when_exited()

    serving.upon(restart, enter=restarting, outputs=[_spawn], collector=_first)
    restarting.upon(restart, enter=restarting, outputs=[_refuse], collector=_first)
    leaving.upon(restart, enter=leaving, outputs=[_refuse], collector=_first)
    restarting.upon(ready, enter=leaving, outputs=[_hand_over])
    restarting.upon(failed, enter=serving, outputs=[_record_failure])
    leaving.upon(failed, enter=leaving, outputs=[_ignore_failure])
    serving.upon(shutdown, enter=leaving, outputs=[_leave], collector=_first)
    restarting.upon(
        shutdown, enter=leaving, outputs=[_abandon_new_process, _leave], collector=_last
    )
    leaving.upon(shutdown, enter=leaving, outputs=[_already_leaving], collector=_first)


def _connections_by_kind(site: Any) -> dict[str, int]:
    by_kind = getattr(site, "connections_by_kind", None)
    if by_kind is None:
        return {}
    counts: dict[str, int] = by_kind()
    return counts


def _connection_counts(site: Any) -> dict[str, int]:
    """
    A site's open connections by kind, every known kind shown.
    """
    counts = {kind: 0 for kind in CONNECTION_KINDS}
    if site is not None:
        counts.update(_connections_by_kind(site))
    return counts


def _original_command() -> tuple[list[str], list[str]]:
    """
    How this process was started: the interpreter with its own options, and
    the program's arguments (C{sys.argv}).
    """
    orig = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    argv = list(sys.argv)
    prefix = orig[: len(orig) - len(argv) + 1] if len(orig) >= len(argv) else orig[:1]
    prefix[0] = sys.executable
    return prefix, argv[1:]


def _write_stderr(data: bytes) -> None:
    # A new process's stderr, forwarded as it comes: raw, past any logging.
    os.write(2, data)


def _not_ours(path: str) -> str | None:
    """
    Why C{path} (an allowed executable) could have been changed by someone
    other than root or us, or L{None}: the file, the link naming it and the
    folders holding either must belong to root or us and be writable by
    neither group nor others.
    """
    owners = (0, os.geteuid())
    checked: list[tuple[str, str]] = []
    real = os.path.realpath(path)
    for candidate in dict.fromkeys([path, real]):
        checked.append((candidate, "file"))
        checked.append((os.path.dirname(candidate) or ".", "folder"))
    for target, what in checked:
        try:
            info = os.stat(target) if what == "folder" or target == real else os.lstat(target)
        except OSError as e:
            return f"cannot check {target}: {e.strerror or e}"
        if stat.S_ISLNK(info.st_mode):
            continue  # a link's own mode means nothing; its folder is checked
        if info.st_uid not in owners:
            return f"{what} {target} belongs to uid {info.st_uid}"
        if info.st_mode & 0o022:
            return f"{what} {target} is writable by group or others"
    return None


def _working_directory(environ: MutableMapping[str, str]) -> str:
    # $PWD keeps the path as typed (through symlinks such as releases/current).
    pwd = environ.get("PWD")
    here = os.getcwd()
    if pwd and os.path.isabs(pwd):
        try:
            if os.path.samefile(pwd, here):
                return pwd
        except OSError:
            pass
    return here


@define(eq=False)
class Runtime:
    """
    Everything one serving process is: its servers, its generation, how it
    hands over to the next one and how it leaves.

    Build it with L{Runtime.from_environment}; C{graceful.server()} uses the
    one for the global reactor.
    """

    _reactor: Any
    environ: MutableMapping[str, str]
    pid: int
    generation: int = 1
    old_process: OldProcess | NoOldProcess = field(factory=NoOldProcess)
    inherited: InheritedSockets = field(factory=InheritedSockets)
    notifier: SystemdNotifier | NoNotifier = field(factory=NoNotifier)
    pidfile: Pidfile | NoPidfile = field(factory=NoPidfile)
    parent_death: ParentDeathSignal | NoParentDeathSignal = field(factory=NoParentDeathSignal)
    settings: Settings = field(factory=Settings)
    interpreter: list[str] = field(factory=lambda: [sys.executable])
    arguments: list[str] = field(factory=list)
    cwd: str = field(factory=os.getcwd)
    servers: dict[str, Server] = field(factory=dict)
    services: MultiService = field(factory=MultiService)
    drain_callbacks: list[Callable[[], Any]] = field(factory=list)
    started_at: float = field(factory=time.time)
    last_restart: RestartRecord | None = None
    restarts: int = 0
    failed_restarts: int = 0
    draining: bool = False
    forward_stderr: Callable[[bytes], None] = field(default=lambda data: _write_stderr(data))
    operational_pages: Callable[[Runtime, Server], None] = lambda runtime, server: None
    #: Called as serving starts, before any worker: makes or reads the admin
    #: token of admin pages that configure none (see graceful._admin_token).
    prepare_admin: Callable[[Runtime], None] = lambda runtime: None
    _new_process: NewProcess | None = None
    _restart_began: float = 0.0
    _restart_result: Deferred[int] | None = None
    _exited: Event = field(factory=Event)
    _drain_began: float | None = None
    _drain_reason: str = "shutdown"
    _serving: bool = False
    _handed_over: bool = False
    worker_slot: int | None = None
    group: WorkerGroup | None = None
    group_status: dict[str, Any] | None = None
    #: Told by the master that a roll replaces this worker.
    _retired: bool = False
    missing: list[ListenSpec] = field(factory=list)
    _worker_facts: dict[str, Any] = field(factory=dict)
    _status_reports: LoopingCall | None = None
    #: The UNIX socket files this process (or its group) listens on, with
    #: their inodes: removed at the final shutdown if still the same file.
    unix_files: dict[str, int] = field(factory=dict)
    _admin_socket: Any = None
    _admin_port: Any = None
    _log_to_stdout: bool = True
    #: The lifespans of the ASGI apps this process serves.
    lifespans: list[Any] = field(factory=list)
    apps_started: bool = False
    exit_process: Callable[[int], None] = field(default=lambda code: os._exit(code))
    _lifecycle: _Lifecycle = field(init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        self._lifecycle = _Lifecycle(self)

    @property
    def reactor(self) -> Any:
        """
        The reactor; the global one is imported on first use, so that an
        ASGI app mounted before then gets Twisted's asyncio reactor.
        """
        if isinstance(self._reactor, LazyReactor):
            self._reactor = self._reactor.resolve()
        return self._reactor

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str], reactor: Any
    ) -> Runtime:
        """
        Read what the process was handed: inherited sockets, the handoff
        pipes, the generation, the pidfile and systemd's notify socket.
        Handoff variables are removed so no process we start sees them.
        """
        pid = os.getpid()
        old_process = OldProcess.from_environment(environ) or NoOldProcess()
        inherited = InheritedSockets.from_environment(
            environ, pid, handoff=old_process.is_handoff
        )
        generation = int(environ.pop(GENERATION_VARIABLE, "1") or 1)
        interpreter, arguments = _original_command()
        slot, group_status = worker_slot(environ)
        runtime = cls(
            worker_slot=slot,
            group_status=group_status,
            reactor=reactor,
            environ=environ,
            pid=pid,
            generation=generation,
            old_process=old_process,
            inherited=inherited,
            notifier=SystemdNotifier.from_environment(environ),
            pidfile=pidfile_at(environ.get(PIDFILE_VARIABLE)),
            interpreter=interpreter,
            arguments=arguments,
            cwd=_working_directory(environ),
            parent_death=parent_death_signal(),
        )
        if runtime.role == "worker":
            runtime.watch_master()
        return runtime

    # -- facts --------------------------------------------------------------

    @property
    def is_handoff(self) -> bool:
        """
        Whether an older graceful process started this one.
        """
        return self.old_process.is_handoff

    @property
    def role(self) -> str:
        """
        C{"single"}: serves alone; C{"master"}: holds the sockets for its
        workers and serves nothing (with C{workers > 1}, or as PID 1);
        C{"worker"}: serves for a master.
        """
        if self.worker_slot is not None:
            return "worker"
        # As PID 1 (a container) a re-exec would end the PID namespace with
        # the old process: be a master that never leaves, even for 1 worker.
        return "master" if self.settings.workers > 1 or self.pid == 1 else "single"

    @property
    def restarting(self) -> bool:
        if self.group is not None:
            return self.group.rolling
        if self.group_status is not None:
            return bool(self.group_status.get("restarting"))
        return self._new_process is not None

    def set_pidfile(self, path: str | None) -> None:
        """
        Keep a pidfile at C{path}; every later generation keeps it too.
        """
        if path:
            self.environ[PIDFILE_VARIABLE] = str(Path(path).absolute())
        else:
            self.environ.pop(PIDFILE_VARIABLE, None)
        self.pidfile = pidfile_at(self.environ.get(PIDFILE_VARIABLE))

    def set_admin_socket(self, path: str | None) -> None:
        """
        Serve the admin pages of the whole process, without a token, on a
        private UNIX socket at C{path} (mode 0600: its owner alone can
        connect), under C{/debug/admin}.
        """
        if self._admin_socket is not None or self._admin_port is not None:
            raise ConfigError("set_admin_socket() must come before the first start()")
        self.settings.admin_socket = check_unix_path(path) if path else None

    def server(self, name: str) -> Server:
        server = self.servers.get(name)
        if server is None:
            check_names([name])
            server = self.servers[name] = Server(name, self)
        return server

    def access_log(self) -> Callable[[str], None] | None:
        target = self.settings.access_log
        if not target:
            return None
        if target == "-":
            log = Logger(namespace="graceful.access")
            return lambda line: log.info("{line}", line=line)
        handle = open(target, "a", buffering=1, encoding="utf-8")

        def write(line: str) -> None:
            handle.write(line + "\n")

        return write

    def add_operational_pages(self, server: Server) -> None:
        self.operational_pages(self, server)

    def add_service(self, service: IService) -> None:
        service.setServiceParent(self.services)

    def on_drain(self, callback: Callable[[], Any]) -> None:
        self.drain_callbacks.append(callback)

    # -- starting -----------------------------------------------------------

    def prepare_server(self, server: Server) -> None:
        """
        Do everything that can fail for C{server} before serving: a port used
        twice, TLS files, binding.
        """
        taken = {
            (spec.host, spec.port): other.name
            for other in self.servers.values()
            if other is not server
            for spec in other.listen_specs()
            if spec.port and (other.listeners or other._prepared)
        }
        paths = {
            spec.path: other.name
            for other in self.servers.values()
            if other is not server
            for spec in other.listen_specs()
            if spec.path is not None and (other.listeners or other._prepared)
        }
        if self.settings.admin_socket:
            paths[self.settings.admin_socket] = "the admin socket"
        for spec in server.listen_specs():
            if spec.path is not None and spec.path in paths:
                raise ConfigError(
                    f"UNIX socket {spec.path} is used twice "
                    f"({paths[spec.path]} and server {server.name!r})"
                )
            key = (spec.host, spec.port)
            if spec.port and key in taken:
                raise ConfigError(
                    f"port {spec.port} is used twice (servers {taken[key]!r} and {server.name!r})"
                )
            if spec.port:
                taken[key] = server.name
        try:
            server.prepare()
            self._prepare_admin_socket()
        except ConfigError as e:
            server.release_prepared()
            self.old_process.report_error(str(e))
            raise

    def own_unix_file(self, path: str | None) -> None:
        """
        Remember the UNIX socket file at C{path} (bound or taken over now) for
        removal at the final shutdown; a worker never removes one.
        """
        if path is None or self.role == "worker":
            return
        inode = socket_inode(path)
        if inode is not None:
            self.unix_files[path] = inode

    def _prepare_admin_socket(self) -> None:
        """
        Take (from the old process) or bind the private admin socket, once.
        A worker has none: its master serves it.
        """
        path = self.settings.admin_socket
        if not path or self.role == "worker":
            return
        if self._admin_socket is not None or self._admin_port is not None:
            return
        inherited = self.inherited.claim_path(path)
        if inherited is not None:
            self._admin_socket = inherited
        else:
            try:
                self._admin_socket = bind_unix_socket(path, ADMIN_SOCKET_MODE)
            except ConfigError as e:
                raise ConfigError(f"graceful.admin_socket: {e}") from None
        self.own_unix_file(path)

    def _serve_admin_socket(self) -> None:
        prepared, self._admin_socket = self._admin_socket, None
        if prepared is None:
            return
        from ._admin import AdminResource
        from ._routing import Router
        from ._server import DEFAULT_ADMIN_PREFIX, adopt_unix_port
        from twisted.web.server import Site

        router = Router()
        # A stand-in server: the admin socket shows the whole process.
        pages = Server("admin_socket", self, admin_prefix=DEFAULT_ADMIN_PREFIX)
        router.mount(DEFAULT_ADMIN_PREFIX, AdminResource(self, pages, private=True))
        site = Site(router)
        site.noisy = False
        # The admin logs its actions itself; status polls need no lines.
        site.log = lambda request: None  # type: ignore[method-assign]
        fd = prepared.fd if isinstance(prepared, InheritedSocket) else prepared.fileno()
        try:
            self._admin_port = adopt_unix_port(self.reactor, fd, site, ADMIN_SOCKET_MODE)
        finally:
            prepared.close()
        self._log.info(
            "{pid}: admin server started listening on [unix:{path}]",
            pid=self.pid,
            path=self.settings.admin_socket,
        )

    def start_server(self, server: Server) -> None:
        """
        Prepare C{server} and, in a process that serves alone, serve now.  A
        master never serves; a worker serves once it knows it has every
        socket it needs.
        """
        self.prepare_server(server)
        self.serve_prepared()

    def serve_prepared(self) -> None:
        if self.role == "single":
            for server in self.servers.values():
                if server._prepared:
                    server.serve()
            self._serve_admin_socket()

    def wait(self) -> None:
        """
        Run until every server has shut down, with the signals installed.
        """
        if self._log_to_stdout:
            from twisted.logger import globalLogBeginner, textFileLogObserver

            globalLogBeginner.beginLoggingTo(
                [textFileLogObserver(sys.stdout)], redirectStandardIO=False
            )
            self._log_to_stdout = False
        self.reactor.callWhenRunning(self.serving_started)
        self.reactor.run()

    def serving_started(self) -> None:
        """
        Every server listens and the reactor runs: report ready, to the old
        process or to the supervisor, then start the background services
        once the old generation's have stopped.
        """
        if self._serving:
            return
        self._serving = True
        if self.role != "worker":
            self.prepare_admin(self)
        if self.role == "master":
            self._start_workers()
            return
        if self.role == "worker":
            self._serve_as_worker()
        self._start_apps().addCallbacks(lambda _: self._apps_started(), self._apps_failed)

    def _start_apps(self) -> Deferred[Any]:
        """
        Run every ASGI app's lifespan startup, bounded by ready_timeout.
        """
        if not self.lifespans:
            return succeed(None)
        started = DeferredList(
            [lifespan.startup() for lifespan in self.lifespans],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        started.addTimeout(self.settings.ready_timeout, self.reactor)
        return started

    def _apps_failed(self, failure: Failure) -> None:
        from twisted.internet.defer import CancelledError, FirstError, TimeoutError

        error = failure.value
        if isinstance(error, FirstError):
            error = error.subFailure.value
        # The timeout cancels the startups, so it may show as a cancellation.
        if isinstance(error, (TimeoutError, CancelledError)):
            reason = (
                f"ASGI lifespan startup did not finish within ready_timeout "
                f"({self.settings.ready_timeout:g}s)"
            )
        else:
            reason = f"ASGI lifespan startup failed: {error}".splitlines()[0]
        self.old_process.report_error(reason)
        sys.stderr.write(f"graceful: error: {reason}\n")
        sys.stderr.flush()
        self.exit_process(1)

    def _apps_started(self) -> None:
        self.apps_started = True
        for server in self.servers.values():
            server.resume_accepting()
        paths = {id(s): s.unix_path() for s in self.inherited.sockets}
        for dropped in self.inherited.close_unclaimed():
            self._log.info(
                "{pid}: closed inherited socket {name}: no server asks for it",
                pid=self.pid,
                name=dropped.name,
            )
            path = paths.get(id(dropped))
            if path and self.role == "single":
                # The old process stopped accepting on it: we were its last
                # holder, so its file goes too.
                inode = socket_inode(path)
                if inode is not None:
                    remove_unix_socket(path, inode)
        self.install_signal_handlers()
        if self.role == "worker":
            self._report_to_master()
            return
        if self.is_handoff:
            self.old_process.report_ready()
        else:
            self._write_pidfile(self.pid)
            self.notifier.notify(ready=1, mainpid=self.pid, status="serving")
        self.old_process.listen(
            self.reactor, self._took_over, on_gone=self._old_generation_gone
        ).addCallback(self._start_services)

    # -- as a master or a worker ----------------------------------------------

    def _start_workers(self) -> None:
        held = []
        for server in self.servers.values():
            for prepared in server._prepared:
                held.append(HeldSocket(prepared.spec, prepared.fd, prepared.owner))
            server._prepared = []
        # The master serves the admin socket itself: it speaks for the group.
        self._serve_admin_socket()
        self.group = WorkerGroup(self, self.settings.workers, held)
        self.install_signal_handlers()

        def ready(_: object) -> None:
            self._log.info(
                "{pid}: {count} workers serve", pid=self.pid, count=self.settings.workers
            )
            self._write_pidfile(self.pid)
            self.notifier.notify(ready=1, mainpid=self.pid, status="serving")

        def failed(failure: Failure) -> None:
            self._log.error(
                "{pid}: the workers did not come up: {why}",
                pid=self.pid,
                why=failure.getErrorMessage(),
            )
            self.shutdown()

        self.group.serve().addCallbacks(ready, failed)

    def _serve_as_worker(self) -> None:
        """
        Serve the inherited sockets; if the config asks for a port the
        master does not hold yet, say so and leave: the master binds it and
        starts us again.
        """
        if self.missing:
            need = [
                {
                    "server": s.server,
                    "tls": s.tls,
                    "port": s.port,
                    "host": s.host,
                    "index": s.index,
                    "path": s.path,
                }
                for s in self.missing
            ]
            self.old_process.send("need", json.dumps(need))
            os._exit(0)
        claimed = [
            listener.spec.fd_name
            for server in self.servers.values()
            for listener in server.listeners
        ] + [p.spec.fd_name for server in self.servers.values() for p in server._prepared]
        for server in self.servers.values():
            if server._prepared:
                server.serve()
        self._worker_facts = {"claimed": claimed, "workers": self.settings.workers}

    def _report_to_master(self) -> None:
        self.old_process.report_ready(self._worker_facts, keep_open=True)
        # A master that finds us stuck sends SIGUSR2 before SIGKILL: the
        # stacks go to stderr, which it relays.
        try:
            faulthandler.register(signal.SIGUSR2, all_threads=True)
        except (ValueError, OSError, RuntimeError, AttributeError):
            pass  # no usable stderr: the worker is killed without its stacks

        def report() -> None:
            status = self.own_status()
            status["rss_mib"] = round(current_rss_mib(), 1)
            self.old_process.send("status", json.dumps(status))

        reports = LoopingCall(report)
        reports.clock = self.reactor
        reports.start(STATUS_INTERVAL, now=True)
        self._status_reports = reports
        released = self.old_process.listen(
            self.reactor,
            self._took_over,
            on_message=self._from_master,
            on_gone=lambda released: self._master_gone(),
        )
        if self.worker_slot == 0:
            released.addCallback(self._start_services)
        if self._master_is_gone():
            self._master_gone()

    def watch_master(self) -> None:
        """
        As a worker, have the kernel send us SIGTERM if the master dies (as
        the master's own shutdown would); before the handlers are installed
        that ends a worker that serves nothing yet.
        """
        self.parent_death.arm(signal.SIGTERM)

    def _master_is_gone(self) -> bool:
        # Our parent is no longer the master that started us: it died, maybe
        # before watch_master armed the signal.
        return self.parent_death.parent_pid() != self.old_process.pid

    def _from_master(self, kind: str, payload: str) -> None:
        if kind == "retire":
            # A roll replaces this worker: drain as replaced, not as shut down.
            self._retired = True
            self.leave()
        elif kind == "group":
            try:
                self.group_status = json.loads(payload)
            except ValueError:
                pass

    def _master_gone(self) -> None:
        """
        The master died (its pipe closed, or the kernel told us): nothing
        would restart or stop us, so drain and exit rather than serve on.
        """
        if not self.draining:
            self._log.warn(
                "{pid}: the master {master} is gone; draining and exiting",
                pid=self.pid,
                master=self.old_process.pid,
            )
            self.leave()

    def _old_generation_gone(self, released: bool) -> None:
        """
        The old process's pipe closed.  Before it released, it died (killed,
        crashed): nobody else will name us in the pidfile and to systemd,
        nor let our services start; take over at once.
        """
        if released or self.draining:
            return
        self._log.warn(
            "{pid}: previous generation {old} is gone; taking over",
            pid=self.pid,
            old=self.old_process.pid,
        )
        self._write_pidfile(self.pid)
        self.notifier.notify(mainpid=self.pid, ready=1, status="serving")

    def _took_over(self, facts: dict[str, float]) -> None:
        """
        The old process confirmed the handoff: the restart that made us
        succeeded.  Keep its facts and the process's restart counts.
        """
        self.restarts = int(facts.get("restarts", self.restarts))
        self.failed_restarts = int(facts.get("failed_restarts", self.failed_restarts))
        self.last_restart = RestartRecord(
            True, None, facts.get("at", time.time()), facts.get("handoff_seconds")
        )

    def _start_services(self, released: dict[str, float]) -> None:
        """
        Start the background services, now that no older generation runs
        them; log how long they were paused across the handoff.
        """
        if self.draining or self.services.running:
            return
        if list(self.services):
            if "at" in released:
                self._log.info(
                    "{pid}: background services started {pause_ms:.1f} ms after "
                    "the old generation's stopped",
                    pid=self.pid,
                    pause_ms=max(0.0, time.time() - released["at"]) * 1000,
                )
            else:
                self._log.info("{pid}: background services started", pid=self.pid)
        self.services.startService()

    def install_signal_handlers(self) -> None:
        """
        SIGUSR1 restarts; SIGTERM, SIGINT, SIGQUIT and SIGHUP shut down
        gracefully.  Handlers only schedule the work on the reactor.
        """

        def on_restart(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(self._restart_from_signal)

        def on_shutdown(signum: int, frame: Any) -> None:
            # A worker leaves alone (its master asked, the whole group got
            # the signal, or the master died); anything else shuts the
            # process down.
            self.reactor.callFromThread(self._shutdown_signalled)

        signal.signal(signal.SIGUSR1, on_restart)
        for name in SHUTDOWN_SIGNALS:
            signal.signal(getattr(signal, name), on_shutdown)

    # -- restarting ---------------------------------------------------------

    def check_executable(self, executable: str) -> str:
        """
        The entry of C{allowed_executables} that C{executable} names (the
        same string, or the same file): what a restart runs, never the
        client's string, so that a link the client swaps after the check
        changes nothing.

        @raise ExecutableNotAllowed: C{allowed_executables} does not list
            it, or the listed file, or its folder, may be changed by someone
            else (it is writable by group or others, or belongs to another
            user than root or us).
        """
        allowed = self.settings.allowed_executables
        chosen = executable if executable in allowed else None
        if chosen is None:
            wanted = os.path.realpath(executable)
            chosen = next((a for a in allowed if os.path.realpath(a) == wanted), None)
        if chosen is None:
            raise ExecutableNotAllowed(
                f"executable {executable!r} is not in allowed_executables"
            )
        problem = _not_ours(chosen)
        if problem:
            raise ExecutableNotAllowed(f"allowed executable {chosen!r} is refused: {problem}")
        return chosen

    def restart(self, executable: str | None = None, trusted: bool = False) -> Deferred[int]:
        """
        Start a new process to take over every server.  Fires with its pid
        once it serves; fails with L{RestartFailed} or L{RestartRefused}.

        @param trusted: the caller is the program itself, which may run any
            executable; otherwise it must be in C{allowed_executables}.
        """
        if executable and not trusted:
            try:
                executable = self.check_executable(executable)
            except ExecutableNotAllowed as e:
                return fail(e)
        if self.role == "worker":
            # The master restarts the whole group.
            self.old_process.send("restart", json.dumps({"executable": executable}))
            return succeed(self.pid)
        if self.group is not None:
            return self.group.restart(executable)
        result: Deferred[int] = self._lifecycle.restart(executable)
        return result

    def _shutdown_signalled(self) -> None:
        if self.role == "worker" and self._master_is_gone():
            self._master_gone()
        else:
            self.leave()

    def _restart_from_signal(self) -> None:
        self.restart().addErrback(lambda failure: None)

    def command_for(self, executable: str | None) -> list[str]:
        if executable is None:
            return [*self.interpreter, *self.arguments]
        if executable.endswith(".py"):
            return [sys.executable, executable, *self.arguments]
        return [executable, *self.arguments]

    def _spawn(self, executable: str | None) -> Deferred[int]:
        self._restart_began = self.reactor.seconds()
        result: Deferred[int] = Deferred()
        self._restart_result = result
        self._log.info("{pid}: server reloading", pid=self.pid)
        self.notifier.notify(
            reloading=1, monotonic_usec=int(time.monotonic() * 1_000_000)
        )
        sockets = [
            PassedSocket(fd, spec.fd_name)
            for server in self.servers.values()
            for spec, fd in server.passed_sockets()
        ]
        if self._admin_port is not None:
            sockets.append(PassedSocket(self._admin_port.fileno(), ADMIN_SOCKET_NAME))
        self._close_non_graceful_ports()
        try:
            self._new_process = spawn_new_process(
                self.reactor,
                self.reactor,
                command=self.command_for(executable),
                environ=self.environ,
                cwd=self.settings.directory or self.cwd,
                sockets=sockets,
                generation=self.generation + 1,
                extra_environ={},
                ready_timeout=self.settings.ready_timeout,
                forward_stderr=self.forward_stderr,
            )
        except Exception as e:
            failure = Failure(RestartFailed(f"cannot start new process: {e}"))
            self.reactor.callLater(0, self._lifecycle.failed, failure)
            return result
        self._new_process.ready.addCallbacks(self._lifecycle.ready, self._lifecycle.failed)
        return result

    def _record_restart(self, ok: bool, error: str | None, seconds: float | None) -> None:
        if ok:
            self.restarts += 1
        else:
            self.failed_restarts += 1
        self.last_restart = RestartRecord(ok, error, time.time(), seconds)

    def _write_pidfile(self, pid: int) -> None:
        # A pidfile we cannot write must not stop a handoff halfway.
        try:
            self.pidfile.write(pid)
        except OSError as e:
            self._log.error(
                "{pid}: cannot write pidfile {path}: {error}",
                pid=self.pid,
                path=str(self.pidfile),
                error=e.strerror or str(e),
            )

    def _reopen_non_graceful_ports(self) -> None:
        """
        A failed restart: bind again the ports of servers that closed them
        for the new process (set_graceful(False)).
        """
        for server in self.servers.values():
            if server.graceful or server.listeners:
                continue
            try:
                server.prepare()
                server.serve()
            except ConfigError as e:
                self._log.error(
                    "{pid}: cannot reopen the ports of server {server}: {error}",
                    pid=self.pid,
                    server=server.name,
                    error=str(e),
                )

    def _close_non_graceful_ports(self) -> None:
        for server in self.servers.values():
            if not server.graceful:
                server.stop_accepting()
                server.listeners.clear()

    def _refuse_restart(self) -> Deferred[int]:
        why = "shutting down" if self.draining else "a restart is already running"
        self._log.warn("{pid}: restart refused: {why}", pid=self.pid, why=why)
        return fail(RestartRefused(f"restart refused: {why}"))

    def _hand_over(self, new_pid: int) -> None:
        seconds = self.reactor.seconds() - self._restart_began
        self._record_restart(True, None, seconds)
        self._write_pidfile(new_pid)
        self.notifier.notify(mainpid=new_pid, ready=1)
        self._log.info(
            "{pid}: process {new_pid} (generation {generation}) is ready after "
            "{seconds:.3f}s; handing over",
            pid=self.pid,
            new_pid=new_pid,
            generation=self.generation + 1,
            seconds=seconds,
        )
        new_process, self._new_process = self._new_process, None
        if new_process is not None:
            new_process.on_exit = lambda reason: self._successor_exited(new_pid, reason)
            new_process.accept(
                {
                    "handoff_seconds": round(seconds, 6),
                    "at": time.time(),
                    "restarts": self.restarts,
                    "failed_restarts": self.failed_restarts,
                }
            )
        result, self._restart_result = self._restart_result, None
        self._depart(new_process)
        if result is not None:
            result.callback(new_pid)

    def _successor_exited(self, new_pid: int, reason: Failure) -> None:
        """
        The process we handed over to ended while we drain.  A clean exit
        is its own handover or shutdown; anything else deserves a line, as
        this one is on its way out too.
        """
        how = describe_exit(reason)
        if how != "exited with status 0":
            self._log.error(
                "{pid}: process {new_pid}, which took over, {how} while this one drains",
                pid=self.pid,
                new_pid=new_pid,
                how=how,
            )

    def _restart_failed(self, failure: Failure, resume: bool = True) -> None:
        new_process, self._new_process = self._new_process, None
        error = failure.value
        reason = getattr(error, "reason", None) or str(error)
        self._record_restart(False, reason, None)
        if resume:
            self._log.error(
                "{pid}: restart failed, still serving: {reason}", pid=self.pid, reason=reason
            )
            tail = getattr(error, "stderr_tail", "")
            if tail:
                self._log.error("{pid}: new process stderr:\n{tail}", pid=self.pid, tail=tail)
            self.notifier.notify(ready=1, status="restart failed: " + reason)
        if new_process is not None:
            new_process.kill()
        if resume:
            self._reopen_non_graceful_ports()
        result, self._restart_result = self._restart_result, None
        if result is not None:
            result.errback(failure)

    def _abandon_new_process(self) -> None:
        if self._new_process is not None:
            self._new_process._fail("shutdown asked for while the new process started")

    # -- leaving ------------------------------------------------------------

    def shutdown(self) -> Deferred[None]:
        """
        Shut the process down (with workers: the whole group): stop
        accepting, finish the requests in flight (up to drain_timeout), stop
        the services, and exit.
        """
        if self.role == "worker":
            self.old_process.send("shutdown")
            return succeed(None)
        if self.group is not None:
            return self._shut_group_down()
        return self.leave()

    def leave(self) -> Deferred[None]:
        """
        This process alone stops accepting, drains, and exits.
        """
        if self.group is not None:
            return self._shut_group_down()
        result: Deferred[None] = self._lifecycle.shutdown()
        return result

    def _shut_group_down(self) -> Deferred[None]:
        assert self.group is not None
        if not self.draining:
            self.draining = True
            self._log.info("{pid}: server shutting down", pid=self.pid)
            self.notifier.notify(stopping=1)
            self.group.shutdown().addBoth(lambda _: self._exit())
        return self._when_exited()

    def _shut_down(self) -> Deferred[None]:
        self._log.info("{pid}: server shutting down", pid=self.pid)
        self.notifier.notify(stopping=1)
        self._depart(None)
        return self._when_exited()

    def _when_exited(self) -> Deferred[None]:
        return self._exited.wait()

    def _depart(self, successor: NewProcess | None) -> None:
        """
        Stop accepting, tell the app, stop the services (then let the
        successor start its own), drain the connections, and exit.
        """
        self.draining = True
        self._handed_over = successor is not None
        for server in self.servers.values():
            server.stop_accepting()
        if self._admin_port is not None:
            self._admin_port.stopListening()
        for callback in self.drain_callbacks:
            maybeDeferred(callback).addErrback(
                lambda f: self._log.failure("on_drain callback failed", f)
            )
        services = self._stop_services()
        if self.role == "worker":
            if self._status_reports is not None and self._status_reports.running:
                self._status_reports.stop()
            self.old_process.send("status", json.dumps(self.own_status()))
            if self.worker_slot == 0:
                services.addBoth(lambda _: self.old_process.send("released"))
        if successor is not None:
            # Chained, so the exit also waits for the message to be flushed.
            services.addBoth(lambda _: successor.release())
        sites = [server.site for server in self.servers.values() if server.site is not None]
        self._drain_began = self.reactor.seconds()
        # A worker retired by a rolling restart is replaced too: its master
        # says so on the pipe (or, from an older master, in its status).
        replaced = successor is not None or (
            self.role == "worker" and (self._retired or self.restarting)
        )
        reason = "restart" if replaced else "shutdown"
        self._drain_reason = reason
        timeout_s = self.settings.drain_timeout
        # With a successor, idle keep-alive connections wait for their next
        # request (answered with Connection: close) rather than race a close.
        idle_grace = _drain.handover_idle_grace(timeout_s) if replaced else None
        drained = DeferredList(
            [
                site.drain(
                    reason, spread=self.settings.spread, timeout=timeout_s, idle_grace=idle_grace
                )
                for site in sites
            ]
            + [services]
        )
        in_flight = sum(site.in_flight for site in sites)
        if in_flight:
            self._log.info(
                "{pid}: finishing {count} request(s) in flight", pid=self.pid, count=in_flight
            )
        timeout = self.reactor.callLater(
            self.settings.drain_timeout, self._drain_timed_out, sites
        )

        def done(_: object) -> None:
            if timeout.active():
                timeout.cancel()
            self._stop_apps()

        drained.addBoth(done)

    def _stop_apps(self) -> None:
        """
        Once drained, run every ASGI app's lifespan shutdown (bounded by
        drain_timeout), then exit.
        """
        if not self.lifespans:
            self._exit()
            return
        stopped = DeferredList([lifespan.shutdown() for lifespan in self.lifespans])
        stopped.addTimeout(self.settings.drain_timeout, self.reactor)
        stopped.addErrback(
            lambda f: self._log.warn(
                "{pid}: ASGI lifespan shutdown did not finish within drain_timeout",
                pid=self.pid,
            )
        )
        stopped.addBoth(lambda _: self._exit())

    def _stop_services(self) -> Deferred[None]:
        if not self.services.running:
            return succeed(None)
        d: Deferred[None] = maybeDeferred(self.services.stopService)
        d.addErrback(lambda f: self._log.failure("stopping services failed", f))
        return d

    def _drain_timed_out(self, sites: Sequence[Any]) -> None:
        kinds: dict[str, int] = {}
        for site in sites:
            for kind, count in _connections_by_kind(site).items():
                kinds[kind] = kinds.get(kind, 0) + count
        aborted = sum(site.abort() for site in sites)
        # "aborted 3 connection(s): 2 websocket, 1 http/1.1"
        which = ", ".join(
            f"{count} {kind}"
            for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
            if count
        )
        self._log.warn(
            "{pid}: drain_timeout of {timeout:g}s reached: aborted {count} connection(s){which}",
            pid=self.pid,
            timeout=self.settings.drain_timeout,
            count=aborted,
            which=f": {which}" if aborted and which else "",
        )
        # Services that would not stop must not hold the exit up either.
        self.reactor.callLater(0, self._stop_apps)

    def _exit(self) -> None:
        if self._exited.happened:
            return
        if not self._handed_over:
            self.pidfile.remove_if(self.pid)
            if self.role != "worker":
                # The final shutdown: no process takes these files over.
                for path, inode in self.unix_files.items():
                    remove_unix_socket(path, inode)
        self._log.info("{pid}: all servers shutdown", pid=self.pid)
        self._exited.happen()
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    # -- reporting ----------------------------------------------------------

    def _drain_progress(self) -> dict[str, Any] | None:
        """
        While draining: since when, the window, and what is left.
        """
        if self._drain_began is None:
            return None
        sites = [s.site for s in self.servers.values() if s.site is not None]
        return {
            "reason": self._drain_reason,
            "elapsed": max(0.0, self.reactor.seconds() - self._drain_began),
            "spread": self.settings.spread,
            "timeout": self.settings.drain_timeout,
            "connections_left": sum(sum(_connections_by_kind(s).values()) for s in sites),
        }

    def status(self) -> dict[str, Any]:
        """
        What the admin pages show: pid, generation, servers, last restart;
        with workers, the whole group (a worker shows what its master last
        told it, with its own pid as C{worker}).
        """
        if self.group is not None:
            return self.group.status()
        if self.group_status is not None:
            status = dict(self.group_status)
            status["worker"] = self.pid
            return status
        return self.own_status()

    def process_status(self) -> ProcessStatus:
        "L{status}, typed."
        return ProcessStatus.from_json(self.status())

    def own_status(self) -> dict[str, Any]:
        """
        This process alone.
        """
        last = self.last_restart
        return {
            "pid": self.pid,
            "role": self.role,
            "generation": self.generation,
            "started_at": self.started_at,
            "uptime": max(0.0, time.time() - self.started_at),
            "draining": self.draining,
            "restarting": self.restarting,
            "servers": [
                {
                    "name": server.name,
                    "ports": [listener.describe() for listener in server.listeners],
                    "in_flight": server.in_flight,
                    "requests": server.site.requests_served if server.site else 0,
                    "connections": _connection_counts(server.site),
                }
                for server in self.servers.values()
            ],
            "drain": self._drain_progress(),
            "last_restart": None
            if last is None
            else {
                "ok": last.ok,
                "error": last.error,
                "at": last.at,
                "handoff_seconds": last.handoff_seconds,
            },
            "restarts": self.restarts,
            "failed_restarts": self.failed_restarts,
        }
