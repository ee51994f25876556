# -*- test-case-name: tests.unit.lifecycle.test_restart_log -*-
"""
Keeping the restart history (L{graceful._history}) as a restart moves.

The old process writes what it sees: the restart began, the new process is
ready, or it failed and why.  It passes the whole history on in its
C{accepted} message: a message it sends anyway, at the moment the new
process takes over, so the history it carries is complete up to then and
no other channel (an environment variable, fixed at spawn) must be kept in
step.  The new process writes the rest on it: when it took over (the old
process's time of it), what its C{verify} requests said, when the old one
released the services, and when the old one was gone.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import LoopingCall

from .core import ProcessCore
from .._history import RestartLog, RestartRecord, VerifyResult
from .._status import StatusError
from ..handoff.messages import Accepted, Released

#: How often the new process looks whether the old one is gone: it is our
#: parent until it exits (we are reparented then).  A look costs one
#: getppid(); the exit time is right to this much.
EXIT_POLL = 0.25

#: Past the old process's drain_timeout, how long to keep looking.
EXIT_POLL_MARGIN = 30.0


def began(process: ProcessCore, kind: str = "handover") -> RestartRecord:
    """
    A restart begins in C{process}: the next generation starts.
    """
    return process.history.log.begin(
        RestartRecord(
            generation=process.generation + 1,
            old_pid=process.pid,
            started=process.environment.now(),
            kind=kind,
        )
    )


def spawned(process: ProcessCore, new_pid: int) -> None:
    record = process.history.log.running()
    if record is not None and new_pid:
        record.new_pid = new_pid


def ready(process: ProcessCore, new_pid: int) -> None:
    record = process.history.log.running()
    if record is not None:
        record.new_pid = new_pid
        record.ready = process.environment.now()
        record.outcome = "ok"


def rolled(process: ProcessCore) -> None:
    """
    A master that is PID 1 replaced every worker: it hands over to its own
    new workers, and no old process leaves.
    """
    record = process.history.log.running()
    if record is not None:
        record.new_pid = process.pid
        record.ready = record.handed_over = process.environment.now()
        record.outcome = "ok"


def canary(process: ProcessCore, ratios: tuple[float, float], passed: bool) -> None:
    """
    The canary window was judged: both generations' error ratios.
    """
    record = process.history.log.running()
    if record is not None:
        record.canary = {
            "old_error_ratio": ratios[0],
            "new_error_ratio": ratios[1],
            "passed": passed,
        }


def failed(process: ProcessCore, reason: str) -> None:
    process.history.log.failed(reason)


def passed_on(process: ProcessCore) -> list[dict[str, Any]]:
    """
    The history, for the new process's C{accepted} message.
    """
    return process.history.log.to_json()


def took_over(process: ProcessCore, accepted: Accepted) -> None:
    """
    We took over: carry on the history the old process passed, and write on
    our own restart when, and what our C{verify} requests said (had one
    failed, we would not serve).
    """
    if accepted.history is not None:
        try:
            process.history.log = RestartLog.from_json(accepted.history)
        except StatusError as e:
            process.log.warn(
                "{pid}: the restart history passed on is unreadable ({error}); starting afresh",
                pid=process.pid,
                error=str(e),
            )
    record = process.history.log.of(process.pid)
    if record is None:
        return
    # The old process's time of the hand-over, as its other times are.
    record.handed_over = accepted.at if accepted.at is not None else process.environment.now()
    paths = [
        f"{server.name} {path}"
        for server in process.servers.values()
        for path in server.verify_paths
    ]
    if paths:
        record.verify = VerifyResult(True, ", ".join(paths))


def released(process: ProcessCore, released: Released) -> None:
    """
    The old process's services stopped (the message's time, as it saw it);
    from now on, watch for it to be gone.
    """
    record = process.history.log.of(process.pid)
    if record is None or released.at is None:
        return
    record.released = released.at
    watch_exit(process, record)


def old_gone(process: ProcessCore) -> None:
    """
    The old process's pipe closed before it released: it died.
    """
    record = process.history.log.of(process.pid)
    if record is not None and record.exited is None:
        record.exited = process.environment.now()


def watch_exit(process: ProcessCore, record: RestartRecord) -> LoopingCall:
    """
    Note when the old process, our parent, is gone: once it exits we are
    reparented.  Bounded by its drain_timeout and a margin.
    """
    old_pid = process.old_process.pid
    deadline = process.reactor.seconds() + process.settings.drain_timeout + EXIT_POLL_MARGIN

    def look() -> None:
        if process.environment.parent_pid() != old_pid:
            record.exited = process.environment.now()
            poll.stop()
        elif process.reactor.seconds() >= deadline:
            poll.stop()

    poll = LoopingCall(look)
    poll.clock = process.reactor
    poll.start(EXIT_POLL, now=True)
    return poll
