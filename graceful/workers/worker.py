# -*- test-case-name: tests.unit.workers.test_worker -*-
"""
A worker: serves the sockets its master holds, reports to it, and leaves
when the master retires it, shuts the group down, or dies:

    Serving --leave(replaced?)--> Leaving(departure)
"""

from __future__ import annotations

import json
import signal
from typing import Callable, MutableMapping, Protocol

from attrs import define, evolve, field
from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall

from ..lifecycle.core import ProcessCore
from ..lifecycle.departure import Departure
from ..lifecycle.verification import start_verified
from .._feeding import Feeder
from ..handoff.messages import (
    Group,
    Message,
    Need,
    Ready,
    Released,
    RestartRequest,
    Retire,
    ShutdownRequest,
    Status,
    WorkersRequest,
)
from .._errors import WorkerCountRefused
from .._history import RestartLog
from .._status import StatusError
from .._sockets import ListenSpec
from .._status import ProcessStatus

WORKER_VARIABLE = "GRACEFUL_WORKER"
#: The group's status when a worker was started, so that it never answers
#: a status request with its own facts alone.
GROUP_VARIABLE = "GRACEFUL_GROUP"

#: How often workers report their status and the master pushes the group's.
STATUS_INTERVAL = 0.5


def worker_slot(
    environ: MutableMapping[str, str],
) -> tuple[int | None, ProcessStatus | None]:
    """
    The slot and the group status a master started this worker with.
    """
    value = environ.pop(WORKER_VARIABLE, None)
    group = environ.pop(GROUP_VARIABLE, None)
    try:
        slot = int(value) if value is not None else None
    except ValueError:
        return None, None
    if slot is None or not group:
        return slot, None
    try:
        return slot, ProcessStatus.from_json(json.loads(group))
    except ValueError:
        # The first report from the master replaces it.
        return slot, None


class WorkerInputs(Protocol):
    def leave(self, replaced: bool) -> None:
        "Stop accepting, drain, exit; C{replaced}: a successor serves."

    def departure(self) -> Departure | None:
        "The departure under way, if any."


@define(eq=False)
class WorkerCore:
    """
    @ivar role: the worker.
    @ivar feeder: runs the departure once the transition is over.
    """

    role: WorkerRole
    feeder: Feeder[WorkerInputs] = field(factory=Feeder)


def _departure(inputs: WorkerInputs, core: WorkerCore, replaced: bool) -> Departure:
    departure = Departure(core.role.process, "restart" if replaced else "shutdown", final=False)
    core.feeder.later(lambda: core.role._depart(departure))
    return departure


def _build() -> Callable[[WorkerCore], WorkerInputs]:
    machine = TypeMachineBuilder(WorkerInputs, WorkerCore)
    Serving = machine.state("Serving")
    Leaving = machine.state("Leaving", _departure)
    Serving.upon(WorkerInputs.leave).to(Leaving).returns(None)
    Leaving.upon(WorkerInputs.leave).loop().returns(None)

    @pep614(Serving.upon(WorkerInputs.departure).loop())
    def none(inputs: WorkerInputs, core: WorkerCore) -> None:
        return None

    @pep614(Leaving.upon(WorkerInputs.departure).loop())
    def leaving(inputs: WorkerInputs, core: WorkerCore, departure: Departure) -> Departure:
        return departure

    return machine.build()


_machine = _build()


