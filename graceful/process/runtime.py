# -*- test-case-name: tests.unit.process.test_runtime -*-
"""
The process: its servers, and the one role it plays — serving alone, as a
master of workers, or as a worker — chosen once, as it starts serving.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, MutableMapping, TypeVar, overload

from twisted.internet.defer import Deferred, fail

from .._logging import NamedLogger
from ..admin.pages import add_operational_pages, admin_socket_site, prepare_admin_token
from ..admin.state import AdminState
from ..lifecycle.admin_socket import AdminSocket
from ..lifecycle.core import ProcessCore, RestartHistory
from ..handoff.environment import Environment, OSEnvironment
from .._errors import ConfigError, ExecutableNotAllowed
from ..lifecycle.executables import check_executable
from ..handoff.pipes import GENERATION_VARIABLE, NoOldProcess, OldProcess
from ..lifecycle.roles import Role
from ..http.server import Server, access_log_writer, check_listeners_unique
from .._settings import Settings
from .._sockets import InheritedSockets, ListenSpec, check_names, check_unix_path
from .._status import ProcessStatus
from ..handoff.supervision import NoNotifier, NoPidfile, Pidfile, SystemdNotifier, pidfile_at
from ..workers.worker import WorkerRole, worker_slot
from .role_choice import RoleChoice
from .signals import install_signal_handlers

if TYPE_CHECKING:
    from twisted.application.service import IService

PIDFILE_VARIABLE = "GRACEFUL_PIDFILE"


def original_command() -> tuple[list[str], list[str]]:
    """
    How this process was started: the interpreter with its own options, and
    the program's arguments (C{sys.argv}).
    """
    orig = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    argv = list(sys.argv)
    prefix = orig[: len(orig) - len(argv) + 1] if len(orig) >= len(argv) else orig[:1]
    prefix[0] = sys.executable
    return prefix, argv[1:]


def working_directory(environ: MutableMapping[str, str]) -> str:
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


T = TypeVar("T")


class _Shared(Generic[T]):
    """
    A part of the process that lives on its core, where the roles share it.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Shared[T]: ...

    @overload
    def __get__(self, obj: Runtime, objtype: type | None = None) -> T: ...

    def __get__(self, obj: Runtime | None, objtype: type | None = None) -> T | _Shared[T]:
        if obj is None:
            return self
        value: T = getattr(obj.core, self.name)
        return value

    def __set__(self, obj: Runtime, value: T) -> None:
        setattr(obj.core, self.name, value)


def _write_stderr(data: bytes) -> None:
    # A new process's stderr, forwarded as it comes: raw, past any logging.
    os.write(2, data)


def _begin_logging_to_stdout() -> None:
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)


