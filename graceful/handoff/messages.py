# -*- test-case-name: tests.unit.handoff.test_messages -*-
"""
Every message on the pipes: between an old generation and the new one it
starts, and between a master and its workers.

A message is one line: its kind, a space, and a JSON object with its fields
(C{ready {"workers": 2}}).  A process of the release before this encoding
wrote C{key=value} words (C{accepted restarts=1 at=...}) and a bare reason
after C{error}; L{decode} still reads those, since the first restart into a
new release is an old process talking to a new one.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Union, get_args

from attrs import asdict, field, frozen

from .._sockets import ListenSpec
from .._status import ProcessStatus


@frozen
class Ready:
    """
    New process -> old one: it serves.  A worker adds its facts.

    @ivar claimed: the names of the sockets a worker's config uses.
    @ivar workers: the C{workers} count a worker's config asks for.
    @ivar canary: whether it holds its ports for a canary window, as asked.
    """

    kind: ClassVar[str] = "ready"
    claimed: list[str] | None = None
    workers: int | None = None
    canary: bool | None = None


@frozen
class Started:
    """
    New master -> old one: its own code and config are loaded; it starts
    its workers now (each step gets ready_timeout of its own).
    """

    kind: ClassVar[str] = "started"


@frozen
class SlotServes:
    """
    New master -> old one: a worker of ours serves this slot now; yours
    there may drain.

    @ivar slot: the slot.
    """

    kind: ClassVar[str] = "serves"
    slot: int = 0


@frozen
class Error:
    """
    New process -> old one: why it cannot serve, in one line.

    @ivar reason: that line.
    """

    kind: ClassVar[str] = "error"
    reason: str = ""


@frozen
class Accepted:
    """
    Old process -> new one: the handoff is done; the restart's facts for the
    new process's status.

    @ivar handoff_seconds: from the restart's start to the new process ready.
    @ivar at: wall-clock time of the handoff.
    @ivar restarts: restarts so far, this one included.
    @ivar failed_restarts: failed restarts so far.
    @ivar history: the restart history (L{graceful._history.RestartLog} in
        JSON), this restart last; the new process carries it on.
    """

    kind: ClassVar[str] = "accepted"
    handoff_seconds: float | None = None
    at: float | None = None
    restarts: int = 0
    failed_restarts: int = 0
    canary_old_error_ratio: float | None = None
    canary_new_error_ratio: float | None = None
    history: list[dict[str, Any]] | None = None


@frozen
class Released:
    """
    The background services stopped, so the receiver may start its own: old
    process -> new one, master -> the worker of slot 0, and that worker ->
    its master as it drains.

    @ivar at: wall-clock time they stopped, if known.
    """

    kind: ClassVar[str] = "released"
    at: float | None = None


@frozen
class Need:
    """
    Worker -> master: the config asks for sockets the master does not hold;
    the worker exits, and the master binds them and starts it again.

    @ivar specs: the sockets.
    """

    kind: ClassVar[str] = "need"
    specs: list[ListenSpec] = field(factory=list)


@frozen
class Status:
    """
    Worker -> master: the worker's own status (its heartbeat).

    @ivar status: the worker's status, of itself alone.
    """

    kind: ClassVar[str] = "status"
    status: ProcessStatus


@frozen
class Group:
    """
    Master -> worker: the whole group's status, for the worker's admin page.

    @ivar status: the group's status.
    @ivar history: the master's restart history, in JSON (its
        C{GET history}, which a worker answers).  Sent with every push,
        the simplest way a new worker has it at once: at the full 50
        records about 14 KB, 1.3 ms to encode and 0.8 ms to read, per
        worker every half second.
    """

    kind: ClassVar[str] = "group"
    status: ProcessStatus
    history: list[dict[str, Any]] | None = None


@frozen
class RestartRequest:
    """
    Worker -> master: restart the group (asked on the worker's admin page).

    @ivar executable: the checked executable to run, or L{None}.
    """

    kind: ClassVar[str] = "restart"
    executable: str | None = None


@frozen
class WorkersRequest:
    """
    Worker -> master: keep this many workers (asked on the worker's admin
    page).

    @ivar count: the count.
    """

    kind: ClassVar[str] = "workers"
    count: int = 0


@frozen
class ShutdownRequest:
    """
    Worker -> master: shut the group down.
    """

    kind: ClassVar[str] = "shutdown"


@frozen
class Retire:
    """
    Master -> worker: a successor serves in your slot; drain as replaced.
    """

    kind: ClassVar[str] = "retire"


@frozen
class CanaryStart:
    """
    Old process -> new one, which holds its ports after its ready: accept
    beside me, and count your answers.
    """

    kind: ClassVar[str] = "canary"


@frozen
class CountsRequest:
    """
    Old process -> new one: the canary window is over; say your counts.
    """

    kind: ClassVar[str] = "count"


@frozen
class CanaryCounts:
    """
    New process -> old one: what it answered since it began accepting.

    @ivar responses: responses sent.
    @ivar errors: those with a 5xx status.
    @ivar resets: connections lost with a request unanswered.
    """

    kind: ClassVar[str] = "counts"
    responses: int = 0
    errors: int = 0
    resets: int = 0


@frozen
class CanaryPassed:
    """
    Old process -> new master: the canary window went well; replace my
    other workers one slot at a time, as a new master does, and say
    C{ready} once all of yours serve.
    """

    kind: ClassVar[str] = "passed"


@frozen
class Rollback:
    """
    Old process -> new one: the canary failed (or we shut down); stop
    accepting, drain and exit, as an old generation leaves.

    @ivar reason: why, for the new process's log.
    """

    kind: ClassVar[str] = "rollback"
    reason: str = ""


Message = Union[
    Ready,
    Started,
    SlotServes,
    Error,
    Accepted,
    Released,
    Need,
    Status,
    Group,
    RestartRequest,
    ShutdownRequest,
    Retire,
    CanaryStart,
    CountsRequest,
    CanaryCounts,
    CanaryPassed,
    Rollback,
    WorkersRequest,
]

# Every kind of the union above, by its name on the wire (listed once).
_KINDS: dict[str, type[Any]] = {cls.kind: cls for cls in get_args(Message)}

#: Messages that carry a whole status, in the admin API's JSON.
_STATUS_KINDS = (Status, Group)


def encode(message: Message) -> bytes:
    """
    The line for C{message}, newline included.
    """
    if isinstance(message, Need):
        fields: dict[str, Any] = {"specs": [_spec_json(spec) for spec in message.specs]}
    elif isinstance(message, (Status, Group)):
        fields = {"status": message.status.to_json()}
        if isinstance(message, Group) and message.history is not None:
            fields["history"] = message.history
    else:
        # Fields left unset are left out: a reader takes the default.
        fields = {k: v for k, v in asdict(message).items() if v is not None}
    return f"{message.kind} {json.dumps(fields, separators=(',', ':'))}\n".encode()


def decode(line: str) -> Message | None:
    """
    The message a line holds; L{None} for a kind this release does not know
    or fields it cannot read (a newer release may send more).
    """
    kind, _, payload = line.strip().partition(" ")
    cls = _KINDS.get(kind)
    if cls is None:
        return None
    fields = _fields(cls, payload)
    if fields is None:
        return None
    try:
        if cls is Need:
            return Need([_spec_of(raw) for raw in fields.get("specs", [])])
        if cls in _STATUS_KINDS:
            # StatusError, a ValueError, for a status of the wrong shape.
            status = ProcessStatus.from_json(fields.get("status", fields))
            history = fields.get("history")
            if cls is Group and isinstance(history, list):
                return Group(status, history)
            return cls(status)
        known = {name: value for name, value in fields.items() if name in _names(cls)}
        return cls(**known)
    except (TypeError, ValueError, KeyError):
        return None


def _names(cls: type[Any]) -> set[str]:
    return {a.name for a in cls.__attrs_attrs__}


def _fields(cls: type[Any], payload: str) -> dict[str, Any] | None:
    if not payload:
        return {}
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    # The release before: a bare reason, or key=value words.
    if cls is Error:
        return {"reason": payload}
    if cls in (Accepted, Released):
        return _legacy_words(payload)
    if cls is Need and isinstance(value, list):
        return {"specs": value}
    if cls is Ready or not _names(cls):
        # Ready is ready, whatever its facts; a message without fields
        # needs none.
        return {}
    return None


def _legacy_words(payload: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for word in payload.split():
        key, _, value = word.partition("=")
        try:
            number = float(value)
        except ValueError:
            continue
        fields[key] = int(number) if key in ("restarts", "failed_restarts") else number
    return fields


def _spec_json(spec: ListenSpec) -> dict[str, Any]:
    return {
        "server": spec.server,
        "tls": spec.tls,
        "port": spec.port,
        "host": spec.host,
        "index": spec.index,
        "path": spec.path,
    }


def _spec_of(raw: dict[str, Any]) -> ListenSpec:
    return ListenSpec(
        str(raw["server"]),
        bool(raw["tls"]),
        int(raw["port"]),
        str(raw.get("host", "")),
        int(raw.get("index", 0)),
        raw.get("path"),
    )
