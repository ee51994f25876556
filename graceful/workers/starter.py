# -*- test-case-name: tests.unit.workers.test_group -*-
"""
The master's workers, one by one: what the master knows of each, the
sockets it holds for them, and how it starts one.

A new worker that finds a socket it did not inherit (the new config added
it) says so and exits; the starter binds the socket and starts it again.
Sockets the new config dropped close once the last old worker has drained.
"""

from __future__ import annotations

import json
import random
import signal
import socket
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ..lifecycle.core import ProcessCore
from .._errors import ConfigError
from ..handoff.pipes import ChildProcess, ListeningSocket, RestartFailed
from ..handoff.messages import Message, Need, Ready, Retire, Status
from .._sockets import DEFAULT_UNIX_MODE, HeldSocket, ListenSpec, bind_socket, bind_unix_socket
from .._status import ProcessStatus
from .template import Spawn, TemplateChoice
from .worker import GROUP_VARIABLE, WORKER_VARIABLE

#: Seconds a worker asked to retire may take to hear it before it is sent
#: SIGTERM (a worker of an older release may not know the message).
RETIRE_FALLBACK = 2.0

#: Seconds of quiet on a ready worker's pipe after which what came (its
#: stacks, written in many small pieces) is logged as one entry.
STACKS_SETTLE = 0.2


@define(eq=False)
class Worker:
    """
    One worker, as its master knows it.

    @ivar slot: its slot in the group.
    @ivar generation: the generation of its code.
    @ivar process: the process.
    @ivar started_at: wall-clock time it was started (for the status).
    @ivar started: the reactor's time it was started (for the back-off).
    @ivar ready: whether it serves.
    @ivar retiring: whether it was told to leave.
    @ivar report: its last status report.
    @ivar limit: requests after which it is recycled (0: never).
    @ivar last_heartbeat: the reactor's time of its last report.
    @ivar killed_for: why the master killed it, if it did (C{"timeout"}).
    @ivar stacks: what it wrote on its pipe since it was ready (its
        threads' stacks), not yet logged.
    """

    slot: int
    generation: int
    process: ChildProcess
    started_at: float
    started: float = 0.0
    ready: bool = False
    retiring: bool = False
    report: ProcessStatus | None = None
    limit: int = 0
    last_heartbeat: float = 0.0
    killed_for: str | None = None
    stacks: bytes = b""
    stacks_logged: IDelayedCall | None = None

    @property
    def requests(self) -> int:
        servers = self.report.servers if self.report else ()
        return sum(s.requests or 0 for s in servers)

    @property
    def in_flight(self) -> int:
        return self.report.in_flight if self.report else 0

    @property
    def rss_mib(self) -> float | None:
        return self.report.rss_mib if self.report else None

    @property
    def pid(self) -> int:
        return self.process.pid

    def retire(self, clock: IReactorTime) -> None:
        """
        Replaced: told so on its pipe first, so that it drains as replaced
        (WebSockets hear 1012, not 1001), with SIGTERM as a fallback.
        """
        self.retiring = True
        self.process.send(Retire())
        clock.callLater(RETIRE_FALLBACK, self.signal, "TERM")

    def signal(self, name: str) -> None:
        # By number: Twisted knows only a few signals by name.
        number = getattr(signal, f"SIG{name}")
        try:
            self.process.transport.signalProcess(number)
        except (ProcessExitedAlready, OSError, AttributeError):
            pass


