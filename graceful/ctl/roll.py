# -*- test-case-name: tests.unit.ctl.test_roll -*-
"""
The rolling restart: one node at a time, the next only once the previous
one's generation has moved (its new process serves); the first node that
fails stops the roll.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Callable, Protocol, Sequence

from attrs import frozen

from .client import AdminClient, NodeError, NodeStatus


#: How long a node's restart may take, and how often it is asked meanwhile.
DEFAULT_RESTART_TIMEOUT = 60.0
DEFAULT_POLL_INTERVAL = 0.5


class Progress(Protocol):
    """
    What a rolling restart tells as it goes.
    """

    def begin(self, index: int, total: int, node: str, before: NodeStatus) -> None: ...

    def waiting(self, index: int, total: int, node: str, elapsed: float) -> None: ...

    def done(
        self, index: int, total: int, node: str, before: NodeStatus, after: NodeStatus, elapsed: float
    ) -> None: ...

    def failed(self, index: int, total: int, node: str, reason: str) -> None: ...

    def finish(self) -> None: ...


class Verdict(Enum):
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


def judge(before: NodeStatus, now: NodeStatus) -> tuple[Verdict, str]:
    """
    Where a node's restart stands, from its status before the restart was
    asked for and its status now.

    Done: the generation moved and the process that answers reports the
    good restart that made it (a new process that has not been told it took
    over yet, and may still fail its start, means: wait).  Failed: the same
    process still serves and records a failed restart newer than the one it
    had, or it began shutting down.  Only the status is read, so the verdict
    is the same whichever way the node is reached.
    """
    last = now.last_restart
    newer = last is not None and last != before.last_restart
    if now.generation > before.generation:
        if newer and last is not None and not last.ok:
            return Verdict.FAILED, f"generation {now.generation} reports a failed restart: {last.error}"
        if newer and last is not None and last.ok:
            return Verdict.DONE, ""
        return Verdict.WAITING, ""
    if now.pid != before.pid or now.generation < before.generation:
        return Verdict.FAILED, (
            f"the node changed under us (pid {before.pid} generation {before.generation} -> "
            f"pid {now.pid} generation {now.generation}): restarted by something else?"
        )
    newer_failure = (
        last is not None and not last.ok and last != before.last_restart
    ) or (
        now.failed_restarts is not None
        and before.failed_restarts is not None
        and now.failed_restarts > before.failed_restarts
    )
    if newer_failure and not now.restarting:
        error = last.error if last is not None and not last.ok else None
        return Verdict.FAILED, f"restart failed, the old process still serves: {error or 'no reason given'}"
    handed_over = last is not None and last.ok and last != before.last_restart
    if now.draining and not handed_over and not now.restarting:
        return Verdict.FAILED, "the node is shutting down"
    return Verdict.WAITING, ""


@frozen
class RollOptions:
    restart_timeout: float = DEFAULT_RESTART_TIMEOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    pause: float = 0.0


def restart_node(
    client: AdminClient,
    node: str,
    index: int,
    total: int,
    progress: Progress,
    options: RollOptions,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> NodeStatus:
    """
    Restart one node and wait until its new process serves.

    @return: the node's status afterwards.
    @raise NodeError: it cannot be restarted, its restart failed, or it did
        not come back within C{options.restart_timeout}.
    """
    before = client.status(node)
    if before.draining:
        raise NodeError(node, "the node is shutting down; not restarting it")
    if before.restarting:
        raise NodeError(node, "a restart is already running there")
    progress.begin(index, total, node, before)
    started = clock()
    answer = client.restart(node)
    if isinstance(answer, dict) and answer.get("coalesced"):
        # A restart of the same release ended a moment ago: the node
        # started none (see the admin's RESTART_COALESCE_SECONDS).
        progress.done(index, total, node, before, before, clock() - started)
        return before
    deadline = started + options.restart_timeout
    last_problem = ""
    for _ in range(1 + int(options.restart_timeout / max(options.poll_interval, 0.001)) + 1):
        now = clock()
        if now >= deadline:
            break
        sleep(min(options.poll_interval, max(0.0, deadline - now)))
        progress.waiting(index, total, node, clock() - started)
        try:
            current = client.status(node)
        except NodeError as e:
            if not e.transient:
                raise
            last_problem = f" (last poll: {e.reason})"  # a blip: poll again until the deadline
            continue
        verdict, reason = judge(before, current)
        if verdict is Verdict.DONE:
            progress.done(index, total, node, before, current, clock() - started)
            return current
        if verdict is Verdict.FAILED:
            raise NodeError(node, reason)
    raise NodeError(
        node,
        f"its generation did not move from {before.generation} within "
        f"{options.restart_timeout:g}s (--restart-timeout){last_problem}",
    )


def rolling_restart(
    client: AdminClient,
    nodes: Sequence[str],
    progress: Progress,
    options: RollOptions = RollOptions(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[NodeStatus]:
    """
    Restart C{nodes} one at a time, in order; stop at the first failure.

    @return: every node's status after its restart.
    @raise NodeError: the first node that failed (the later ones untouched).
    """
    results = []
    try:
        for index, node in enumerate(nodes):
            if index and options.pause > 0:
                sleep(options.pause)
            try:
                results.append(
                    restart_node(client, node, index, len(nodes), progress, options, sleep, clock)
                )
            except NodeError as e:
                progress.failed(index, len(nodes), node, e.reason)
                raise
    finally:
        progress.finish()
    return results
