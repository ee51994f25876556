# -*- test-case-name: tests.unit.workers.test_group -*-
"""
A master's workers: N serving processes that share every listening socket.

A restart rolls the workers one slot at a time: the new worker of a slot is
ready before the old one is told to drain, so at least N workers accept at
every moment.  A worker that dies unexpectedly is replaced after a back-off
(on the reactor's clock), so a crashing app does not spin.  Only the worker
of slot 0 runs the background services; the master hands them from the old
slot-0 worker to the new one.

    Serving --restart--> Rolling(roll) --rolled | roll_failed--> Serving
    Serving | Rolling --shutdown--> Leaving
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from attrs import define, field
from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..lifecycle.core import ProcessCore
from ..lifecycle import restart_log
from .._errors import RestartRefused
from .._event import Event
from .._feeding import Feeder
from .group_status import StatusPush, group_status
from ..handoff.pipes import RestartFailed
from ..handoff.messages import Message, Released, RestartRequest, ShutdownRequest, Status
from .canary import RollCanary
from .recycling import Recycler, Watchdog
from .._status import ProcessStatus
from .refill import Refill
from .services import ServicesBaton
from .slots import BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_AFTER, SlotBook, backoff
from .starter import HeldSocket, Worker, WorkerStarter, heartbeat

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "HEALTHY_AFTER", "WorkerGroup", "backoff"]


@define(eq=False)
class Roll:
    """
    A rolling restart under way.

    @ivar result: fires with the master's pid once every slot is replaced.
    @ivar began: the reactor's time it began.
    @ivar generation: the generation of the new workers.
    @ivar executable: what the new workers run, if not the master's command.
    @ivar canary: the first new worker's canary window, with canary_seconds.
    """

    result: Deferred[int]
    began: float
    generation: int
    executable: str | None
    canary: RollCanary | None = None


class GroupInputs(Protocol):
    def restart(self, executable: str | None, result: Deferred[int]) -> None:
        "Roll every worker."

    def rolled(self) -> None:
        "Every slot has a new worker."

    def roll_failed(self, failure: Failure) -> None:
        "A new worker did not come up."

    def shutdown(self, replaced: bool) -> None:
        "Drain every worker; C{replaced}: a new master's workers serve."

    def roll(self) -> Roll | None:
        "The roll under way, if any."

    def leaving(self) -> bool:
        "Whether the group leaves."


def _begin_roll(
    inputs: GroupInputs, group: WorkerGroup, executable: str | None, result: Deferred[int]
) -> Roll:
    core = group.process
    newest = max([w.generation for w in group.workers] + [group.generation])
    roll = Roll(result, core.reactor.seconds(), newest + 1, executable)
    core.notify_reloading()
    restart_log.began(core, kind="roll")
    group.feeder.later(lambda: group._roll_slot(roll, 0))
    return roll


def _begin_leaving(inputs: GroupInputs, group: WorkerGroup, replaced: bool) -> Event:
    group.feeder.later(lambda: group._leave(replaced))
    return group._gone


def _build() -> Callable[[WorkerGroup], GroupInputs]:
    machine = TypeMachineBuilder(GroupInputs, WorkerGroup)
    Serving = machine.state("Serving")
    Rolling = machine.state("Rolling", _begin_roll)
    Leaving = machine.state("Leaving", _begin_leaving)

    Serving.upon(GroupInputs.restart).to(Rolling).returns(None)
    Serving.upon(GroupInputs.shutdown).to(Leaving).returns(None)
    Leaving.upon(GroupInputs.shutdown).loop().returns(None)
    Leaving.upon(GroupInputs.rolled).loop().returns(None)

    @pep614(Rolling.upon(GroupInputs.restart).loop())
    def already(
        inputs: GroupInputs, group: WorkerGroup, roll: Roll, executable: str | None,
        result: Deferred[int],
    ) -> None:
        group.refuse(result, "a restart is already running")

    @pep614(Leaving.upon(GroupInputs.restart).loop())
    def leaving(
        inputs: GroupInputs, group: WorkerGroup, gone: Event, executable: str | None,
        result: Deferred[int],
    ) -> None:
        group.refuse(result, "shutting down")

    @pep614(Rolling.upon(GroupInputs.rolled).to(Serving))
    def done(inputs: GroupInputs, group: WorkerGroup, roll: Roll) -> None:
        core = group.process
        seconds = core.reactor.seconds() - roll.began
        group.generation = roll.generation
        ratios = roll.canary.ratios if roll.canary is not None else None
        core.history.record(True, None, core.environment.now(), seconds, ratios)
        restart_log.rolled(core)
        core.notifier.notify(ready=1, status=f"serving, generation {group.generation}")
        core.log.info(
            "{pid}: every worker replaced (generation {generation}) in {seconds:.3f}s",
            pid=core.pid,
            generation=group.generation,
            seconds=seconds,
        )
        group.feeder.later(lambda: roll.result.callback(core.pid))
        group.feeder.later(group.recycler.next)

    @pep614(Rolling.upon(GroupInputs.roll_failed).to(Serving))
    def stopped(inputs: GroupInputs, group: WorkerGroup, roll: Roll, failure: Failure) -> None:
        core = group.process
        reason = getattr(failure.value, "reason", None) or failure.getErrorMessage()
        ratios = roll.canary.ratios if roll.canary is not None else None
        core.history.record(False, reason, core.environment.now(), None, ratios)
        restart_log.failed(core, reason)
        if roll.canary is not None:
            core.log.error(
                "{pid}: restart rolled back, still serving: {reason}", pid=core.pid, reason=reason
            )
        else:
            core.log.error(
                "{pid}: restart failed, the roll stops here and the other workers go on "
                "serving: {reason}",
                pid=core.pid,
                reason=reason,
            )
        tail = getattr(failure.value, "stderr_tail", "")
        if tail:
            core.log.error("{pid}: new worker's stderr:\n{tail}", pid=core.pid, tail=tail)
        core.notifier.notify(ready=1, status="restart failed: " + reason)
        group.feeder.later(lambda: roll.result.errback(failure))
        group.feeder.later(group.recycler.next)

    @pep614(Rolling.upon(GroupInputs.shutdown).to(Leaving))
    def abandon(inputs: GroupInputs, group: WorkerGroup, roll: Roll, replaced: bool) -> None:
        group.feeder.later(
            lambda: roll.result.errback(RestartFailed("shut down during the roll"))
        )

    @pep614(Leaving.upon(GroupInputs.roll_failed).loop())
    def ignored(inputs: GroupInputs, group: WorkerGroup, gone: Event, failure: Failure) -> None:
        pass

    @pep614(Serving.upon(GroupInputs.roll).loop())
    @pep614(Leaving.upon(GroupInputs.roll, nodata=True).loop())
    def no_roll(inputs: GroupInputs, group: WorkerGroup) -> None:
        return None

    @pep614(Rolling.upon(GroupInputs.roll).loop())
    def the_roll(inputs: GroupInputs, group: WorkerGroup, roll: Roll) -> Roll:
        return roll

    @pep614(Serving.upon(GroupInputs.leaving).loop())
    @pep614(Rolling.upon(GroupInputs.leaving, nodata=True).loop())
    def staying(inputs: GroupInputs, group: WorkerGroup) -> bool:
        return False

    @pep614(Leaving.upon(GroupInputs.leaving).loop())
    def going(inputs: GroupInputs, group: WorkerGroup, gone: Event) -> bool:
        return True

    return machine.build()


@define(eq=False)
class Startup:
    """
    The first worker of every slot: all at once, or one slot after the other
    (C{in_turn}).  A worker that does not come up fails it (the master
    exits, and a first one reports the error; an older one takes its
    slots back), unless the group is C{alone}: then that slot is started
    again after a back-off.

    @ivar group: the group.
    @ivar in_turn: told of each slot as its worker serves, if one at a time;
        the next slot waits for the Deferred it may return (a canary's
        verdict).
    @ivar done: fires once every slot's worker serves.
    """

    group: WorkerGroup
    in_turn: Callable[[int], Deferred[None] | None] | None
    done: Deferred[None] = field(factory=Deferred)
    _remaining: set[int] = field(factory=set)
    _launched: set[int] = field(factory=set)

    def begin(self) -> None:
        self._remaining = set(range(self.group.size))
        for slot in range(1 if self.in_turn is not None else self.group.size):
            self._start(slot)

    def start_the_rest(self) -> None:
        """
        Start every slot still waiting its turn (not those waiting a retry).
        """
        if self.done.called:
            return
        for slot in range(self.group.size):
            if slot not in self._launched and not self.group.slots.waiting(slot):
                self._start(slot)

    def _start(self, slot: int) -> None:
        if slot >= self.group.size or slot in self._launched:
            return
        self._launched.add(slot)
        self.group.start(slot, self.group.generation).addCallbacks(
            self._ready, lambda failure: self._failed(slot, failure)
        )

    def _ready(self, worker: Worker) -> None:
        group = self.group
        group.slots.serve(worker.slot, worker)
        self._remaining.discard(worker.slot)
        held = self.in_turn(worker.slot) if self.in_turn is not None else None
        if held is None:
            self._next()
        else:
            held.addCallback(lambda _: self._next())

    def _next(self) -> None:
        group = self.group
        if self.in_turn is not None and not group.leaving:
            if group.alone:
                self.start_the_rest()
            else:
                waiting = [s for s in range(group.size) if s not in self._launched]
                if waiting:
                    self._start(waiting[0])
        if not self._remaining and not self.done.called:
            group._release_services()
            self.done.callback(None)

    def _failed(self, slot: int, failure: Failure) -> None:
        if self.done.called:
            return
        group = self.group
        if not group.alone and not group.predecessor_alive():
            # It died just now, and we had not heard yet.
            group.predecessor_gone()
        if not group.alone:
            self.done.errback(failure)
            return
        core = group.process
        delay = group.slots.died(slot)
        core.log.error(
            "{pid}: the worker for slot {slot} did not come up: {why}; with no older "
            "master to roll back to, trying again in {delay:g}s",
            pid=core.pid,
            slot=slot,
            why=getattr(failure.value, "reason", None) or failure.getErrorMessage(),
            delay=delay,
        )
        self._launched.discard(slot)
        group.slots.later(slot, delay, self._again)

    def _again(self, slot: int) -> None:
        self.group.slots.waited(slot)
        if not self.group.leaving:
            self._start(slot)


@define(eq=False)
class WorkerGroup:
    """
    The master's workers.

    @ivar process: the master.
    @ivar size: how many workers serve.
    @ivar sockets: the sockets held for them.
    @ivar on_restart: what a worker's restart request does (the master's
        restart).
    @ivar on_shutdown: what a worker's shutdown request does.
    @ivar report: the status the workers show: the master's (which knows
        of its own restart), or the group's alone.
    @ivar deaths: workers that died on their own (the watchdog's kills are
        counted as timeouts).
    @ivar generation: the generation of the newest workers' code.
    @ivar hold_services: whether slot 0 waits before it runs the services
        (a new master's, until the old master's stopped).
    @ivar services: which worker runs the services.
    @ivar alone: whether no older master serves any more (a new master's
        died): a worker that does not come up is started again, since
        nobody is left to roll back to.
    @ivar predecessor_alive: whether the older master (if any) lives.
    @ivar slots: which worker serves each slot, and the slots' history.
    @ivar refill: starts a slot's worker again when the one there died.
    @ivar status_push: tells the workers what the group shows.
    """

    process: ProcessCore
    size: int
    sockets: list[HeldSocket] = field(factory=list)
    on_restart: Callable[[str | None], Any] = lambda executable: None
    on_shutdown: Callable[[], Any] = lambda: None
    report: Callable[[], ProcessStatus] | None = None
    deaths: int = 0
    generation: int = 0
    hold_services: bool = False
    alone: bool = False
    predecessor_alive: Callable[[], bool] = lambda: True
    feeder: Feeder[GroupInputs] = field(factory=Feeder)
    starter: WorkerStarter = field(init=False)
    recycler: Recycler = field(init=False)
    watchdog: Watchdog = field(init=False)
    slots: SlotBook = field(init=False)
    services: ServicesBaton = field(init=False)
    _gone: Event = field(factory=Event)
    status_push: StatusPush = field(init=False)
    refill: Refill = field(init=False)
    _startup: Startup | None = None

    def __attrs_post_init__(self) -> None:
        self.generation = self.generation or self.process.generation
        self.starter = WorkerStarter(
            self.process,
            self.sockets,
            status=self._shown,
            on_message=self._message,
            on_exit=self._exited,
            on_ready=lambda worker: self.status_push.push(),
            stopped=lambda: self.leaving,
            size=self.size,
        )
        self.slots = SlotBook(lambda: self.process.reactor)
        self.services = ServicesBaton(self.process.environment.now, self.hold_services)
        self.refill = Refill(
            self.process,
            self.slots,
            lambda slot: self.start(slot, self.generation),
            lambda: self.leaving,
            self._release_services,
        )
        self.status_push = StatusPush(self.process, lambda: self.workers, self._shown)
        self.recycler = Recycler(self.process, self)
        self.watchdog = Watchdog(self.process, lambda: self.workers)
        self.feeder.inputs = _machine(self)

    @property
    def workers(self) -> list[Worker]:
        return self.starter.workers

    @property
    def rolling(self) -> bool:
        return self.feeder.inputs.roll() is not None

    @property
    def leaving(self) -> bool:
        return self.feeder.inputs.leaving()

    # -- the slots, for recycling -------------------------------------------

    def serving(self, slot: int) -> Worker | None:
        return self.slots.get(slot)

    def busy(self) -> bool:
        return self.rolling or self.leaving

    def replace(self, slot: int, worker: Worker, reason: str) -> None:
        self.slots.replace(slot, worker, reason)

    def start(self, slot: int, generation: int) -> Deferred[Worker]:
        return self.starter.start(slot, generation)

    # -- serving ------------------------------------------------------------

    def serve(
        self, in_turn: Callable[[int], Deferred[None] | None] | None = None
    ) -> Deferred[None]:
        """
        Start a worker in every slot; fires once all serve.  With
        C{in_turn}, one slot after the other, each told to C{in_turn} as
        its worker serves (a new master replacing an old one's workers one
        at a time).  A worker that does not come up fails it, unless the
        group is L{alone}: then that slot is started again after a back-off.
        """
        self.status_push.start()
        self.watchdog.start()
        startup = self._startup = Startup(self, in_turn)
        startup.begin()
        return startup.done

    def predecessor_gone(self) -> None:
        """
        The older master died before our workers all served: nobody is left
        to roll back to, nor whose workers to replace one at a time.  Start
        every slot still waiting now, and retry a worker that fails.
        """
        self.alone = True
        if self._startup is not None:
            self._startup.start_the_rest()

    def hand_slot_over(self, slot: int) -> None:
        """
        A new master's worker serves C{slot} now: ours there may drain.
        """
        worker = self.slots.hand_over(slot)
        if worker is not None:
            worker.retire(self.process.reactor)

    def take_slots_back(self) -> None:
        """
        The new master failed: fill again the slots handed over to it.
        """
        for slot in self.slots.take_back(self.size):
            self.process.log.info(
                "{pid}: starting a worker again for slot {slot}",
                pid=self.process.pid,
                slot=slot,
            )
            self.refill.refill(slot)

    def _message(self, worker: Worker, message: Message) -> None:
        if isinstance(message, Status):
            heartbeat(worker, message, self.process.reactor.seconds())
            self.recycler.check(worker)
        elif isinstance(message, RestartRequest):
            self.on_restart(message.executable)
        elif isinstance(message, ShutdownRequest):
            self.on_shutdown()
        elif isinstance(message, Released):
            self.services.released_by(worker, self.leaving)
            if not self.leaving:
                self._release_services(exclude=worker)

    def release_services(self) -> None:
        """
        No older generation runs the services any more: slot 0 may.
        """
        self.services.hold = False
        self._release_services()

    def _release_services(self, exclude: Worker | None = None) -> None:
        """
        The services may run again: tell the serving worker of slot 0.
        """
        successor = self.slots.get(0)
        if successor is not exclude:
            self.services.pass_to(successor)

    def _shown(self) -> ProcessStatus:
        return (self.report or self.status)()

    def _exited(self, worker: Worker, reason: Failure) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        self.services.gone(worker, self.leaving)
        if self.leaving:
            if not self.workers:
                self.services.stopped.happen()
                self._gone.happen()
            return
        if worker.retiring or not worker.ready or self.slots.get(worker.slot) is not worker:
            return
        # It died on its own (or the watchdog killed it).
        if worker.killed_for is None:
            self.deaths += 1  # a kill is counted once, as what the master killed it for
        self.refill.died(worker, reason)

    # -- restarting ---------------------------------------------------------

    def restart(self, executable: str | None) -> Deferred[int]:
        result: Deferred[int] = Deferred()
        self.feeder.feed(lambda inputs: inputs.restart(executable, result))
        return result

    def refuse(self, result: Deferred[int], why: str) -> None:
        core = self.process
        core.log.warn("{pid}: restart refused: {why}", pid=core.pid, why=why)
        self.feeder.later(lambda: result.errback(RestartRefused(f"restart refused: {why}")))

    def _roll_slot(self, roll: Roll, slot: int) -> None:
        if slot >= self.size:
            self.feeder.feed(lambda inputs: inputs.rolled())
            return

        def ready(worker: Worker) -> None:
            if self.leaving:
                worker.signal("TERM")
                return
            if slot == 0 and not roll.canary and _canary_first(self, roll, worker, ready, failed):
                return
            old = self.slots.get(slot)
            self.replace(slot, worker, "roll")
            if old is not None:
                # The new worker serves: only now may the old one drain.
                old.retire(self.process.reactor)
            elif slot == 0:
                self._release_services()
            self._roll_slot(roll, slot + 1)

        def failed(failure: Failure) -> None:
            self.feeder.feed(lambda inputs: inputs.roll_failed(failure))

        self.starter.start(slot, roll.generation, roll.executable).addCallbacks(ready, failed)

    # -- leaving ------------------------------------------------------------

    def shutdown(self, replaced: bool = False) -> Deferred[None]:
        """
        Drain every worker; fires once all are gone.  C{replaced}: a new
        master's workers serve in their place (they drain as replaced).
        """
        self.feeder.feed(lambda inputs: inputs.shutdown(replaced))
        return self._gone.wait()

    def _leave(self, replaced: bool) -> None:
        self.slots.stop_waiting()
        self.status_push.stop()
        self.watchdog.stop()
        self.recycler.clear()
        self.services.leave()
        for worker in list(self.workers):
            if worker.ready and replaced:
                worker.retire(self.process.reactor)
            elif worker.ready:
                worker.retiring = True
                worker.signal("TERM")
            else:
                worker.retiring = True
                worker.process.kill()
        if not self.workers:
            self.services.stopped.happen()
            self._gone.happen()
        # Workers drain for up to drain_timeout; past that (and a margin for
        # their own abort), kill what is left.
        core = self.process
        killer = core.reactor.callLater(core.settings.drain_timeout + 5.0, self._kill_all)
        self._gone.wait().addCallback(lambda _: killer.cancel() if killer.active() else None)
        for held in self.sockets:
            held.close()
        self.sockets.clear()

    def _kill_all(self) -> None:
        for worker in list(self.workers):
            self.process.log.warn(
                "{pid}: worker {worker} did not drain in time: killing it",
                pid=self.process.pid,
                worker=worker.pid,
            )
            worker.process.kill()

    # -- reporting ----------------------------------------------------------

    def status(self) -> ProcessStatus:
        return group_status(
            self.process,
            self.generation,
            self.workers,
            self.slots.serving,
            self.slots.last_reason,
            restarting=self.rolling,
            leaving=self.leaving,
            deaths=self.deaths,
            recycles=self.recycler.recycles,
            timeouts=self.watchdog.timeouts,
            replacements=self.slots.replacements,
        )


def _canary_first(
    group: WorkerGroup,
    roll: Roll,
    worker: Worker,
    ready: Callable[[Worker], None],
    failed: Callable[[Failure], None],
) -> bool:
    """
    With canary_seconds, the roll's first new worker serves beside every
    old one for the window before any is replaced: whether it does.
    """
    if not group.process.settings.canary_seconds:
        return False
    roll.canary = RollCanary(
        group.process,
        worker,
        lambda: group.workers,
        lambda: ready(worker),
        lambda why: failed(Failure(RestartFailed(why))),
        lambda: group.leaving,
    ).open()
    return True


_machine = _build()