@define(eq=False)
class WorkerStarter:
    """
    Starts workers that inherit every held socket.

    @ivar process: the master.
    @ivar sockets: the sockets it holds.
    @ivar status: the group's status, which a new worker starts with.
    @ivar on_message: what to do with a worker's other messages.
    @ivar on_exit: told when a worker's process ends.
    @ivar on_ready: told when a worker serves.
    @ivar stopped: whether the group is leaving (no restart for sockets).
    @ivar size: the workers the master keeps.
    @ivar rng: draws each worker's max_requests jitter.
    """

    process: ProcessCore
    sockets: list[HeldSocket]
    status: Callable[[], ProcessStatus]
    on_message: Callable[[Worker, Message], None]
    on_exit: Callable[[Worker, Failure], None]
    on_ready: Callable[[Worker], None]
    stopped: Callable[[], bool]
    size: int = 1
    workers: list[Worker] = field(factory=list)
    rng: random.Random = field(factory=random.Random)
    _choice: TemplateChoice | None = None

    @property
    def choice(self) -> TemplateChoice:
        if self._choice is None:
            self._choice = TemplateChoice(self.process)
        return self._choice

    def start(self, slot: int, generation: int, executable: str | None = None) -> Deferred[Worker]:
        """
        Start a worker for C{slot}; fires once it serves, or fails with
        L{RestartFailed}.
        """
        result: Deferred[Worker] = Deferred()
        self._spawn(slot, generation, executable, result)
        return result

    def _spawn(
        self, slot: int, generation: int, executable: str | None, result: Deferred[Worker]
    ) -> None:
        core = self.process
        arguments: dict[str, Any] = dict(
            command=core.command_for(executable),
            environ=core.environ,
            cwd=core.settings.directory or core.cwd,
            generation=generation,
            ready_timeout=core.settings.ready_timeout,
            # Never our own fd 2 while that is a pipe to an older master,
            # which may die and leave the worker a stderr nobody reads.
            stderr_target=core.old_process.stderr_target(),
        )
        sockets = [ListeningSocket(held.fd, held.spec.fd_name) for held in self.sockets]
        self.choice.spawner(sockets, forward_stderr=core.forward_stderr, **arguments).addCallback(
            self._spawn_with, slot, generation, executable, result, sockets, arguments
        )

    def _spawn_with(
        self,
        spawn: Spawn,
        slot: int,
        generation: int,
        executable: str | None,
        result: Deferred[Worker],
        sockets: list[ListeningSocket],
        arguments: dict[str, Any],
    ) -> None:
        core = self.process
        needed: list[ListenSpec] = []
        box: list[Worker] = []

        def message(message: Message) -> None:
            if isinstance(message, Need):
                needed.extend(message.specs)
            elif box:
                self.on_message(box[0], message)

        def exited(reason: Failure) -> None:
            if box:
                self._log_stacks(box[0])
                self.on_exit(box[0], reason)

        def stderr(data: bytes) -> None:
            if box and box[0].ready:
                self._stacks(box[0], data)
            else:
                core.forward_stderr(data)

        try:
            # Read now: the template may have taken a while, and an older
            # master that died meanwhile took its stderr descriptor along.
            arguments["stderr_target"] = core.old_process.stderr_target()
            process = spawn(
                sockets=sockets,
                extra_environ={
                    WORKER_VARIABLE: str(slot),
                    GROUP_VARIABLE: json.dumps(self.status().to_json(), separators=(",", ":")),
                },
                forward_stderr=stderr,
                **arguments,
            )
        except Exception as e:
            result.errback(Failure(RestartFailed(f"cannot start worker: {e}")))
            return
        process.on_message = message
        process.on_exit = exited
        worker = Worker(slot, generation, process, core.environment.now(), core.reactor.seconds())
        settings = core.settings
        if settings.max_requests > 0:
            worker.limit = settings.max_requests + self.rng.randint(
                0, max(0, settings.max_requests_jitter)
            )
        box.append(worker)
        self.workers.append(worker)

        def ready(pid: int) -> None:
            worker.ready = True
            worker.last_heartbeat = core.reactor.seconds()
            core.log.info(
                "{pid}: worker {worker} (slot {slot}, generation {generation}) is ready",
                pid=core.pid,
                worker=pid,
                slot=slot,
                generation=generation,
            )
            self._adopt_layout(process.ready_facts)
            result.callback(worker)
            self.on_ready(worker)

        def failed(failure: Failure) -> None:
            if worker in self.workers:
                self.workers.remove(worker)
            if needed and not self.stopped():
                try:
                    self._hold(needed)
                except ConfigError as e:
                    result.errback(Failure(RestartFailed(str(e))))
                    return
                self._spawn(slot, generation, executable, result)
                return
            result.errback(failure)

        process.ready.addCallbacks(ready, failed)

    def _stacks(self, worker: Worker, data: bytes) -> None:
        """
        A ready worker's own stderr is fd 2; its pipe to us carries only
        what its faulthandler writes (the stacks the watchdog asks for):
        they go to the log, which under twistd is not stderr.
        """
        worker.stacks = (worker.stacks + data)[-65536:]
        call = worker.stacks_logged
        if call is not None and call.active():
            call.reset(STACKS_SETTLE)
        else:
            worker.stacks_logged = self.process.reactor.callLater(
                STACKS_SETTLE, self._log_stacks, worker
            )

    def _log_stacks(self, worker: Worker) -> None:
        call, worker.stacks_logged = worker.stacks_logged, None
        if call is not None and call.active():
            call.cancel()
        if not worker.stacks.strip():
            return
        stacks, worker.stacks = worker.stacks, b""
        self.process.log.error(
            "{pid}: worker {worker} (slot {slot}) stacks:\n{stacks}",
            pid=self.process.pid,
            worker=worker.pid,
            slot=worker.slot,
            stacks=stacks.decode("utf-8", "replace").rstrip(),
        )

    def _hold(self, specs: list[ListenSpec]) -> None:
        """
        Bind the sockets a new worker asked for.
        """
        core = self.process
        for spec in specs:
            if any(held.spec == spec for held in self.sockets):
                continue
            self.choice.sockets_changed()
            if spec.path is not None:
                server = core.servers.get(spec.server)
                mode = server.unix_socket_mode if server is not None else DEFAULT_UNIX_MODE
                sock = bind_unix_socket(spec.path, mode, backlog=core.settings.backlog)
                core.own_unix_file(spec.path)
                where = f"unix:{spec.path}"
            else:
                sock = bind_socket(spec.host, spec.port, core.settings.backlog)
                where = f"port {sock.getsockname()[1]}"
            self.sockets.append(HeldSocket(spec, sock.fileno(), sock))
            core.log.info(
                "{pid}: bound {scheme} {where} for the new workers",
                pid=core.pid,
                scheme=spec.scheme,
                where=where,
            )

    def _adopt_layout(self, facts: Ready) -> None:
        """
        A new worker told us which sockets its config uses: the others are
        ports the config dropped; the old workers keep their own copies
        until they drain.
        """
        core = self.process
        wanted = facts.workers
        if isinstance(wanted, int) and wanted != self.size:
            core.log.warn(
                "{pid}: the config now asks for {wanted} workers; this master keeps "
                "{size}: as PID 1 it rolls its workers and never replaces itself",
                pid=core.pid,
                wanted=wanted,
                size=self.size,
            )
        if facts.claimed is None:
            return
        for held in list(self.sockets):
            if held.spec.fd_name not in facts.claimed:
                self.sockets.remove(held)
                held.close()
                core.log.info(
                    "{pid}: the new config dropped {name}: it closes with the old workers",
                    pid=core.pid,
                    name=held.spec.fd_name,
                )


def heartbeat(worker: Worker, message: Status, now: float) -> None:
    """
    A worker's status report: its facts, and proof that it turns.
    """
    worker.report = message.status
    worker.last_heartbeat = now