class WorkerRole:
    """
    The role of a worker process.

    @ivar name: C{"worker"}.
    @ivar process: the process; its C{old_process} is the master.
    @ivar slot: our slot in the master's group.
    @ivar group_status: what the master last told of the group.
    @ivar missing: sockets our config asks for that the master did not pass.
    """

    name = "worker"

    def __init__(
        self, process: ProcessCore, slot: int, group_status: ProcessStatus | None
    ) -> None:
        self.process = process
        self.slot = slot
        self.group_status = group_status
        self.missing: list[ListenSpec] = []
        self._retired = False
        self._reports: LoopingCall | None = None
        self._core = WorkerCore(self)
        self._inputs = self._core.feeder.inputs = _machine(self._core)

    def watch_master(self) -> None:
        """
        Have the kernel send us SIGTERM if the master dies (as the master's
        own shutdown would); before the handlers are installed that ends a
        worker that serves nothing yet.
        """
        self.process.environment.arm_parent_death(signal.SIGTERM)

    # -- the role's interface ---------------------------------------------

    def start(self) -> None:
        """
        Serve the inherited sockets; if the config asks for one the master
        does not hold yet, say so and leave: the master binds it and starts
        us again.
        """
        process = self.process
        if self.missing:
            process.old_process.send(Need(list(self.missing)))
            process.environment.exit(0)
            return
        claimed = [
            listener.spec.fd_name
            for server in process.servers.values()
            for listener in server.listeners
        ] + [spec.fd_name for server in process.servers.values() for spec in server.prepared_specs()]
        for server in process.servers.values():
            if server.has_prepared():
                server.serve()
        ready = Ready(claimed=claimed, workers=process.settings.workers)
        start_verified(process).addCallback(lambda _: self._serve(ready))

    def _serve(self, ready: Ready) -> None:
        if self.draining:
            return  # told to leave while the apps started
        process = self.process
        process.start_accepting(last_holder=False)
        # A master that finds us stuck sends SIGUSR2 before SIGKILL: the
        # stacks go to a copy of fd 2 taken while that is still the pipe the
        # master reads, which logs them (report_ready makes fd 2 our own).
        process.environment.dump_stacks_on(signal.SIGUSR2)
        process.old_process.report_ready(ready, keep_open=True)
        self._reports = LoopingCall(self._report)
        self._reports.clock = process.reactor
        self._reports.start(STATUS_INTERVAL, now=True)
        released = process.old_process.listen(
            process.reactor,
            lambda accepted: None,
            on_message=self._from_master,
            on_gone=lambda released: self.master_gone(),
        )
        if self.slot == 0:
            released.addCallback(self._released)
        if self.master_is_gone():
            self.master_gone()

    def restart(self, executable: str | None) -> Deferred[int]:
        # The master restarts the whole group.
        self.process.old_process.send(RestartRequest(executable))
        return succeed(self.process.pid)

    def shutdown(self) -> Deferred[None]:
        self.process.old_process.send(ShutdownRequest())
        return succeed(None)

    def set_workers(self, count: int | None, step: int = 0, why: str = "") -> int:
        # The master keeps the count: a signal goes to it, a request is
        # passed on (and checked again there).
        if count is None:
            raise WorkerCountRefused(404, "a worker has no workers: signal the master")
        if self.restarting:
            raise WorkerCountRefused(409, "a restart is running")
        self.process.old_process.send(WorkersRequest(count))
        return count

    def leave(self) -> Deferred[None]:
        """
        This worker alone drains and exits (the master asked, the whole
        group got the signal, or the master died).
        """
        replaced = self._retired or self.restarting
        self._core.feeder.feed(lambda inputs: inputs.leave(replaced))
        return self.process.when_exited()

    def shutdown_signalled(self) -> None:
        if self.master_is_gone():
            self.master_gone()
        else:
            self.leave()

    @property
    def draining(self) -> bool:
        return self._inputs.departure() is not None

    @property
    def restarting(self) -> bool:
        return self.group_status is not None and self.group_status.restarting

    def status(self) -> ProcessStatus:
        """
        What the master last told of the group, with our own pid as
        C{worker}.
        """
        if self.group_status is not None:
            return evolve(self.group_status, worker=self.process.pid)
        return self.own_status()

    def own_status(self) -> ProcessStatus:
        departure = self._inputs.departure()
        drain = departure.progress() if departure is not None else None
        return self.process.own_status(
            self.name, departure is not None, self.restarting, drain
        )

    # -- the master -------------------------------------------------------

    def master_is_gone(self) -> bool:
        # Our parent is no longer the master that started us: it died, maybe
        # before watch_master armed the signal.
        return self.process.environment.parent_pid() != self.process.old_process.pid

    def master_gone(self) -> None:
        """
        The master died (its pipe closed, or the kernel told us): nothing
        would restart or stop us, so drain and exit rather than serve on.
        """
        if not self.draining:
            # A worker forked from a template has the template for parent:
            # the master is the one the group's status names.
            status = self.group_status
            self.process.log.warn(
                "{pid}: the master {master} is gone; draining and exiting",
                pid=self.process.pid,
                master=status.pid if status is not None else self.process.old_process.pid,
            )
            self.leave()

    def _from_master(self, message: Message) -> None:
        if isinstance(message, Retire):
            # A roll replaces this worker: drain as replaced, not as shut down.
            self._retired = True
            self.leave()
        elif isinstance(message, Group):
            self.group_status = message.status
            if message.history is not None:
                try:
                    self.process.history.log = RestartLog.from_json(message.history)
                except StatusError:
                    pass  # the next push may be readable; meanwhile the last one stays

    def _released(self, released: Released) -> None:
        if not self.draining:
            self.process.start_services(released)

    def _report(self) -> None:
        status = evolve(self.own_status(), rss_mib=round(self.process.environment.rss_mib(), 1))
        self.process.old_process.send(Status(status))

    def _depart(self, departure: Departure) -> None:
        if self._reports is not None and self._reports.running:
            self._reports.stop()
        old_process = self.process.old_process

        def services_stopped() -> None:
            if self.slot == 0:
                old_process.send(Released(self.process.environment.now()))

        departure.start(services_stopped)
        # After start: the status shows the drain under way.
        old_process.send(Status(self.own_status()))
