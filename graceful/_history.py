# -*- test-case-name: tests.unit.test_history -*-
"""
The restart history: one record per restart, kept by the process that
serves (the master, with workers) and passed from each generation to the
next, so that C{GET <admin>/history} and C{graceful ctl history} show the
last L{HISTORY_LENGTH} restarts whichever generation answers.

A record moves as the restart does: the old process starts the new one
(C{started}), hears it is ready (C{ready}) or that it failed (C{outcome}
C{"failed"}, C{reason}); the new process, once it took over, notes when
(C{handed_over}), when the old one released the background services
(C{released}) and when it was gone (C{exited}: it exits once its drain
ends).

A leaf, like L{graceful._status}: attrs and the standard library only, so
that C{graceful ctl} reads it without Twisted.  Reading is tolerant: a key
an older node does not write takes its default; a value of the wrong shape
raises L{StatusError} naming where it is.
"""

from __future__ import annotations

from typing import Any, Self

from attrs import define, field

from ._status import StatusError, _bool, _float, _int, _list, _object, _optional, _str

#: The restarts a history keeps: the newest ones.
HISTORY_LENGTH = 50

#: What became of a restart.
OUTCOMES = ("running", "ok", "failed")


@define
class VerifyResult:
    """
    How the new generation's C{verify} requests went.

    @ivar ok: whether every path answered 2xx.
    @ivar detail: the paths asked (C{"s1 /healthz"}), or why one failed.
    """

    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Self:
        data = _object(data, where)
        return cls(
            ok=_bool(data.get("ok"), f"{where}.ok"),
            detail=_str(data.get("detail", ""), f"{where}.detail"),
        )


@define
class RestartRecord:
    """
    One restart.  Times are Unix times; L{None} until known.

    @ivar generation: the generation the restart started.
    @ivar old_pid: the process that restarted.
    @ivar new_pid: the process it started, once started.
    @ivar kind: C{"handover"} (a new process takes over) or C{"roll"} (a
        master that is PID 1 replaces its workers).
    @ivar started: when it began.
    @ivar ready: when the new process reported ready.
    @ivar handed_over: when the old process handed over.
    @ivar released: when the old process's background services stopped.
    @ivar exited: when the old process was seen gone, its drain over.
    @ivar outcome: one of L{OUTCOMES}.
    @ivar reason: why it failed.
    @ivar verify: the C{verify} requests' result, if the config had any.
    @ivar canary: with a canary window, once judged: C{old_error_ratio},
        C{new_error_ratio} and C{passed}; L{None} without one.
    """

    generation: int
    old_pid: int
    started: float
    new_pid: int | None = None
    kind: str = "handover"
    ready: float | None = None
    handed_over: float | None = None
    released: float | None = None
    exited: float | None = None
    outcome: str = "running"
    reason: str | None = None
    verify: VerifyResult | None = None
    canary: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "kind": self.kind,
            "old_pid": self.old_pid,
            "new_pid": self.new_pid,
            "started": self.started,
            "ready": self.ready,
            "handed_over": self.handed_over,
            "released": self.released,
            "exited": self.exited,
            "outcome": self.outcome,
            "reason": self.reason,
            "verify": None if self.verify is None else self.verify.to_json(),
            "canary": self.canary,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> Self:
        data = _object(data, where)
        at = f"{where}."

        def time(key: str) -> float | None:
            return _optional(_float, data.get(key), at + key)

        outcome = _str(data.get("outcome", "running"), at + "outcome")
        if outcome not in OUTCOMES:
            raise StatusError(f"{at}outcome: expected one of {', '.join(OUTCOMES)}, got {outcome!r}")
        verify = data.get("verify")
        return cls(
            generation=_int(data.get("generation"), at + "generation"),
            old_pid=_int(data.get("old_pid"), at + "old_pid"),
            started=_float(data.get("started"), at + "started"),
            new_pid=_optional(_int, data.get("new_pid"), at + "new_pid"),
            kind=_str(data.get("kind", "handover"), at + "kind"),
            ready=time("ready"),
            handed_over=time("handed_over"),
            released=time("released"),
            exited=time("exited"),
            outcome=outcome,
            reason=_optional(_str, data.get("reason"), at + "reason"),
            verify=None if verify is None else VerifyResult.from_json(verify, at + "verify"),
            canary=data.get("canary"),
        )


@define
class RestartLog:
    """
    The last L{HISTORY_LENGTH} restarts, oldest first.
    """

    records: list[RestartRecord] = field(factory=list)

    def begin(self, record: RestartRecord) -> RestartRecord:
        self.records.append(record)
        del self.records[:-HISTORY_LENGTH]
        return record

    def running(self) -> RestartRecord | None:
        """
        The restart under way, if the newest one is.
        """
        if self.records and self.records[-1].outcome == "running":
            return self.records[-1]
        return None

    def failed(self, reason: str) -> None:
        """
        The restart under way failed; a C{verify} failure says so in its
        field too (its reason starts with C{verify}, as every one does).
        """
        record = self.running()
        if record is None:
            return
        record.outcome = "failed"
        record.reason = reason
        if reason.startswith("verify "):
            record.verify = VerifyResult(False, reason)

    def of(self, new_pid: int) -> RestartRecord | None:
        """
        The newest restart that started C{new_pid}.
        """
        for record in reversed(self.records):
            if record.new_pid == new_pid:
                return record
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [record.to_json() for record in self.records]

    @classmethod
    def from_json(cls, data: Any, where: str = "history") -> Self:
        return cls(
            [
                RestartRecord.from_json(record, f"{where}[{i}]")
                for i, record in enumerate(_list(data, where))
            ][-HISTORY_LENGTH:]
        )
