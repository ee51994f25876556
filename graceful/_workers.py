"""
Workers: N serving processes that share every listening socket.

With C{workers = N > 1} the process the user starts becomes the master: it
binds the sockets (so they are never rebound) and does not serve; it starts N
workers, each inheriting every socket, and the kernel spreads connections
among them.  A restart rolls the workers one slot at a time: the new worker
of a slot is ready before the old one stops accepting and drains, so at least
N-1 workers serve at every moment.  A worker that dies unexpectedly is
replaced, with a back-off so a crashing app does not spin.

A new worker that finds a port it did not inherit (the new config added it)
says C{need} and exits; the master binds the port and starts it again.
Sockets the new config dropped close once the last old worker has drained.
Only the worker of slot 0 runs the background services, and the master hands
them from the old slot-0 worker to the new one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import TYPE_CHECKING, Any, Callable

from attrs import define, field
from automat import MethodicalMachine
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._event import Event
from ._errors import ConfigError, RestartRefused
from ._handoff import NewProcess, PassedSocket, RestartFailed, spawn_new_process
from ._sockets import DEFAULT_UNIX_MODE, ListenSpec, bind_socket, bind_unix_socket

if TYPE_CHECKING:
    import socket

    from ._runtime import Runtime

WORKER_VARIABLE = "GRACEFUL_WORKER"
#: The group's status when a worker was started, so that it never answers
#: a status request with its own facts alone.
GROUP_VARIABLE = "GRACEFUL_GROUP"

#: How often workers report their status and the master pushes the group's.
STATUS_INTERVAL = 0.5

#: Seconds a worker asked to retire may take to hear it before it is sent
#: SIGTERM (a worker of an older release may not know the message).
RETIRE_FALLBACK = 2.0

#: Back-off before replacing a worker that died: doubles per death in a row,
#: from the first to the last value; a worker that lived long resets it.
BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_AFTER = 0.5, 30.0, 10.0

#: Seconds between SIGUSR2 (the worker's faulthandler dumps its stacks) and
#: SIGKILL for a worker that stopped heart-beating.
STACK_DUMP_WAIT = 0.5


def current_rss_mib() -> float:
    """
    This process's resident set size now, in MiB (0 where /proc is missing).
    """
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


@define(eq=False)
class Worker:
    slot: int
    generation: int
    process: NewProcess
    started_at: float
    ready: bool = False
    retiring: bool = False
    report: dict[str, Any] = field(factory=dict)
    #: Requests after which it is recycled (0: never).
    limit: int = 0
    #: The reactor's time of its last status report (its heartbeat).
    last_heartbeat: float = 0.0
    #: Why the master killed it, if it did (C{"timeout"}).
    killed_for: str | None = None

    @property
    def requests(self) -> int:
        return sum(s.get("requests", 0) for s in self.report.get("servers", []))

    @property
    def pid(self) -> int:
        return self.process.pid

    def retire(self, clock: IReactorTime) -> None:
        """
        Replaced by a roll: told so on its pipe first, so that it drains as
        replaced (WebSockets hear 1012, not 1001), with SIGTERM as a
        fallback.
        """
        self.retiring = True
        self.process.send("retire")
        clock.callLater(RETIRE_FALLBACK, self.signal, "TERM")

    def signal(self, name: str) -> None:
        # By number: Twisted knows only a few signals by name.
        number = getattr(signal, f"SIG{name}")
        try:
            self.process.transport.signalProcess(number)  # type: ignore[union-attr]
        except (ProcessExitedAlready, OSError, AttributeError):
            pass


@define(eq=False)
class HeldSocket:
    """
    A listening socket the master holds for its workers.
    """

    spec: ListenSpec
    fd: int
    owner: socket.socket | Any

    def close(self) -> None:
        self.owner.close()


class _GroupLifecycle:
    """
    serving -> (restart) rolling -> (rolled | roll_failed) serving;
    serving | rolling -> (shutdown) leaving.
    """

    _machine = MethodicalMachine()

    def __init__(self, group: WorkerGroup) -> None:
        self._group = group

    @_machine.state(initial=True)
    def serving(self) -> None:
        "Every slot has its worker (or is being refilled)."

    @_machine.state()
    def rolling(self) -> None:
        "Replacing the workers one slot at a time."

    @_machine.state()
    def leaving(self) -> None:
        "Draining every worker, then exiting."

    @_machine.input()
    def restart(self, executable: str | None) -> Any:
        "Roll every worker."

    @_machine.input()
    def rolled(self) -> Any:
        "Every slot has a new worker."

    @_machine.input()
    def roll_failed(self, failure: Failure) -> Any:
        "A new worker did not come up."

    @_machine.input()
    def shutdown(self) -> Any:
        "Drain every worker and exit."

    @_machine.output()
    def _roll(self, executable: str | None) -> Deferred[int]:
        return self._group._roll(executable)

    @_machine.output()
    def _refuse(self, executable: str | None) -> Deferred[int]:
        return self._group._refuse()

    @_machine.output()
    def _finish_roll(self) -> None:
        self._group._roll_done()

    @_machine.output()
    def _abort_roll(self, failure: Failure) -> None:
        self._group._roll_stopped(failure)

    @_machine.output()
    def _ignore(self, failure: Failure) -> None:
        pass

    @_machine.output()
    def _leave(self) -> Deferred[None]:
        return self._group._leave()

    @_machine.output()
    def _already_leaving(self) -> Deferred[None]:
        return self._group._when_gone()

    serving.upon(restart, enter=rolling, outputs=[_roll], collector=lambda o: next(iter(o)))
    rolling.upon(restart, enter=rolling, outputs=[_refuse], collector=lambda o: next(iter(o)))
    leaving.upon(restart, enter=leaving, outputs=[_refuse], collector=lambda o: next(iter(o)))
    rolling.upon(rolled, enter=serving, outputs=[_finish_roll])
    rolling.upon(roll_failed, enter=serving, outputs=[_abort_roll])
    leaving.upon(rolled, enter=leaving, outputs=[])
    leaving.upon(roll_failed, enter=leaving, outputs=[_ignore])
    serving.upon(shutdown, enter=leaving, outputs=[_leave], collector=lambda o: next(iter(o)))
    rolling.upon(shutdown, enter=leaving, outputs=[_leave], collector=lambda o: next(iter(o)))
    leaving.upon(
        shutdown, enter=leaving, outputs=[_already_leaving], collector=lambda o: next(iter(o))
    )


@define(eq=False)
class WorkerGroup:
    """
    The master's workers.
    """

    runtime: Runtime
    size: int
    sockets: list[HeldSocket] = field(factory=list)
    workers: list[Worker] = field(factory=list)
    deaths: int = 0
    _slots: dict[int, Worker] = field(factory=dict)
    _deaths_in_row: dict[int, int] = field(factory=dict)
    _refills: dict[int, Any] = field(factory=dict)
    _roll_result: Deferred[int] | None = None
    _roll_began: float = 0.0
    _target_generation: int = 1
    _leaving: bool = False
    _gone: Event = field(factory=Event)
    _first_ready: Deferred[None] = field(factory=Deferred)
    _push: LoopingCall | None = None
    #: Draws each worker's max_requests jitter.
    rng: random.Random = field(factory=random.Random)
    spawner: Callable[..., NewProcess] = spawn_new_process
    recycles: int = 0
    timeouts: int = 0
    _recycle_queue: list[tuple[Worker, str]] = field(factory=list)
    _recycling: Worker | None = None
    #: After a successor failed to come up, no recycling before this time
    #: (the old worker still serves; a broken release must not spin).
    _recycle_paused_until: float = 0.0
    _last_reason: dict[int, str] = field(factory=dict)
    _watchdog: LoopingCall | None = None
    _lifecycle: _GroupLifecycle = field(init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        self._lifecycle = _GroupLifecycle(self)

    # -- starting -----------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Start a worker in every slot; fires once all are ready.
        """
        self._target_generation = self.runtime.generation
        starts = [self._start_worker(slot, self.runtime.generation) for slot in range(self.size)]
        self._push = LoopingCall(self._push_status)
        self._push.clock = self.runtime.reactor
        self._push.start(STATUS_INTERVAL, now=False)
        timeout = self.runtime.settings.worker_timeout
        if timeout > 0:
            self._watchdog = LoopingCall(self._check_heartbeats)
            self._watchdog.clock = self.runtime.reactor
            self._watchdog.start(min(1.0, timeout / 2), now=False)
        remaining = len(starts)
        done: Deferred[None] = Deferred()

        def one_ready(_: object) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0 and not done.called:
                done.callback(None)

        def one_failed(failure: Failure) -> None:
            if not done.called:
                done.errback(failure)

        for d in starts:
            d.addCallbacks(one_ready, one_failed)
        return done

    def _start_worker(
        self, slot: int, generation: int, executable: str | None = None
    ) -> Deferred[Worker]:
        """
        Start a worker for C{slot}; fires once it serves, or fails with
        L{RestartFailed}.  A worker that needs ports we do not hold yet is
        started again once they are bound.
        """
        result: Deferred[Worker] = Deferred()
        self._spawn(slot, generation, executable, result)
        return result

    def _spawn(
        self, slot: int, generation: int, executable: str | None, result: Deferred[Worker]
    ) -> None:
        runtime = self.runtime
        needed: list[dict[str, Any]] = []
        worker_box: list[Worker] = []

        def on_message(kind: str, payload: str) -> None:
            if kind == "need":
                needed.extend(json.loads(payload))
            elif worker_box:
                self._message(worker_box[0], kind, payload)

        def on_exit(reason: Failure) -> None:
            if worker_box:
                self._exited(worker_box[0], reason)

        try:
            process = self.spawner(
                runtime.reactor,
                runtime.reactor,
                command=runtime.command_for(executable),
                environ=runtime.environ,
                cwd=runtime.settings.directory or runtime.cwd,
                sockets=[PassedSocket(held.fd, held.spec.fd_name) for held in self.sockets],
                generation=generation,
                extra_environ={
                    WORKER_VARIABLE: str(slot),
                    GROUP_VARIABLE: json.dumps(self.status(), separators=(",", ":")),
                },
                ready_timeout=runtime.settings.ready_timeout,
                forward_stderr=runtime.forward_stderr,
            )
        except Exception as e:
            result.errback(Failure(RestartFailed(f"cannot start worker: {e}")))
            return
        process.on_message = on_message
        process.on_exit = on_exit
        worker = Worker(slot, generation, process, time.time())
        settings = runtime.settings
        if settings.max_requests > 0:
            worker.limit = settings.max_requests + self.rng.randint(
                0, max(0, settings.max_requests_jitter)
            )
        worker_box.append(worker)
        self.workers.append(worker)

        def ready(pid: int) -> None:
            worker.ready = True
            worker.last_heartbeat = runtime.reactor.seconds()
            self._log.info(
                "{pid}: worker {worker} (slot {slot}, generation {generation}) is ready",
                pid=runtime.pid,
                worker=pid,
                slot=slot,
                generation=generation,
            )
            self._adopt_layout(process.ready_facts)
            result.callback(worker)
            self._push_status()

        def failed(failure: Failure) -> None:
            if worker in self.workers:
                self.workers.remove(worker)
            if needed and not self._leaving:
                try:
                    self._hold(needed)
                except ConfigError as e:
                    result.errback(Failure(RestartFailed(str(e))))
                    return
                self._spawn(slot, generation, executable, result)
                return
            result.errback(failure)

        process.ready.addCallbacks(ready, failed)

    def _hold(self, specs: list[dict[str, Any]]) -> None:
        """
        Bind the ports a new worker asked for.
        """
        for raw in specs:
            spec = ListenSpec(
                raw["server"],
                bool(raw["tls"]),
                int(raw["port"]),
                raw.get("host", ""),
                int(raw.get("index", 0)),
                raw.get("path"),
            )
            if any(held.spec == spec for held in self.sockets):
                continue
            if spec.path is not None:
                server = self.runtime.servers.get(spec.server)
                mode = server.unix_socket_mode if server is not None else DEFAULT_UNIX_MODE
                sock = bind_unix_socket(spec.path, mode)
                self.runtime.own_unix_file(spec.path)
                where = f"unix:{spec.path}"
            else:
                sock = bind_socket(spec.host, spec.port)
                where = f"port {sock.getsockname()[1]}"
            self.sockets.append(HeldSocket(spec, sock.fileno(), sock))
            self._log.info(
                "{pid}: bound {scheme} {where} for the new workers",
                pid=self.runtime.pid,
                scheme=spec.scheme,
                where=where,
            )

    def _adopt_layout(self, facts: dict[str, Any]) -> None:
        """
        A new worker told us which sockets its config uses: the others are
        ports the config dropped; the old workers keep their own copies
        until they drain.
        """
        wanted = facts.get("workers")
        if isinstance(wanted, int) and wanted != self.size:
            self._log.warn(
                "{pid}: the config now asks for {wanted} workers; this master keeps "
                "{size} until it is restarted itself (stop and start it)",
                pid=self.runtime.pid,
                wanted=wanted,
                size=self.size,
            )
        claimed = facts.get("claimed")
        if claimed is None:
            return
        for held in list(self.sockets):
            if held.spec.fd_name not in claimed:
                self.sockets.remove(held)
                held.close()
                self._log.info(
                    "{pid}: the new config dropped {name}: it closes with the old workers",
                    pid=self.runtime.pid,
                    name=held.spec.fd_name,
                )

    # -- messages -----------------------------------------------------------

    def _message(self, worker: Worker, kind: str, payload: str) -> None:
        if kind == "status":
            try:
                worker.report = json.loads(payload)
            except ValueError:
                pass
            worker.last_heartbeat = self.runtime.reactor.seconds()
            self._check_limits(worker)
        elif kind == "restart":
            executable = None
            try:
                executable = json.loads(payload).get("executable") if payload else None
            except ValueError:
                pass
            self.runtime.restart(executable, trusted=True).addErrback(lambda f: None)
        elif kind == "shutdown":
            self.runtime.shutdown()
        elif kind == "released":
            self._release_services(exclude=worker)

    # -- recycling and the watchdog -----------------------------------------

    def _check_limits(self, worker: Worker) -> None:
        """
        Queue a serving worker for replacement once it has served its
        requests or grown past the memory limit.
        """
        if worker.retiring or self._slots.get(worker.slot) is not worker:
            return
        if worker is self._recycling or any(w is worker for w, _ in self._recycle_queue):
            return
        if self.runtime.reactor.seconds() < self._recycle_paused_until:
            return
        settings = self.runtime.settings
        rss = worker.report.get("rss_mib", 0) or 0
        if worker.limit and worker.requests >= worker.limit:
            reason = "recycle"
        elif settings.max_worker_memory > 0 and rss > settings.max_worker_memory:
            reason = "memory"
        else:
            return
        self._recycle_queue.append((worker, reason))
        self._next_recycle()

    def _next_recycle(self) -> None:
        """
        Replace the next queued worker the way a roll replaces a slot; one
        at a time, and never during a roll.
        """
        if self._recycling is not None or self.rolling or self._leaving:
            return
        while self._recycle_queue:
            old, reason = self._recycle_queue.pop(0)
            if not old.retiring and self._slots.get(old.slot) is old:
                break
        else:
            return
        self._recycling = old
        slot = old.slot
        if reason == "memory":
            why = f"at {old.report.get('rss_mib', 0):.0f} MiB of memory"
        else:
            why = f"after {old.requests} requests"
        self._log.info(
            "{pid}: recycling worker {worker} (slot {slot}) {why}",
            pid=self.runtime.pid,
            worker=old.pid,
            slot=slot,
            why=why,
        )

        def ready(worker: Worker) -> None:
            self._recycling = None
            if self._leaving or self._slots.get(slot) is not old:
                # A roll or a death replaced the slot meanwhile.
                worker.retire(self.runtime.reactor)
            else:
                self._slots[slot] = worker
                self._last_reason[slot] = reason
                self.recycles += 1
                # The new worker serves: only now may the old one drain.
                old.retire(self.runtime.reactor)
            self._next_recycle()

        def failed(failure: Failure) -> None:
            self._recycling = None
            self._recycle_paused_until = self.runtime.reactor.seconds() + BACKOFF_MAX
            self._log.error(
                "{pid}: the new worker for slot {slot} did not come up; worker {worker} "
                "goes on serving, and recycling waits {delay:g}s: {why}",
                delay=BACKOFF_MAX,
                pid=self.runtime.pid,
                slot=slot,
                worker=old.pid,
                why=failure.getErrorMessage(),
            )
            self._next_recycle()

        self._start_worker(slot, old.generation).addCallbacks(ready, failed)

    def _check_heartbeats(self) -> None:
        """
        Kill a serving worker that has not reported within worker_timeout:
        its reactor is stuck.  SIGUSR2 first, so that its faulthandler
        writes the stacks to its stderr; the dead-worker path replaces it.
        """
        timeout = self.runtime.settings.worker_timeout
        now = self.runtime.reactor.seconds()
        for worker in list(self.workers):
            if not worker.ready or worker.retiring or worker.killed_for is not None:
                continue
            silent = now - worker.last_heartbeat
            if silent <= timeout:
                continue
            worker.killed_for = "timeout"
            self.timeouts += 1
            self._log.error(
                "{pid}: worker {worker} (slot {slot}) sent no heartbeat for {silent:.1f} s; "
                "killing it",
                pid=self.runtime.pid,
                worker=worker.pid,
                slot=worker.slot,
                silent=silent,
            )
            worker.signal("USR2")
            # A SIGSTOPped worker dumps its stacks only once it runs again.
            worker.signal("CONT")
            self.runtime.reactor.callLater(STACK_DUMP_WAIT, worker.signal, "KILL")

    def _release_services(self, exclude: Worker | None = None) -> None:
        """
        The services may run again: tell the serving worker of slot 0.
        """
        successor = self._slots.get(0)
        if successor is not None and successor is not exclude and successor.ready:
            successor.process.send("released", f"at={time.time():.6f}")

    def _push_status(self) -> None:
        status = json.dumps(self.status(), separators=(",", ":"))
        for worker in self.workers:
            if worker.ready:
                worker.process.send("group", status)

    # -- serving ------------------------------------------------------------

    def serve(self) -> Deferred[None]:
        """
        Fill every slot; fires once all workers serve.
        """
        d = self.start()

        def all_ready(_: object) -> None:
            for worker in self.workers:
                self._slots[worker.slot] = worker
            self._release_services()

        return d.addCallback(all_ready)

    def _exited(self, worker: Worker, reason: Failure) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        if self._leaving:
            if not self.workers:
                self._gone.happen()
            return
        if worker.retiring or not worker.ready or self._slots.get(worker.slot) is not worker:
            return
        # It died on its own (or the watchdog killed it): replace it, after
        # a back-off.
        del self._slots[worker.slot]
        self._last_reason[worker.slot] = worker.killed_for or "died"
        self.deaths += 1
        lived = time.time() - worker.started_at
        in_row = 0 if lived > HEALTHY_AFTER else self._deaths_in_row.get(worker.slot, 0)
        self._deaths_in_row[worker.slot] = in_row + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * (2**in_row))
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self._log.warn(
            "{pid}: worker {worker} (slot {slot}) died ({how}); replacing it in {delay:g}s",
            pid=self.runtime.pid,
            worker=worker.pid,
            slot=worker.slot,
            how=f"signal {sig}" if sig else f"status {code}",
            delay=delay,
        )
        self._refills[worker.slot] = self.runtime.reactor.callLater(
            delay, self._refill, worker.slot
        )

    def _refill(self, slot: int) -> None:
        self._refills.pop(slot, None)
        if self._leaving or slot in self._slots:
            return
        generation = self.runtime.generation

        def ready(worker: Worker) -> None:
            if self._leaving:
                worker.signal("TERM")
                return
            self._slots[slot] = worker
            if slot == 0:
                self._release_services()

        def failed(failure: Failure) -> None:
            self._log.error(
                "{pid}: the worker for slot {slot} did not come up: {why}",
                pid=self.runtime.pid,
                slot=slot,
                why=failure.getErrorMessage(),
            )
            in_row = self._deaths_in_row.get(slot, 0)
            self._deaths_in_row[slot] = in_row + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * (2**in_row))
            self._refills[slot] = self.runtime.reactor.callLater(delay, self._refill, slot)

        self._start_worker(slot, generation).addCallbacks(ready, failed)

    # -- restarting ---------------------------------------------------------

    def restart(self, executable: str | None) -> Deferred[int]:
        result: Deferred[int] = self._lifecycle.restart(executable)
        return result

    @property
    def rolling(self) -> bool:
        return self._roll_result is not None

    def _refuse(self) -> Deferred[int]:
        why = "shutting down" if self._leaving else "a restart is already running"
        self._log.warn("{pid}: restart refused: {why}", pid=self.runtime.pid, why=why)
        return fail(RestartRefused(f"restart refused: {why}"))

    def _roll(self, executable: str | None) -> Deferred[int]:
        runtime = self.runtime
        result: Deferred[int] = Deferred()
        self._roll_result = result
        self._roll_began = runtime.reactor.seconds()
        newest = max([w.generation for w in self.workers] + [runtime.generation])
        self._target_generation = newest + 1
        runtime._log.info("{pid}: server reloading", pid=runtime.pid)
        runtime.notifier.notify(reloading=1, monotonic_usec=int(time.monotonic() * 1_000_000))
        self._roll_slot(0, executable)
        return result

    def _roll_slot(self, slot: int, executable: str | None) -> None:
        if slot >= self.size:
            self._lifecycle.rolled()
            return

        def ready(worker: Worker) -> None:
            if self._leaving:
                worker.signal("TERM")
                return
            old = self._slots.get(slot)
            self._slots[slot] = worker
            self._last_reason[slot] = "roll"
            if old is not None:
                # The new worker serves: only now may the old one drain.
                old.retire(self.runtime.reactor)
            elif slot == 0:
                self._release_services()
            self._roll_slot(slot + 1, executable)

        def failed(failure: Failure) -> None:
            self._lifecycle.roll_failed(failure)

        self._start_worker(slot, self._target_generation, executable).addCallbacks(ready, failed)

    def _roll_done(self) -> None:
        runtime = self.runtime
        seconds = runtime.reactor.seconds() - self._roll_began
        runtime.generation = self._target_generation
        runtime._record_restart(True, None, seconds)
        runtime.notifier.notify(ready=1, status=f"serving, generation {runtime.generation}")
        runtime._log.info(
            "{pid}: every worker replaced (generation {generation}) in {seconds:.3f}s",
            pid=runtime.pid,
            generation=runtime.generation,
            seconds=seconds,
        )
        result, self._roll_result = self._roll_result, None
        if result is not None:
            result.callback(runtime.pid)
        self._next_recycle()

    def _roll_stopped(self, failure: Failure) -> None:
        runtime = self.runtime
        reason = getattr(failure.value, "reason", None) or failure.getErrorMessage()
        runtime._record_restart(False, reason, None)
        runtime._log.error(
            "{pid}: restart failed, the roll stops here and the other workers go on "
            "serving: {reason}",
            pid=runtime.pid,
            reason=reason,
        )
        tail = getattr(failure.value, "stderr_tail", "")
        if tail:
            runtime._log.error("{pid}: new worker's stderr:\n{tail}", pid=runtime.pid, tail=tail)
        runtime.notifier.notify(ready=1, status="restart failed: " + reason)
        result, self._roll_result = self._roll_result, None
        if result is not None:
            result.errback(failure)
        self._next_recycle()

    # -- leaving ------------------------------------------------------------

    def shutdown(self) -> Deferred[None]:
        result: Deferred[None] = self._lifecycle.shutdown()
        return result

    def _leave(self) -> Deferred[None]:
        self._leaving = True
        for call in self._refills.values():
            if call.active():
                call.cancel()
        self._refills.clear()
        if self._push is not None and self._push.running:
            self._push.stop()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._recycle_queue.clear()
        for worker in list(self.workers):
            worker.retiring = True
            if worker.ready:
                worker.signal("TERM")
            else:
                worker.process.kill()
        if not self.workers:
            self._gone.happen()
        # Workers drain for up to drain_timeout; past that (and a margin for
        # their own abort), kill what is left.
        grace = self.runtime.settings.drain_timeout + 5.0
        killer = self.runtime.reactor.callLater(grace, self._kill_all)
        self._gone.wait().addCallback(lambda _: killer.cancel() if killer.active() else None)
        for held in self.sockets:
            held.close()
        self.sockets.clear()
        return self._when_gone()

    def _kill_all(self) -> None:
        for worker in list(self.workers):
            self._log.warn(
                "{pid}: worker {worker} did not drain in time: killing it",
                pid=self.runtime.pid,
                worker=worker.pid,
            )
            worker.process.kill()

    def _when_gone(self) -> Deferred[None]:
        return self._gone.wait()

    # -- reporting ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """
        The whole group: the master's facts, every worker, and the servers
        with their in-flight requests summed over the workers.
        """
        runtime = self.runtime
        now = runtime.reactor.seconds()
        workers = [
            {
                "pid": w.pid,
                "slot": w.slot,
                "generation": w.generation,
                "ready": w.ready,
                "draining": w.retiring,
                "in_flight": sum(s.get("in_flight", 0) for s in w.report.get("servers", [])),
                "requests": w.requests,
                "rss_mib": w.report.get("rss_mib"),
                "last_heartbeat": round(now - w.last_heartbeat, 3) if w.ready else None,
                "last_replaced_reason": self._last_reason.get(w.slot),
                "started_at": w.started_at,
            }
            for w in sorted(self.workers, key=lambda w: (w.slot, w.started_at))
        ]
        servers: dict[str, dict[str, Any]] = {}
        for w in self.workers:
            for s in w.report.get("servers", []):
                entry = servers.setdefault(
                    s["name"], {"name": s["name"], "ports": s["ports"], "in_flight": 0, "requests": 0}
                )
                entry["in_flight"] += s.get("in_flight", 0)
                entry["requests"] += s.get("requests", 0)
                if w is self._slots.get(w.slot):
                    entry["ports"] = s["ports"]
        status = runtime.own_status()
        status.update(
            {
                "role": "master",
                "restarting": self.rolling,
                "draining": self._leaving,
                "workers": workers,
                "worker_deaths": self.deaths,
                "worker_recycles": self.recycles,
                "worker_timeouts": self.timeouts,
                "last_replaced_reason": {str(k): v for k, v in sorted(self._last_reason.items())},
                "servers": list(servers.values())
                or [
                    {"name": name, "ports": [], "in_flight": 0, "requests": 0}
                    for name in runtime.servers
                ],
            }
        )
        return status


def worker_slot(environ: dict[str, str] | Any) -> tuple[int | None, dict[str, Any] | None]:
    """
    The slot and the group status a master started this worker with.
    """
    value = environ.pop(WORKER_VARIABLE, None)
    group = environ.pop(GROUP_VARIABLE, None)
    try:
        slot = int(value) if value is not None else None
        return slot, json.loads(group) if group and slot is not None else None
    except ValueError:
        return None, None
