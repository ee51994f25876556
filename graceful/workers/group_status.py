# -*- test-case-name: tests.unit.workers.test_group -*-
"""
The status of a master: its own facts, every worker, and the servers with
their in-flight requests summed over the workers.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from attrs import evolve
from twisted.internet.task import LoopingCall

from ..handoff.messages import Group
from ..lifecycle.core import ProcessCore
from .._status import ServerStatus, ProcessStatus, WorkerStatus
from .starter import Worker
from .worker import STATUS_INTERVAL


def group_status(
    process: ProcessCore,
    generation: int,
    workers: Sequence[Worker],
    slots: Mapping[int, Worker],
    last_reason: Mapping[int, str],
    restarting: bool,
    leaving: bool,
    deaths: int,
    recycles: int,
    timeouts: int,
    replacements: Mapping[str, int],
) -> ProcessStatus:
    now = process.reactor.seconds()
    listed = tuple(
        WorkerStatus(
            pid=w.pid,
            slot=w.slot,
            generation=w.generation,
            ready=w.ready,
            draining=w.retiring,
            in_flight=w.in_flight,
            requests=w.requests,
            rss_mib=w.rss_mib,
            last_heartbeat=round(now - w.last_heartbeat, 3) if w.ready else None,
            last_replaced_reason=last_reason.get(w.slot),
            started_at=w.started_at,
        )
        for w in sorted(workers, key=lambda w: (w.slot, w.started_at))
    )
    servers: dict[str, ServerStatus] = {}
    for w in workers:
        for s in w.report.servers if w.report else ():
            entry = servers.get(s.name) or ServerStatus(name=s.name, ports=s.ports, requests=0)
            servers[s.name] = evolve(
                entry,
                # The ports as the slot's current worker has them.
                ports=s.ports if w is slots.get(w.slot) else entry.ports,
                in_flight=entry.in_flight + s.in_flight,
                requests=(entry.requests or 0) + (s.requests or 0),
                connections=_summed(entry.connections, s.connections),
                responses=_summed(entry.responses, s.responses),
                duration_counts=_added(entry.duration_counts, s.duration_counts),
                duration_sum=(entry.duration_sum or 0.0) + (s.duration_sum or 0.0),
                refused=_summed(entry.refused, s.refused),
                resets=None if s.resets is None else (entry.resets or 0) + s.resets,
            )
    own = process.own_status("master", leaving, restarting, None)
    return evolve(
        own,
        # The newest workers' code; the master's own is master_generation.
        generation=generation,
        master_generation=process.generation,
        workers=listed,
        worker_deaths=deaths,
        worker_recycles=recycles,
        worker_timeouts=timeouts,
        last_replaced_reason=dict(sorted(last_reason.items())),
        # Workers replaced so far, by why: roll, recycle, memory, timeout, died.
        worker_replacements=dict(sorted(replacements.items())),
        servers=tuple(servers.values())
        or tuple(ServerStatus(name=name, requests=0) for name in process.servers),
    )


def _summed(a: Mapping[str, int] | None, b: Mapping[str, int] | None) -> dict[str, int]:
    total = dict(a or {})
    for key, count in (b or {}).items():
        total[key] = total.get(key, 0) + count
    return total


def _added(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if not a or not b or len(a) != len(b):
        # The first worker's, or a worker too old (or too new) to count.
        return a or b
    return tuple(x + y for x, y in zip(a, b))


class StatusPush:
    """
    Every ready worker hears what the group shows (its status page shows
    the group's, not its own alone): every L{STATUS_INTERVAL}, and whenever
    a worker becomes ready.
    """

    def __init__(
        self,
        process: ProcessCore,
        workers: Callable[[], Sequence[Worker]],
        shown: Callable[[], ProcessStatus],
    ) -> None:
        self._process = process
        self._workers = workers
        self._shown = shown
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        self._loop = LoopingCall(self.push)
        self._loop.clock = self._process.reactor
        self._loop.start(STATUS_INTERVAL, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def push(self) -> None:
        try:
            status = Group(self._shown(), self._process.history.log.to_json())
        except Exception:
            # A failing report must not stop the pushes for good.
            self._process.log.failure(
                "{pid}: cannot report the group's status", pid=self._process.pid
            )
            return
        for worker in self._workers():
            if worker.ready:
                worker.process.send(status)
