# -*- test-case-name: tests.unit.workers.test_scaling -*-
"""
The worker count without a restart: SIGTTIN adds a worker, SIGTTOU removes
one (never below 1), as in gunicorn; the admin API's C{POST workers} and
C{graceful ctl workers N} set it.

A worker added starts in a new slot the way a dead worker's slot is
refilled; a worker removed (the highest slot) retires: it drains as it
would when replaced.  The count lasts until the next restart: the new
generation starts the count its config asks for.
"""

from __future__ import annotations

from typing import Callable, Protocol

from .._errors import WorkerCountRefused
from ..lifecycle.roles import check_count
from ..handoff.messages import Message, WorkersRequest
from .group import WorkerGroup
from .starter import Worker


class Scaled(Protocol):
    """
    A master, as its worker count sees it.
    """

    @property
    def group(self) -> WorkerGroup | None: ...

    @property
    def starting(self) -> bool: ...

    @property
    def restarting(self) -> bool: ...

    @property
    def draining(self) -> bool: ...

def set_workers(role: Scaled, count: int | None, step: int = 0, why: str = "") -> int:
    """
    Keep C{count} workers (or the current count plus C{step}); returns the
    new count.

    @raise WorkerCountRefused: (409) the workers are starting, a restart
        runs, or the group leaves; (400) a bad count.
    """
    group = role.group
    if group is None or role.starting:
        raise WorkerCountRefused(409, "the workers are still starting")
    if role.restarting:
        raise WorkerCountRefused(409, "a restart is running")
    if role.draining or group.leaving:
        raise WorkerCountRefused(409, "shutting down")
    target = check_count(group.size + step if count is None else count)
    if target != group.size:
        core = group.process
        core.log.info(
            "{pid}: workers: {old} -> {new} ({why})",
            pid=core.pid,
            old=group.size,
            new=target,
            why=why or "asked for",
        )
        resize(group, target)
    return target


def resize(group: WorkerGroup, count: int) -> None:
    """
    Start workers in the new slots, or retire those of the slots beyond
    C{count}.
    """
    old, group.size = group.size, count
    group.starter.size = count
    reactor = group.process.reactor
    for slot in range(old, count):
        group.refill.refill(slot)
    for slot in range(count, old):
        group.slots.stop_waiting(slot)
        serving = group.slots.vacate(slot)
        if serving is not None:
            serving.retire(reactor)
    for worker in list(group.workers):
        # One still starting there would take the slot back once ready.
        if worker.slot >= count and not worker.ready and not worker.retiring:
            worker.retiring = True
            worker.process.kill()


def hear_requests(role: Scaled, group: WorkerGroup) -> None:
    """
    Have C{group} hand a worker's C{workers} request (from its admin page)
    to C{role}; its other messages go where they went.
    """
    others: Callable[[Worker, Message], None] = group.starter.on_message

    def on_message(worker: Worker, message: Message) -> None:
        if not isinstance(message, WorkersRequest):
            others(worker, message)
            return
        try:
            set_workers(role, message.count, why=f"asked on worker {worker.pid}'s admin page")
        except WorkerCountRefused as e:
            group.process.log.warn(
                "{pid}: worker count change refused: {why}", pid=group.process.pid, why=str(e)
            )

    group.starter.on_message = on_message
