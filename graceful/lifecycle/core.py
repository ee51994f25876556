# -*- test-case-name: tests.unit.process.test_runtime -*-
"""
What every role of a process shares: its servers, its place in the line of
generations, its services and apps, and how it reports itself.  The roles
(serving alone, master, worker) act on it; the process object owns it.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, MutableMapping

from attrs import Factory, define, field
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import ReactorNotRunning

from .._logging import NamedLogger
from ..handoff.environment import Environment, OSEnvironment
from .._event import Event
from .._history import RestartLog
from ..handoff.pipes import NoOldProcess, OldProcess, ListeningSocket
from ..handoff.messages import Accepted
from ..http.server import Server
from .._settings import Settings
from .._status import DrainStatus, LastRestart, ProcessStatus, ServerStatus
from .._sockets import (
    ADMIN_SOCKET_NAME,
    InheritedSockets,
    ListenSpec,
    remove_unix_socket,
    socket_inode,
)
from ..handoff.supervision import NoNotifier, NoPidfile, Pidfile, SystemdNotifier
from .pidfile import PidfileKeeper

if TYPE_CHECKING:
    from twisted.application.service import MultiService

#: The connection kinds the status always shows, even at 0.
CONNECTION_KINDS = ("http/1.1", "h2", "websocket", "stream")


@define
class RestartHistory:
    """
    The restarts of the process across its generations.

    @ivar restarts: the restarts that succeeded.
    @ivar failed_restarts: the restarts that failed.
    @ivar last: the last one, if any.
    @ivar log: the last restarts, one record each.
    """

    restarts: int = 0
    failed_restarts: int = 0
    last: LastRestart | None = None
    log: RestartLog = field(factory=RestartLog)

    def record(
        self,
        ok: bool,
        error: str | None,
        at: float,
        seconds: float | None,
        canary: tuple[float, float] | None = None,
    ) -> None:
        """
        A restart ended; C{canary}: the old and new generations' error
        ratios in its canary window, if it had one.
        """
        if ok:
            self.restarts += 1
        else:
            self.failed_restarts += 1
        old, new = canary if canary is not None else (None, None)
        self.last = LastRestart(ok, error, at, seconds, old, new)

    def took_over(self, accepted: Accepted, now: float) -> None:
        """
        The old process confirmed the handoff that made us: keep its counts.
        """
        self.restarts = accepted.restarts
        self.failed_restarts = accepted.failed_restarts
        self.last = LastRestart(
            True,
            None,
            accepted.at if accepted.at is not None else now,
            accepted.handoff_seconds,
            accepted.canary_old_error_ratio,
            accepted.canary_new_error_ratio,
        )


def connections_by_kind(site: Any) -> dict[str, int]:
    by_kind = getattr(site, "connections_by_kind", None)
    if by_kind is None:
        return {}
    counts: dict[str, int] = by_kind()
    return counts


def _connection_counts(site: Any) -> dict[str, int]:
    counts = {kind: 0 for kind in CONNECTION_KINDS}
    if site is not None:
        counts.update(connections_by_kind(site))
    return counts


def _keeper(core: ProcessCore) -> PidfileKeeper:
    return PidfileKeeper(lambda: core.pidfile, core.pid, lambda: core.reactor)


def startup_failure_reason(error: BaseException, ready_timeout: float) -> str:
    """
    Why the ASGI apps' startups failed, in one line.
    """
    from twisted.internet.defer import CancelledError, FirstError, TimeoutError

    if isinstance(error, FirstError):
        error = error.subFailure.value
    # The timeout cancels the startups, so it may show as a cancellation.
    if isinstance(error, (TimeoutError, CancelledError)):
        return (
            f"ASGI lifespan startup did not finish within ready_timeout "
            f"({ready_timeout:g}s)"
        )
    return f"ASGI lifespan startup failed: {error}".splitlines()[0]


def server_statuses(servers: Iterable[Server]) -> tuple[ServerStatus, ...]:
    """
    What each server reports: its ports, requests and connections.
    """
    return tuple(
        ServerStatus(
            name=server.name,
            ports=tuple(listener.describe() for listener in server.listeners),
            in_flight=server.in_flight,
            requests=server.site.requests_served if server.site else 0,
            connections=_connection_counts(server.site),
            **_response_counts(server.site),
        )
        for server in servers
    )


def _response_counts(site: Any) -> dict[str, Any]:
    stats = getattr(site, "stats", None)
    if stats is None:
        return {}
    return {
        "responses": stats.by_class(),
        "duration_counts": tuple(stats.durations),
        "duration_sum": stats.duration_sum,
        "refused": dict(stats.refused),
        "resets": getattr(site, "resets", 0),
    }


@define(eq=False)
class ProcessCore:
    """
    The parts of one process that its role acts on.

    @ivar reactor: the reactor, or a stand-in with C{resolve()} that imports
        the global one on first use (so that an ASGI app mounted before then
        gets Twisted's asyncio reactor).
    @ivar environ: the environment every process we start inherits.
    @ivar pid: our pid.
    @ivar generation: our place in the line of processes (1: the first).
    @ivar old_process: the process that started us (an older generation, or
        our master), or the null object.
    @ivar inherited: the sockets it passed us.
    @ivar notifier: systemd's notify socket, or the null object.
    @ivar pidfile: the pidfile that names the serving process, or the null
        object.
    @ivar environment: every other effect on the operating system.
    @ivar settings: the C{[graceful]} settings.
    @ivar interpreter: the interpreter and its options we were started with.
    @ivar arguments: the program's arguments.
    @ivar cwd: the directory we were started in, as typed.
    @ivar servers: the named servers.
    @ivar services: the background services; one generation runs them.
    @ivar drain_callbacks: called as the process starts leaving.
    @ivar started_at: wall-clock time we started.
    @ivar history: the restarts so far.
    @ivar lifespans: the lifespans of the ASGI apps we serve.
    @ivar apps_started: whether their startups are done.
    @ivar unix_files: UNIX socket files we (or our workers) listen on, with
        their inodes: removed at the final shutdown if still the same file.
    @ivar admin_port: the private admin socket's port, once served.
    @ivar forward_stderr: writes a new process's stderr as it comes.
    @ivar succeeded: happens once the older generation that started us has
        released (or died): from then on we alone speak for the process.
    """

    _reactor: Any
    environ: MutableMapping[str, str]
    pid: int
    generation: int = 1
    old_process: OldProcess | NoOldProcess = field(factory=NoOldProcess)
    inherited: InheritedSockets = field(factory=InheritedSockets)
    notifier: SystemdNotifier | NoNotifier = field(factory=NoNotifier)
    pidfile: Pidfile | NoPidfile = field(factory=NoPidfile)
    environment: Environment = field(factory=OSEnvironment)
    settings: Settings = field(factory=Settings)
    interpreter: list[str] = field(factory=lambda: [sys.executable])
    arguments: list[str] = field(factory=list)
    cwd: str = "."
    servers: dict[str, Server] = field(factory=dict)
    _services: MultiService | None = field(default=None, alias="services")
    drain_callbacks: list[Callable[[], Any]] = field(factory=list)
    started_at: float = 0.0
    history: RestartHistory = field(factory=RestartHistory)
    lifespans: list[Any] = field(factory=list)
    apps_started: bool = False
    unix_files: dict[str, int] = field(factory=dict)
    admin_port: Any = None
    forward_stderr: Callable[[bytes], None] = lambda data: None
    succeeded: Event = field(factory=Event)
    _exited: Event = field(factory=Event)
    _pidfiles: PidfileKeeper = field(default=Factory(_keeper, takes_self=True), init=False)
    log = NamedLogger("graceful._core.ProcessCore")

    @property
    def reactor(self) -> Any:
        if getattr(self._reactor, "stands_for_global_reactor", False):
            self._reactor = self._reactor.resolve()
        return self._reactor

    # -- starting processes -------------------------------------------------

    def command_for(self, executable: str | None) -> list[str]:
        """
        How to start the next process: as we were started, or C{executable}
        with our arguments.
        """
        if executable is None:
            return [*self.interpreter, *self.arguments]
        if executable.endswith(".py"):
            return [sys.executable, executable, *self.arguments]
        return [executable, *self.arguments]

    def passed_sockets(self, held: Iterable[tuple[ListenSpec, int]] | None = None) -> list[ListeningSocket]:
        """
        Every socket a new generation inherits: the servers' own (or, for a
        master, the C{held} ones) and the admin socket.
        """
        if held is None:
            held = [spec_fd for server in self.servers.values() for spec_fd in server.passed_sockets()]
        sockets = [ListeningSocket(fd, spec.fd_name) for spec, fd in held]
        if self.admin_port is not None:
            sockets.append(ListeningSocket(self.admin_port.fileno(), ADMIN_SOCKET_NAME))
        return sockets

    def sites(self) -> list[Any]:
        return [server.site for server in self.servers.values() if server.site is not None]

    def write_pidfile(self, pid: int) -> None:
        self._pidfiles.write(pid)

    def claim_pidfile(self) -> None:
        self._pidfiles.claim()

    def announce_serving(self, pid: int) -> None:
        """
        Name C{pid} as the serving process, in the pidfile and to systemd.
        """
        self.write_pidfile(pid)
        self.notifier.notify(ready=1, mainpid=pid, status="serving")

    def notify_reloading(self) -> None:
        self.log.info("{pid}: server reloading", pid=self.pid)
        self.notifier.notify(
            reloading=1, monotonic_usec=int(self.environment.monotonic() * 1_000_000)
        )

    def own_unix_file(self, path: str | None) -> None:
        """
        Remember the UNIX socket file at C{path} (bound or taken over now)
        for removal at the final shutdown.
        """
        if path is None:
            return
        inode = socket_inode(path)
        if inode is not None:
            self.unix_files[path] = inode

    # -- services -------------------------------------------------------------

    @property
    def services(self) -> MultiService:
        # Made when first used (a service added, or started once the hand-over
        # is done): twisted.application cost a new generation 15 ms of CPU.
        if self._services is None:
            from twisted.application.service import MultiService

            self._services = MultiService()
        return self._services

    def start_services(self, released: Any) -> None:
        """
        Start the background services, now that no older generation runs
        them; log how long they were paused across the handoff.
        """
        if self.services.running:
            return
        if list(self.services):
            at = getattr(released, "at", None)
            if at is not None:
                self.log.info(
                    "{pid}: background services started {pause_ms:.1f} ms after "
                    "the old generation's stopped",
                    pid=self.pid,
                    pause_ms=max(0.0, self.environment.now() - at) * 1000,
                )
            else:
                self.log.info("{pid}: background services started", pid=self.pid)
        self.services.startService()

    def stop_services(self) -> Deferred[None]:
        if self._services is None or not self.services.running:
            return succeed(None)
        d: Deferred[None] = maybeDeferred(self.services.stopService)
        d.addErrback(lambda f: self.log.failure("stopping services failed", f))
        return d

    def run_drain_callbacks(self) -> None:
        for callback in self.drain_callbacks:
            maybeDeferred(callback).addErrback(
                lambda f: self.log.failure("on_drain callback failed", f)
            )

    # -- apps -----------------------------------------------------------------

    def start_apps(self) -> Deferred[Any]:
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

    def start_accepting(self, last_holder: bool) -> None:
        """
        The apps have started: accept on the ports held meanwhile, and close
        the inherited sockets no server asked for.  As their C{last_holder}
        (the old process stopped accepting on them), remove the files of
        the UNIX ones too.
        """
        self.apps_started = True
        for server in self.servers.values():
            server.resume_accepting()
        paths = {id(s): s.unix_path() for s in self.inherited.sockets}
        for dropped in self.inherited.close_unclaimed():
            self.log.info(
                "{pid}: closed inherited socket {name}: no server asks for it",
                pid=self.pid,
                name=dropped.name,
            )
            path = paths.get(id(dropped))
            if path and last_holder:
                inode = socket_inode(path)
                if inode is not None:
                    remove_unix_socket(path, inode)

    def apps_failed(self, failure: Any) -> None:
        """
        An ASGI app's startup failed: say why, to the old process and on
        stderr, and end this process (the old one serves on).
        """
        reason = startup_failure_reason(failure.value, self.settings.ready_timeout)
        self.old_process.report_error(reason)
        sys.stderr.write(f"graceful: error: {reason}\n")
        sys.stderr.flush()
        self.environment.exit(1)

    def stop_apps(self) -> Deferred[None]:
        """
        Run every ASGI app's lifespan shutdown, bounded by drain_timeout.
        """
        if not self.lifespans:
            return succeed(None)
        stopped = DeferredList(
            [lifespan.shutdown() for lifespan in self.lifespans], consumeErrors=True
        )

        def cut(result: object, timeout: float) -> None:
            # Cancelled, a DeferredList fires with its results, not a
            # failure: an errback here never ran, and the exit was silent.
            self.log.warn(
                "{pid}: ASGI lifespan shutdown did not finish within drain_timeout",
                pid=self.pid,
            )

        stopped.addTimeout(self.settings.drain_timeout, self.reactor, onTimeoutCancel=cut)
        done: Deferred[None] = stopped.addBoth(lambda _: None)
        return done

    # -- leaving --------------------------------------------------------------

    def exit(self, handed_over: bool, final: bool) -> None:
        """
        The last step: the pidfile (unless a successor owns it now), the UNIX
        socket files (at the C{final} shutdown of the last holder), the
        reactor.
        """
        if self._exited.happened:
            return
        self._pidfiles.leave(handed_over)
        if final and not handed_over:
            for path, inode in self.unix_files.items():
                remove_unix_socket(path, inode)
        self.log.info("{pid}: all servers shutdown", pid=self.pid)
        # Nothing is left to restart.  Ignored, a late SIGUSR1 (one sent to
        # the whole group) cannot kill the interpreter as it finalizes, which
        # puts back the default action of every signal with a Python handler.
        self.environment.ignore_signal(signal.SIGUSR1)
        self._exited.happen()
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    def when_exited(self) -> Deferred[None]:
        return self._exited.wait()

    @property
    def exited(self) -> bool:
        return self._exited.happened

    # -- reporting ------------------------------------------------------------

    def own_status(
        self, role: str, draining: bool, restarting: bool, drain: DrainStatus | None
    ) -> ProcessStatus:
        """
        The status of this process alone.
        """
        return ProcessStatus(
            pid=self.pid,
            role=role,
            generation=self.generation,
            started_at=self.started_at,
            uptime=max(0.0, self.environment.now() - self.started_at),
            draining=draining,
            restarting=restarting,
            servers=server_statuses(self.servers.values()),
            drain=drain,
            last_restart=self.history.last,
            restarts=self.history.restarts,
            failed_restarts=self.history.failed_restarts,
        )
