"""
The process: its servers, its place in the line of generations, and the
lifecycle that restarts or shuts it down.
"""

from __future__ import annotations

import json
import os
import signal
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
    spawn_new_process,
)
from ._server import Server
from ._sockets import InheritedSockets, ListenSpec, check_names
from ._supervision import NoNotifier, NoPidfile, Pidfile, SystemdNotifier, pidfile_at
from ._workers import STATUS_INTERVAL, HeldSocket, WorkerGroup, worker_slot

PIDFILE_VARIABLE = "GRACEFUL_PIDFILE"
SHUTDOWN_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP")


@define
class Settings:
    """
    The process-wide settings (the C{[graceful]} table of the config).
    """

    drain_timeout: float = 30.0
    ready_timeout: float = 15.0
    workers: int = 1
    allowed_executables: list[str] = field(factory=list)
    access_log: str | None = None
    directory: str | None = None


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

    reactor: Any
    environ: MutableMapping[str, str]
    pid: int
    generation: int = 1
    old_process: OldProcess | NoOldProcess = field(factory=NoOldProcess)
    inherited: InheritedSockets = field(factory=InheritedSockets)
    notifier: SystemdNotifier | NoNotifier = field(factory=NoNotifier)
    pidfile: Pidfile | NoPidfile = field(factory=NoPidfile)
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
    _new_process: NewProcess | None = None
    _restart_began: float = 0.0
    _restart_result: Deferred[int] | None = None
    _exited: Event = field(factory=Event)
    _serving: bool = False
    _handed_over: bool = False
    worker_slot: int | None = None
    group: WorkerGroup | None = None
    group_status: dict[str, Any] | None = None
    missing: list[ListenSpec] = field(factory=list)
    _worker_facts: dict[str, Any] = field(factory=dict)
    _status_reports: LoopingCall | None = None
    _log_to_stdout: bool = True
    _lifecycle: _Lifecycle = field(init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        self._lifecycle = _Lifecycle(self)

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
        return cls(
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
        )

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
        for spec in server.listen_specs():
            key = (spec.host, spec.port)
            if spec.port and key in taken:
                raise ConfigError(
                    f"port {spec.port} is used twice (servers {taken[key]!r} and {server.name!r})"
                )
            if spec.port:
                taken[key] = server.name
        try:
            server.prepare()
        except ConfigError as e:
            self.old_process.report_error(str(e))
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
            for server in self.servers.values():
                if server._prepared:
                    server.serve()

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
        if self.role == "master":
            self._start_workers()
            return
        if self.role == "worker":
            self._serve_as_worker()
        for dropped in self.inherited.close_unclaimed():
            self._log.info(
                "{pid}: closed inherited socket {name}: no server asks for it",
                pid=self.pid,
                name=dropped.name,
            )
        self.install_signal_handlers()
        if self.role == "worker":
            self._report_to_master()
            return
        if self.is_handoff:
            self.old_process.report_ready()
        else:
            self._write_pidfile(self.pid)
            self.notifier.notify(ready=1, mainpid=self.pid, status="serving")
        self.old_process.listen(self.reactor, self._took_over).addCallback(
            self._start_services
        )

    # -- as a master or a worker ----------------------------------------------

    def _start_workers(self) -> None:
        held = []
        for server in self.servers.values():
            for prepared in server._prepared:
                held.append(HeldSocket(prepared.spec, prepared.fd, prepared.owner))
            server._prepared = []
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
                {"server": s.server, "tls": s.tls, "port": s.port, "host": s.host, "index": s.index}
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
        reports = LoopingCall(lambda: self.old_process.send("status", json.dumps(self.own_status())))
        reports.clock = self.reactor
        reports.start(STATUS_INTERVAL, now=True)
        self._status_reports = reports
        released = self.old_process.listen(
            self.reactor,
            self._took_over,
            on_message=self._from_master,
            on_gone=self._master_gone,
        )
        if self.worker_slot == 0:
            released.addCallback(self._start_services)

    def _from_master(self, kind: str, payload: str) -> None:
        if kind == "group":
            try:
                self.group_status = json.loads(payload)
            except ValueError:
                pass

    def _master_gone(self) -> None:
        if not self.draining:
            self._log.warn("{pid}: the master is gone: leaving", pid=self.pid)
            self.leave()

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
            # A worker leaves alone (its master asked, or the whole group
            # got the signal); anything else shuts the process down.
            self.reactor.callFromThread(self.leave)

        signal.signal(signal.SIGUSR1, on_restart)
        for name in SHUTDOWN_SIGNALS:
            signal.signal(getattr(signal, name), on_shutdown)

    # -- restarting ---------------------------------------------------------

    def check_executable(self, executable: str) -> str:
        """
        @raise ExecutableNotAllowed: C{allowed_executables} does not list it.
        """
        wanted = os.path.realpath(executable)
        for allowed in self.settings.allowed_executables:
            if os.path.realpath(allowed) == wanted:
                return executable
        raise ExecutableNotAllowed(
            f"executable {executable!r} is not in allowed_executables"
        )

    def restart(self, executable: str | None = None, trusted: bool = False) -> Deferred[int]:
        """
        Start a new process to take over every server.  Fires with its pid
        once it serves; fails with L{RestartFailed} or L{RestartRefused}.

        @param trusted: the caller is the program itself, which may run any
            executable; otherwise it must be in C{allowed_executables}.
        """
        if executable and not trusted:
            try:
                self.check_executable(executable)
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
        # With a successor, idle keep-alive connections wait for their next
        # request (answered with Connection: close) rather than race a close.
        idle_grace = (
            _drain.handover_idle_grace(self.settings.drain_timeout)
            if successor is not None
            else None
        )
        drained = DeferredList([site.drain(idle_grace) for site in sites] + [services])
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
            self._exit()

        drained.addBoth(done)

    def _stop_services(self) -> Deferred[None]:
        if not self.services.running:
            return succeed(None)
        d: Deferred[None] = maybeDeferred(self.services.stopService)
        d.addErrback(lambda f: self._log.failure("stopping services failed", f))
        return d

    def _drain_timed_out(self, sites: Sequence[Any]) -> None:
        aborted = sum(site.abort() for site in sites)
        self._log.warn(
            "{pid}: drain_timeout of {timeout:g}s reached: aborted {count} connection(s)",
            pid=self.pid,
            timeout=self.settings.drain_timeout,
            count=aborted,
        )
        # Services that would not stop must not hold the exit up either.
        self.reactor.callLater(0, self._exit)

    def _exit(self) -> None:
        if self._exited.happened:
            return
        if not self._handed_over:
            self.pidfile.remove_if(self.pid)
        self._log.info("{pid}: all servers shutdown", pid=self.pid)
        self._exited.happen()
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    # -- reporting ----------------------------------------------------------

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
                    "ports": [
                        {"port": listener.number, "tls": listener.tls}
                        for listener in server.listeners
                    ],
                    "in_flight": server.in_flight,
                    "requests": server.site.requests_served if server.site else 0,
                }
                for server in self.servers.values()
            ],
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
