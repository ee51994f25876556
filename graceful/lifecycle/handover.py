# -*- test-case-name: tests.unit.lifecycle.test_handover -*-
"""
A process that restarts by starting the next generation and handing every
socket over to it: one that serves alone, or a master with its workers.

    Serving --restart--> Restarting(new process) --ready--> HandingOver(departure)
                                                 --failed--> Serving
    Restarting --canary_ready--> Canary(restart) --canary_passed--> HandingOver
                                                 --canary_failed--> Serving
    Serving | Restarting --shutdown--> Leaving(departure)

What the process serves with (its own sites, or its workers) is a
L{ServedBy}: what it passes on, and how it leaves.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from attrs import define, field
from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .canary import CANARY_VARIABLE, Candidate, CanaryWindow, Counts, counting_sites
from .core import ProcessCore
from .departure import Departure
from . import restart_log
from .verification import start_verified
from .._errors import ConfigError, RestartRefused, WorkerCountRefused
from .._feeding import Feeder
from ..handoff.pipes import ChildProcess, RestartFailed, describe_exit
from ..handoff.pipes import ListeningSocket
from ..handoff.fd_store import FdStore
from ..handoff.messages import Accepted, Message, Ready, Released, Started
from .._status import DrainStatus, ProcessStatus


@runtime_checkable
class Departing(Protocol):
    """
    A process leaving: L{Departure} for one serving alone.
    """

    def start(self, services_stopped: Callable[[], Deferred[Any] | None] = ...) -> None:
        "Begin; C{services_stopped} runs once the services have stopped."

    def progress(self) -> DrainStatus | None:
        "The status's C{drain}, once begun."


class ServedBy(Protocol):
    """
    What a process serves with (its own sites, or a master's workers), as
    its hand-over sees it.
    """

    def passed_sockets(self) -> list[ListeningSocket]:
        "Every socket the next generation inherits."

    def spawning(self) -> None:
        "The next generation is about to start."

    def restart_failed(self) -> None:
        "It did not come up: serve on."

    def successor_says(self, message: Message) -> None:
        "The next generation, starting, tells of its progress."

    def departure(self, reason: str, final: bool, handed_over: bool) -> Departing:
        "How this generation leaves."

    def released(self, released: Released) -> None:
        "The older generation's services stopped: ours may start."

    def count_answers(self) -> Callable[[], Counts]:
        "Start counting this generation's answers (a canary window opens)."


@define(eq=False)
class Sites:
    """
    A process serving alone: its own servers' sites.

    @ivar process: the process.
    """

    process: ProcessCore

    def passed_sockets(self) -> list[ListeningSocket]:
        return self.process.passed_sockets()

    def spawning(self) -> None:
        _close_non_graceful_ports(self.process)

    def restart_failed(self) -> None:
        _reopen_non_graceful_ports(self.process)

    def successor_says(self, message: Message) -> None:
        pass

    def departure(self, reason: str, final: bool, handed_over: bool) -> Departing:
        return Departure(self.process, reason, final=final, handed_over=handed_over)

    def released(self, released: Released) -> None:
        self.process.start_services(released)

    def count_answers(self) -> Callable[[], Counts]:
        return counting_sites(self.process)


class HandoverInputs(Protocol):
    """
    The inputs of a process serving alone.  Results go to the Deferreds
    the callers pass, so that an input fed while another runs waits its
    turn instead of failing.
    """

    def restart(self, executable: str | None, result: Deferred[int]) -> None:
        "Start a new process to take over; C{result} fires with its pid."

    def shutdown(self) -> None:
        "Stop accepting, drain, and exit."

    def ready(self, new_pid: int) -> None:
        "The new process serves."

    def failed(self, failure: Failure) -> None:
        "The new process did not come up."

    def canary_ready(self, new_pid: int) -> None:
        "The new process serves, holding its ports for a canary window."

    def canary_passed(self, new_pid: int) -> None:
        "The canary window went well: hand over."

    def canary_failed(self, reason: str) -> None:
        "The canary window went badly: roll back."

    def state(self) -> Restart | Departing | None:
        "What is under way: a restart, a departure, or nothing."


@define(eq=False)
class Handover:
    """
    What the machine acts on.

    @ivar process: the process.
    @ivar served_by: what it serves with.
    @ivar feeder: feeds inputs from outside (a Deferred's callback) and runs
        the effects the outside sees once a transition is over.
    @ivar current: the last restart begun.
    @ivar last_words: what must reach the new process before a shutdown
        ends this one (its result is waited for).
    """

    process: ProcessCore
    served_by: ServedBy
    feeder: Feeder[HandoverInputs] = field(factory=Feeder)
    current: Restart | None = None
    last_words: Callable[[], Deferred[None] | None] = lambda: None

    def feed(self, fire: Callable[[HandoverInputs], None]) -> None:
        self.feeder.feed(fire)

    @property
    def after(self) -> list[Callable[[], Any]]:
        return self.feeder.after

    def refuse(self, result: Deferred[int], why: str) -> None:
        self.process.log.warn("{pid}: restart refused: {why}", pid=self.process.pid, why=why)
        self.after.append(lambda: result.errback(RestartRefused(f"restart refused: {why}")))


@define(eq=False)
class Restart:
    """
    A restart under way.

    @ivar result: fires with the new pid, or fails.
    @ivar began: the reactor's time it began.
    @ivar new_process: the process it started, once started.
    @ivar canary_seconds: its canary window (0: none).
    @ivar window: the canary window, once open.
    @ivar new_master: whether the new process is a master (it said
        C{started}).
    """

    result: Deferred[int]
    began: float
    new_process: ChildProcess | None = None
    canary_seconds: float = 0.0
    window: CanaryWindow | None = None
    new_master: bool = False


def _start_restart(
    inputs: HandoverInputs, handover: Handover, executable: str | None, result: Deferred[int]
) -> Restart:
    process = handover.process
    restart = handover.current = Restart(result, process.reactor.seconds())
    restart.canary_seconds = process.settings.canary_seconds
    process.notify_reloading()
    restart_log.began(process)
    sockets = handover.served_by.passed_sockets()
    handover.served_by.spawning()
    try:
        restart.new_process = process.environment.spawn(
            process.reactor,
            process.reactor,
            command=process.command_for(executable),
            environ=process.environ,
            cwd=process.settings.directory or process.cwd,
            sockets=sockets,
            generation=process.generation + 1,
            extra_environ={CANARY_VARIABLE: "1" if restart.canary_seconds else "0"},
            ready_timeout=process.settings.ready_timeout,
            forward_stderr=process.forward_stderr,
        )
    except Exception as e:
        failure = Failure(RestartFailed(f"cannot start new process: {e}"))
        process.reactor.callLater(0, handover.feed, lambda i: i.failed(failure))
        return restart
    restart_log.spawned(process, restart.new_process.pid)
    says = handover.served_by.successor_says

    def successor_says(message: Message) -> None:
        restart.new_master = restart.new_master or isinstance(message, Started)
        says(message)

    restart.new_process.on_message = successor_says
    new_process = restart.new_process
    restart.new_process.ready.addCallbacks(
        lambda pid: handover.feed(
            # A new process of a release without canaries says nothing of it.
            lambda i: i.canary_ready(pid)
            if restart.canary_seconds and new_process.ready_facts.canary
            else i.ready(pid)
        ),
        lambda failure: handover.feed(lambda i: i.failed(failure)),
    )
    return restart


def _open_canary(inputs: HandoverInputs, handover: Handover, new_pid: int) -> Restart:
    restart = handover.current
    assert restart is not None and restart.new_process is not None
    process = handover.process
    restart.window = CanaryWindow(
        process,
        restart.new_process,
        restart.canary_seconds,
        process.settings.canary_max_error_ratio,
        passed=lambda: handover.feed(lambda i: i.canary_passed(new_pid)),
        failed=lambda reason: handover.feed(lambda i: i.canary_failed(reason)),
        count_old=handover.served_by.count_answers,
        master=restart.new_master,
    )
    handover.after.append(restart.window.open)
    return restart


def _close_non_graceful_ports(process: ProcessCore) -> None:
    # set_graceful(False): the new process binds these ports again.
    for server in process.servers.values():
        if not server.graceful:
            server.stop_accepting()
            server.listeners.clear()


def _reopen_non_graceful_ports(process: ProcessCore) -> None:
    for server in process.servers.values():
        if server.graceful or server.listeners:
            continue
        try:
            server.prepare()
            server.serve()
        except ConfigError as e:
            process.log.error(
                "{pid}: cannot reopen the ports of server {server}: {error}",
                pid=process.pid,
                server=server.name,
                error=str(e),
            )


def _shutdown_departure(inputs: HandoverInputs, handover: Handover) -> Departing:
    process = handover.process
    process.log.info("{pid}: server shutting down", pid=process.pid)
    process.notifier.notify(stopping=1)
    departure = handover.served_by.departure("shutdown", final=True, handed_over=False)
    # last_words is read once the transition (which may set it) is over.
    handover.after.append(lambda: departure.start(lambda: handover.last_words()))
    return departure


def _handover_departure(inputs: HandoverInputs, handover: Handover, new_pid: int) -> Departing:
    # The behaviour fills in the successor; the drain starts after it.
    return handover.served_by.departure("restart", final=False, handed_over=True)


def _successor_exited(process: ProcessCore, new_pid: int, reason: Failure) -> None:
    """
    The process we handed over to ended while we drain.  A clean exit is
    its own handover or shutdown; anything else deserves a line, as this
    one is on its way out too.
    """
    how = describe_exit(reason)
    if how != "exited with status 0":
        process.log.error(
            "{pid}: process {new_pid}, which took over, {how} while this one drains",
            pid=process.pid,
            new_pid=new_pid,
            how=how,
        )


def _build() -> Callable[[Handover], HandoverInputs]:
    machine = TypeMachineBuilder(HandoverInputs, Handover)
    Serving = machine.state("Serving")
    Restarting = machine.state("Restarting", _start_restart)
    Canary = machine.state("Canary", _open_canary)
    HandingOver = machine.state("HandingOver", _handover_departure)
    Leaving = machine.state("Leaving", _shutdown_departure)

    Serving.upon(HandoverInputs.restart).to(Restarting).returns(None)
    Serving.upon(HandoverInputs.shutdown).to(Leaving).returns(None)
    HandingOver.upon(HandoverInputs.shutdown).loop().returns(None)
    Leaving.upon(HandoverInputs.shutdown).loop().returns(None)

    @pep614(Restarting.upon(HandoverInputs.restart).loop())
    @pep614(Canary.upon(HandoverInputs.restart).loop())
    def already(
        inputs: HandoverInputs,
        handover: Handover,
        restart: Restart,
        executable: str | None,
        result: Deferred[int],
    ) -> None:
        handover.refuse(result, "a restart is already running")

    @pep614(HandingOver.upon(HandoverInputs.restart).loop())
    @pep614(Leaving.upon(HandoverInputs.restart).loop())
    def leaving(
        inputs: HandoverInputs,
        handover: Handover,
        departure: Departing,
        executable: str | None,
        result: Deferred[int],
    ) -> None:
        handover.refuse(result, "shutting down")

    @pep614(Restarting.upon(HandoverInputs.ready).to(HandingOver))
    @pep614(Canary.upon(HandoverInputs.canary_passed).to(HandingOver))
    def hand_over(inputs: HandoverInputs, handover: Handover, restart: Restart, new_pid: int) -> None:
        process = handover.process
        seconds = process.reactor.seconds() - restart.began
        window = restart.window
        ratios = window.ratios if window is not None else None
        process.history.record(True, None, process.environment.now(), seconds, ratios)
        restart_log.ready(process, new_pid)
        process.write_pidfile(new_pid)
        process.notifier.notify(mainpid=new_pid, ready=1)
        process.log.info(
            "{pid}: process {new_pid} (generation {generation}) is ready after "
            "{seconds:.3f}s; handing over",
            pid=process.pid,
            new_pid=new_pid,
            generation=process.generation + 1,
            seconds=seconds,
        )
        successor = restart.new_process
        assert successor is not None
        successor.on_exit = lambda reason: _successor_exited(process, new_pid, reason)
        successor.accept(
            Accepted(
                handoff_seconds=round(seconds, 6),
                at=process.environment.now(),
                restarts=process.history.restarts,
                failed_restarts=process.history.failed_restarts,
                canary_old_error_ratio=ratios[0] if ratios else None,
                canary_new_error_ratio=ratios[1] if ratios else None,
                history=restart_log.passed_on(process),
            )
        )
        now = process.environment.now

        def depart() -> None:
            # The HandingOver state's departure, read once the transition is
            # over; the release is chained to the services' stop, so that the
            # exit also waits for it to be flushed.
            departure = inputs.state()
            assert departure is not None and not isinstance(departure, Restart)
            departure.start(lambda: successor.release(now()))

        handover.after.append(depart)
        handover.after.append(lambda: restart.result.callback(new_pid))

    @pep614(Restarting.upon(HandoverInputs.failed).to(Serving))
    def restart_failed(
        inputs: HandoverInputs, handover: Handover, restart: Restart, failure: Failure
    ) -> None:
        process = handover.process
        error = failure.value
        reason = getattr(error, "reason", None) or str(error)
        process.history.record(False, reason, process.environment.now(), None)
        restart_log.failed(process, reason)
        process.log.error(
            "{pid}: restart failed, still serving: {reason}", pid=process.pid, reason=reason
        )
        # Once: the stderr was held back meanwhile, and a line that only
        # repeats the reason is left out.
        tail = error.tail_beyond_reason() if isinstance(error, RestartFailed) else ""
        if tail:
            process.log.error("{pid}: new process stderr:\n{tail}", pid=process.pid, tail=tail)
        process.notifier.notify(ready=1, status="restart failed: " + reason)
        if restart.new_process is not None:
            restart.new_process.kill()
        handover.after.append(handover.served_by.restart_failed)
        handover.after.append(lambda: restart.result.errback(failure))

    @pep614(Restarting.upon(HandoverInputs.canary_ready).to(Canary))
    def serve_beside(
        inputs: HandoverInputs, handover: Handover, restart: Restart, new_pid: int
    ) -> None:
        pass  # the Canary state's window opens once the transition is over

    @pep614(Canary.upon(HandoverInputs.canary_failed).to(Serving))
    def roll_back(
        inputs: HandoverInputs, handover: Handover, restart: Restart, reason: str
    ) -> None:
        process = handover.process
        window = restart.window
        assert window is not None
        # Its set_graceful(False) ports are its own until it has drained; fed
        # as an effect, so that it runs after a transition under way.
        reopen = handover.served_by.restart_failed
        window.roll_back(reason, gone=lambda: handover.feed(lambda _: handover.feeder.later(reopen)))
        process.history.record(False, reason, process.environment.now(), None, window.ratios)
        restart_log.failed(process, reason)
        process.log.error(
            "{pid}: restart rolled back, still serving: {reason}", pid=process.pid, reason=reason
        )
        process.notifier.notify(ready=1, status="restart rolled back: " + reason)
        handover.after.append(lambda: restart.result.errback(RestartFailed(reason)))

    @pep614(Canary.upon(HandoverInputs.shutdown).to(Leaving))
    def leave_both(inputs: HandoverInputs, handover: Handover, restart: Restart) -> None:
        # Both generations drain: the old one as it shuts down, the new one
        # as an old one hands over.
        reason = "shutdown asked for during the canary window"
        assert restart.window is not None and restart.new_process is not None
        restart.window.roll_back(reason)
        # The rollback is flushed, with the pipe closed, before we exit: a
        # pipe that closes without it reads as our death, and the canary
        # would take over (measured: it did, every time, without this).
        successor, now = restart.new_process, handover.process.environment.now
        handover.last_words = lambda: successor.release(now())
        handover.process.history.record(
            False, reason, handover.process.environment.now(), None, restart.window.ratios
        )
        restart_log.failed(handover.process, reason)
        handover.after.append(lambda: restart.result.errback(RestartFailed(reason)))

    @pep614(Restarting.upon(HandoverInputs.shutdown).to(Leaving))
    def abandon(inputs: HandoverInputs, handover: Handover, restart: Restart) -> None:
        if restart.new_process is not None:
            # Its failure arrives as an input, in the Leaving state.
            restart.new_process.abandon("shutdown asked for while the new process started")
        handover.after.append(
            lambda: None
            if restart.result.called
            else restart.result.errback(RestartFailed("shutdown asked for while the new process started"))
        )

    @pep614(Leaving.upon(HandoverInputs.failed).loop())
    @pep614(HandingOver.upon(HandoverInputs.failed).loop())
    def failed_while_leaving(
        inputs: HandoverInputs, handover: Handover, departure: Departing, failure: Failure
    ) -> None:
        error = failure.value
        reason = getattr(error, "reason", None) or str(error)
        handover.process.history.record(False, reason, handover.process.environment.now(), None)
        restart_log.failed(handover.process, reason)

    @pep614(Leaving.upon(HandoverInputs.ready).loop())
    @pep614(HandingOver.upon(HandoverInputs.ready).loop())
    @pep614(Leaving.upon(HandoverInputs.canary_ready).loop())
    @pep614(Leaving.upon(HandoverInputs.canary_passed).loop())
    def ready_while_leaving(
        inputs: HandoverInputs, handover: Handover, departure: Departing, new_pid: int
    ) -> None:
        pass

    @pep614(Leaving.upon(HandoverInputs.canary_failed).loop())
    @pep614(HandingOver.upon(HandoverInputs.canary_failed).loop())
    def judged_while_leaving(
        inputs: HandoverInputs, handover: Handover, departure: Departing, reason: str
    ) -> None:
        pass

    @pep614(Serving.upon(HandoverInputs.canary_failed).loop())
    def failed_while_serving(inputs: HandoverInputs, handover: Handover, reason: str) -> None:
        pass

    @pep614(Serving.upon(HandoverInputs.state).loop())
    def nothing(inputs: HandoverInputs, handover: Handover) -> None:
        return None

    @pep614(Restarting.upon(HandoverInputs.state).loop())
    @pep614(Canary.upon(HandoverInputs.state).loop())
    def restarting(inputs: HandoverInputs, handover: Handover, restart: Restart) -> Restart:
        return restart

    @pep614(HandingOver.upon(HandoverInputs.state).loop())
    @pep614(Leaving.upon(HandoverInputs.state).loop())
    def departing(inputs: HandoverInputs, handover: Handover, departure: Departing) -> Departing:
        return departure

    return machine.build()


_machine = _build()


class HandoffRole:
    """
    The role of a process that restarts by handing over to a new one.

    @ivar process: the process.
    @ivar served_by: what it serves with.
    @ivar name: what its status calls the role (C{"single"}, C{"master"}).
    """

    name: str

    def __init__(self, process: ProcessCore, served_by: ServedBy) -> None:
        self.process = process
        self.served_by = served_by
        self._handover = Handover(process, served_by)
        self._inputs = self._handover.feeder.inputs = _machine(self._handover)
        self._feed = self._handover.feed
        self._candidate: Candidate | None = None

    def serve(self) -> None:
        """
        Everything serves: say so, to the old generation or to the
        supervisor, and start the services once the old generation's have
        stopped.  A canary candidate holds its ports until told, and keeps
        the pipe open to report its counts.
        """
        process, candidate = self.process, self._candidate
        if process.old_process.is_handoff:
            facts = Ready(canary=True) if candidate else Ready()
            process.old_process.report_ready(facts, keep_open=candidate is not None)
        else:
            process.announce_serving(process.pid)
        took_over: Callable[[Accepted], None] = self._took_over
        gone: Callable[[bool], None] = self._old_generation_gone
        if candidate is not None:
            took_over, gone = candidate.accepting_first(took_over), candidate.accepting_first(gone)
        process.old_process.listen(
            process.reactor,
            took_over,
            on_message=candidate.heard if candidate else lambda message: None,
            on_gone=gone,
        ).addCallback(self._released)

    def restart(self, executable: str | None) -> Deferred[int]:
        result: Deferred[int] = Deferred()
        if self._candidate is not None and not self.process.succeeded.happened:
            # A canary, until the old generation hands over (or rolls it back).
            self._handover.refuse(result, "a restart is already running")
            self._feed(lambda inputs: None)  # runs the refusal
            return result
        self._feed(lambda inputs: inputs.restart(executable, result))
        return result

    def shutdown(self) -> Deferred[None]:
        if not self._rolled_back():
            self._feed(lambda inputs: inputs.shutdown())
        return self.process.when_exited()

    def _rolled_back(self) -> Departing | None:
        "A canary's departure, once the old generation rolled it back."
        return self._candidate.departure if self._candidate is not None else None

    leave = shutdown

    def shutdown_signalled(self) -> None:
        self.shutdown()

    @property
    def draining(self) -> bool:
        return self._departing() is not None

    @property
    def restarting(self) -> bool:
        return isinstance(self._inputs.state(), Restart)

    def drain_progress(self) -> DrainStatus | None:
        departing = self._departing()
        return departing.progress() if departing is not None else None

    def _departing(self) -> Departing | None:
        state = self._inputs.state()
        if state is None or isinstance(state, Restart):
            return self._rolled_back()
        return state

    # -- the old generation -----------------------------------------------

    def _took_over(self, accepted: Accepted) -> None:
        self.process.history.took_over(accepted, self.process.environment.now())
        restart_log.took_over(self.process, accepted)
        self.process.claim_pidfile()

    def _released(self, released: Released) -> None:
        if released.at is not None:  # a release, not the pipe's close
            restart_log.released(self.process, released)
        if not self.draining:
            self.process.succeeded.happen()
            self.served_by.released(released)
            self._keep_sockets()

    def _keep_sockets(self) -> None:
        """
        Now that we are the main process (the first one, or a later one its
        old generation has released or left), whose messages systemd takes
        with C{NotifyAccess=main}: keep the sockets we bound in its fd store.
        """
        process = self.process
        store = FdStore.from_environment(process.environ, process.settings.fd_store)
        if store is None:
            return
        sockets = self.served_by.passed_sockets()
        for name in store.keep(process.inherited.received, sockets):
            process.log.info(
                "{pid}: stored {name} in systemd's fd store", pid=process.pid, name=name
            )

    def _old_generation_gone(self, released: bool) -> None:
        """
        The old process's pipe closed.  Before it released, it died (killed,
        crashed): nobody else will name us in the pidfile and to systemd,
        nor let our services start; take over at once.
        """
        if released or self.draining:
            return
        process = self.process
        restart_log.old_gone(process)
        process.log.warn(
            "{pid}: previous generation {old} is gone; taking over",
            pid=process.pid,
            old=process.old_process.pid,
        )
        process.write_pidfile(process.pid)
        process.notifier.notify(mainpid=process.pid, ready=1, status="serving")
        self._keep_sockets()


class SingleRole(HandoffRole):
    """
    The role of a process that serves alone.

    @ivar name: C{"single"}.
    """

    name = "single"

    def __init__(self, process: ProcessCore) -> None:
        super().__init__(process, Sites(process))

    def start(self) -> None:
        """
        The reactor runs and every server serves: start the ASGI apps, then
        accept and report ready.
        """
        process = self.process
        start_verified(process).addCallback(lambda _: self._apps_started())

    def _apps_started(self) -> None:
        if self.draining:
            return  # shut down while the apps started: nothing to report
        self._candidate = Candidate.requested(self.process, lambda: self.draining)
        if self._candidate is None:
            self.process.start_accepting(last_holder=True)
        self.serve()

    def status(self) -> ProcessStatus:
        return self.process.own_status(
            self.name, self.draining, self.restarting, self.drain_progress()
        )

    def set_workers(self, count: int | None, step: int = 0, why: str = "") -> int:
        raise WorkerCountRefused(
            404, "this process serves alone (workers = 1): it has no workers to change"
        )
