# -*- test-case-name: tests.unit.workers.test_master,tests.unit.workers.test_canary -*-
"""
A master: holds every listening socket for its workers and serves nothing
itself.  A restart hands everything to a new master, as a process serving
alone hands over to its successor: the new master (new code, new config,
new C{workers} count) starts its workers on the same sockets one slot at a
time, and as each serves, the old master's worker of that slot drains (as
replaced); once all serve, the old master hands the services over and
exits.  Should the new master or one of its workers fail, it exits, and the
old master starts workers again for the slots it had handed over.

With C{canary_seconds}, the new master's first worker serves beside every
old worker for that long before any slot is handed over, and the restart
rolls back if it answers worse (C{workers/canary.py}).

As PID 1 (a container) a master never leaves, since its exit would end the
PID namespace: it rolls its workers one slot at a time instead, and keeps
its own code.
"""

from __future__ import annotations

from typing import Any, Callable

from attrs import define, evolve
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.python.failure import Failure

from ..lifecycle.canary import Counts
from ..lifecycle.core import ProcessCore
from ..lifecycle.departure import Departure
from .._errors import RestartRefused
from ..handoff.pipes import ListeningSocket
from ..handoff.messages import Message, Released, SlotServes, Started
from ..lifecycle.handover import Departing, HandoffRole
from .._status import DrainStatus, ProcessStatus
from .canary import CanaryStartup, counting_workers
from .group import WorkerGroup
from .scaling import hear_requests, set_workers
from .starter import HeldSocket


@define(eq=False)
class GroupDeparture:
    """
    A master leaving: its workers drain (as replaced, when a new master
    serves), its services stop in the worker of slot 0, then it exits.

    @ivar group: the workers.
    @ivar reason: C{"restart"} when a new master serves, else
        C{"shutdown"}.
    @ivar final: whether no process takes the UNIX socket files over.
    @ivar handed_over: whether a successor owns the pidfile now.
    """

    group: WorkerGroup
    reason: str
    final: bool
    handed_over: bool

    def start(self, services_stopped: Callable[[], Deferred[Any] | None] = lambda: None) -> None:
        core = self.group.process
        if core.admin_port is not None:
            core.admin_port.stopListening()
        core.run_drain_callbacks()
        gone = self.group.shutdown(replaced=self.reason == "restart")
        services = self.group.services.stopped.wait()
        services.addBoth(lambda _: services_stopped())
        DeferredList([gone, services]).addBoth(
            lambda _: core.exit(self.handed_over, final=self.final)
        )

    def progress(self) -> DrainStatus | None:
        # The workers drain; each shows its own progress.
        return None


@define(eq=False)
class Workers:
    """
    What a master serves with: its workers.

    @ivar process: the master.
    @ivar group: the workers, once started.
    @ivar serving: fires once every slot has its worker (the master is
        ready then, and may restart).
    """

    process: ProcessCore
    group: WorkerGroup | None = None
    serving: Deferred[None] | None = None

    def passed_sockets(self) -> list[ListeningSocket]:
        held = self.group.sockets if self.group is not None else []
        return self.process.passed_sockets([(h.spec, h.fd) for h in held])

    def spawning(self) -> None:
        pass

    def restart_failed(self) -> None:
        if self.group is not None:
            self.group.take_slots_back()

    def successor_says(self, message: Message) -> None:
        if isinstance(message, SlotServes) and self.group is not None:
            self.group.hand_slot_over(message.slot)

    def departure(self, reason: str, final: bool, handed_over: bool) -> Departing:
        if self.group is None:  # asked to leave before it started any
            return Departure(self.process, reason, final=final, handed_over=handed_over)
        return GroupDeparture(self.group, reason, final, handed_over)

    def released(self, released: Released) -> None:
        if self.group is not None:
            self.group.release_services()

    def count_answers(self) -> Callable[[], Counts]:
        return counting_workers(lambda: self.group.workers if self.group is not None else [])