class Runtime:
    """
    One serving process: its servers and settings, and its role.

    Build it with L{runtime_from_environment}; C{graceful.server()} uses the
    one for the global reactor.

    @ivar core: what the roles act on (servers, generation, services...).
    @ivar worker: the worker role, when a master started this process.
    @ivar admin: what the admin pages keep for this process (its token,
        refusal counts and metrics).
    @ivar admin_socket: the private admin socket.
    """

    _log = NamedLogger("graceful._runtime.Runtime")

    def __init__(
        self,
        reactor: Any,
        environ: MutableMapping[str, str],
        pid: int,
        *,
        generation: int = 1,
        old_process: OldProcess | NoOldProcess | Any = None,
        inherited: InheritedSockets | None = None,
        notifier: SystemdNotifier | NoNotifier | Any = None,
        pidfile: Pidfile | NoPidfile | Any = None,
        environment: Environment | None = None,
        settings: Settings | None = None,
        interpreter: list[str] | None = None,
        arguments: list[str] | None = None,
        cwd: str | None = None,
        forward_stderr: Callable[[bytes], None] = _write_stderr,
        worker_slot: int | None = None,
        group_status: ProcessStatus | None = None,
    ) -> None:
        environment = environment if environment is not None else OSEnvironment()
        self.core = ProcessCore(
            reactor,
            environ,
            pid,
            generation=generation,
            old_process=old_process if old_process is not None else NoOldProcess(),
            inherited=inherited if inherited is not None else InheritedSockets(),
            notifier=notifier if notifier is not None else NoNotifier(),
            pidfile=pidfile if pidfile is not None else NoPidfile(),
            environment=environment,
            settings=settings if settings is not None else Settings(),
            interpreter=interpreter if interpreter is not None else [sys.executable],
            arguments=arguments if arguments is not None else [],
            cwd=cwd if cwd is not None else os.getcwd(),
            forward_stderr=forward_stderr,
            started_at=environment.now(),
        )
        self.worker = (
            WorkerRole(self.core, worker_slot, group_status) if worker_slot is not None else None
        )
        self.admin = AdminState()
        self.admin_socket = AdminSocket(self.core)
        self.admin_socket.site = lambda: admin_socket_site(self)
        self._roles = RoleChoice(self.core, self.worker, self.admin_socket.serve)
        self._log_to_stdout = True

    # -- what the rest of graceful reads ----------------------------------

    pid: _Shared[int] = _Shared()
    generation: _Shared[int] = _Shared()
    environ: _Shared[MutableMapping[str, str]] = _Shared()
    settings: _Shared[Settings] = _Shared()
    servers: _Shared[dict[str, Server]] = _Shared()
    services: _Shared[Any] = _Shared()
    old_process: _Shared[Any] = _Shared()
    inherited: _Shared[InheritedSockets] = _Shared()
    notifier: _Shared[Any] = _Shared()
    pidfile: _Shared[Any] = _Shared()
    arguments: _Shared[list[str]] = _Shared()
    cwd: _Shared[str] = _Shared()
    lifespans: _Shared[list[Any]] = _Shared()
    apps_started: _Shared[bool] = _Shared()
    unix_files: _Shared[dict[str, int]] = _Shared()
    history: _Shared[RestartHistory] = _Shared()

    @property
    def reactor(self) -> Any:
        return self.core.reactor

    @property
    def is_handoff(self) -> bool:
        """
        Whether an older graceful process started this one.
        """
        return bool(self.core.old_process.is_handoff)

    @property
    def is_worker(self) -> bool:
        return self.worker is not None

    @property
    def taking_over(self) -> bool:
        """
        Whether this process is a new generation that has not taken over
        yet: the restart that made it still runs (its older generation has
        not released).  A worker's restarts go to its master, which decides.
        """
        return not self.is_worker and self.is_handoff and not self.core.succeeded.happened

    def now(self) -> float:
        "The wall clock, as the process's environment tells it."
        return float(self.core.environment.now())

    @property
    def role(self) -> str:
        "single, master or worker (see L{RoleChoice.name})."
        return self._roles.name

    def _the_role(self) -> Role:
        return self._roles.role()

    @property
    def draining(self) -> bool:
        return self._roles.draining

    @property
    def restarting(self) -> bool:
        return self._roles.restarting

    # -- building ---------------------------------------------------------

    def set_pidfile(self, path: str | None) -> None:
        """
        Keep a pidfile at C{path}; every later generation keeps it too.
        """
        environ = self.core.environ
        if path:
            environ[PIDFILE_VARIABLE] = str(Path(path).absolute())
        else:
            environ.pop(PIDFILE_VARIABLE, None)
        self.core.pidfile = pidfile_at(environ.get(PIDFILE_VARIABLE))

    def set_admin_socket(self, path: str | None) -> None:
        """
        Serve the admin pages of the whole process, without a token, on a
        private UNIX socket at C{path} (mode 0600: its owner alone can
        connect), under C{/debug/admin}.
        """
        if self.admin_socket.taken:
            raise ConfigError("set_admin_socket() must come before the first start()")
        self.core.settings.admin_socket = check_unix_path(path) if path else None

    def server(self, name: str) -> Server:
        server = self.core.servers.get(name)
        if server is None:
            check_names([name])
            server = self.core.servers[name] = Server(name, self)
        return server

    def access_log(self) -> Callable[[str], None] | None:
        return access_log_writer(self.core.settings.access_log, self.core.settings.access_log_format)

    def add_operational_pages(self, server: Server) -> None:
        add_operational_pages(self, server)

    def add_lifespan(self, lifespan: Any) -> None:
        self.core.lifespans.append(lifespan)

    def add_service(self, service: IService) -> None:
        service.setServiceParent(self.core.services)

    def on_drain(self, callback: Callable[[], Any]) -> None:
        self.core.drain_callbacks.append(callback)

    def socket_missing(self, spec: ListenSpec) -> None:
        assert self.worker is not None
        self.worker.missing.append(spec)

    def own_unix_file(self, path: str | None) -> None:
        # A worker never removes a file: its master does.
        if self.worker is None:
            self.core.own_unix_file(path)

    # -- starting ---------------------------------------------------------

    def prepare_server(self, server: Server) -> None:
        """
        Do everything that can fail for C{server} before serving: a port used
        twice, TLS files, binding.
        """
        check_listeners_unique(
            list(self.core.servers.values()), server, self.core.settings.admin_socket
        )
        try:
            server.prepare()
            if self.worker is None:  # a worker's master serves it
                self.admin_socket.prepare()
        except ConfigError as e:
            server.release_prepared()
            self.core.old_process.report_error(str(e))
            raise

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
            for server in self.core.servers.values():
                if server.has_prepared():
                    server.serve()
            self.admin_socket.serve()

    def wait(self) -> None:
        """
        Run until every server has shut down, with the signals installed.
        """
        if self._log_to_stdout:
            _begin_logging_to_stdout()
            self._log_to_stdout = False
        self.reactor.callWhenRunning(self.serving_started)
        self.reactor.run()

    def serving_started(self) -> None:
        """
        Every server listens and the reactor runs: the role takes over.
        The signals are handled from here on, so that a SIGTERM during a
        slow ASGI startup drains rather than kills.
        """
        if self._roles.chosen is not None:
            return
        role = self._the_role()
        if self.worker is None:
            # Before any worker starts, so that every worker reads the same.
            prepare_admin_token(self)
        self.install_signal_handlers()
        role.start()

    def install_signal_handlers(self) -> None:
        """
        SIGUSR1 restarts, the shutdown signals shut down, SIGTTIN and
        SIGTTOU change the worker count; the handlers only schedule the work.
        """
        install_signal_handlers(self.core, self._the_role)

    # -- the role's interface ---------------------------------------------

    def check_executable(self, executable: str) -> str:
        return check_executable(self.core.settings.allowed_executables, executable)

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
        return self._the_role().restart(executable)

    def set_workers(self, count: int) -> int:
        "Keep C{count} workers (see L{graceful.workers.scaling})."
        return self._the_role().set_workers(count, 0, "asked on the admin API")

    def shutdown(self) -> Deferred[None]:
        """
        Shut the process down (with workers: the whole group): stop
        accepting, finish the requests in flight (up to drain_timeout), stop
        the services, and exit.
        """
        return self._the_role().shutdown()

    def leave(self) -> Deferred[None]:
        """
        This process alone stops accepting, drains, and exits.
        """
        return self._the_role().leave()

    def status(self) -> ProcessStatus:
        """
        What the admin pages show: pid, generation, servers, last restart;
        with workers, the whole group (a worker shows what its master last
        told it, with its own pid as C{worker}).
        """
        return self._the_role().status()


def runtime_from_environment(environ: MutableMapping[str, str], reactor: Any) -> Runtime:
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
    interpreter, arguments = original_command()
    slot, group_status = worker_slot(environ)
    runtime = Runtime(
        reactor,
        environ,
        pid,
        generation=generation,
        old_process=old_process,
        inherited=inherited,
        notifier=SystemdNotifier.from_environment(environ),
        pidfile=pidfile_at(environ.get(PIDFILE_VARIABLE)),
        interpreter=interpreter,
        arguments=arguments,
        cwd=working_directory(environ),
        worker_slot=slot,
        group_status=group_status,
    )
    if runtime.worker is not None:
        runtime.worker.watch_master()
    return runtime