class MasterRole(HandoffRole):
    """
    The role of a master.

    @ivar name: C{"master"}.
    @ivar serve_admin_socket: serves the private admin socket (the master
        speaks for the whole group there).
    """

    name = "master"

    def __init__(
        self, process: ProcessCore, serve_admin_socket: Callable[[], None] = lambda: None
    ) -> None:
        self.workers = Workers(process)
        super().__init__(process, self.workers)
        self.serve_admin_socket = serve_admin_socket
        self._listening = False
        self._canary: CanaryStartup | None = None

    @property
    def group(self) -> WorkerGroup | None:
        return self.workers.group

    def start(self) -> None:
        process = self.process
        held = []
        for server in process.servers.values():
            for prepared in server.take_prepared():
                held.append(HeldSocket(prepared.spec, prepared.fd, prepared.owner))
                if not prepared.inherited:
                    spec = prepared.spec
                    process.log.info(
                        "{pid}: bound {scheme} {where} for the workers",
                        pid=process.pid,
                        scheme=spec.scheme,
                        where=f"unix:{spec.path}" if spec.path else f"port {spec.port}",
                    )
        # Sockets the old master passed that this config no longer uses.
        process.start_accepting(last_holder=True)
        self.serve_admin_socket()
        group = self.workers.group = WorkerGroup(
            process,
            process.settings.workers,
            held,
            on_restart=lambda executable: self.restart(executable).addErrback(lambda f: None),
            on_shutdown=self.shutdown,
            report=self.status,
            # A new master's slot 0 waits for the old master's services.
            hold_services=process.old_process.is_handoff,
        )
        if process.old_process.is_handoff:
            group.predecessor_alive = process.old_process.alive
        hear_requests(self, group)

        def ready(_: object) -> None:
            process.log.info(
                "{pid}: {count} workers serve", pid=process.pid, count=group.size
            )
            self.serve()

        def failed(failure: Failure) -> None:
            reason = f"the workers did not come up: {failure.getErrorMessage()}"
            process.log.error("{pid}: {reason}", pid=process.pid, reason=reason)
            if process.old_process.is_handoff:
                # The old master serves on; ours must not linger.
                process.old_process.report_error(reason)
                group.shutdown().addBoth(lambda _: process.environment.exit(1))
            else:
                self.shutdown()

        if process.old_process.is_handoff:
            # One slot at a time, each new worker serving before the old
            # master's worker of that slot drains.
            old = process.old_process
            canary = self._canary = CanaryStartup.requested(
                process,
                lambda: group.workers,
                lambda: GroupDeparture(group, "restart", final=False, handed_over=False),
                lambda: self.draining,
            )
            if canary is not None:
                group.refill.handled = canary.died
            # Heard from the start: should the old master die before all our
            # workers serve, we are all that is left, and take over at once.
            old.listen(
                process.reactor,
                canary.took_over(self._took_over) if canary else self._took_over,
                on_message=canary.heard if canary else lambda message: None,
                on_gone=self._old_master_gone,
            ).addCallback(self._released)
            self._listening = True
            old.send(Started())
            serving = group.serve(
                in_turn=canary.in_turn if canary else lambda slot: old.send(SlotServes(slot))
            )
        else:
            serving = group.serve()
        self.workers.serving = serving
        serving.addCallbacks(ready, failed)

    def serve(self) -> None:
        if not self._listening:
            super().serve()
            return
        # Dropped if the old master is gone: we named ourselves then.
        self.process.old_process.report_ready()

    def _old_master_gone(self, released: bool) -> None:
        if self._canary is not None:
            self._canary.proceed()
        if not released and self.group is not None:
            self.group.predecessor_gone()
        self._old_generation_gone(released)

    def _rolled_back(self) -> Departing | None:
        return self._canary.departure if self._canary is not None else None

    @property
    def starting(self) -> bool:
        """
        Whether its workers are still coming up (a new master's are part of
        the restart that made it).
        """
        serving = self.workers.serving
        return serving is None or not serving.called

    def restart(self, executable: str | None) -> Deferred[int]:
        if self.starting:
            why = "the workers are still starting"
            self.process.log.warn("{pid}: restart refused: {why}", pid=self.process.pid, why=why)
            return fail(RestartRefused(f"restart refused: {why}"))
        if self.process.pid == 1 and self.group is not None:
            return self.group.restart(executable)
        return super().restart(executable)

    @property
    def restarting(self) -> bool:
        if self.starting and self.process.old_process.is_handoff:
            return True
        return super().restarting or (self.group is not None and self.group.rolling)

    def set_workers(self, count: int | None, step: int = 0, why: str = "") -> int:
        return set_workers(self, count, step, why)

    def status(self) -> ProcessStatus:
        if self.group is None:
            return self.process.own_status(self.name, False, False, None)
        return evolve(
            self.group.status(),
            draining=self.draining or self.group.leaving,
            restarting=self.restarting,
        )
