# -*- test-case-name: tests.unit.lifecycle.test_canary -*-
"""
The canary restart: the new generation first serves beside the old one for
C{canary_seconds}, both count their answers, and the restart rolls back on
its own if the new one's share of 5xx answers and reset connections exceeds
the old one's by more than C{canary_max_error_ratio}.

The old process's side is L{CanaryWindow} (the hand-over machine's
C{Canary} state holds it); the new process's side is L{Candidate}, which
holds its ports after its ready until the old process says C{canary}, and
leaves as an old generation does when it hears C{rollback}.

With workers, the new generation is a new master of which one worker
serves beside the old generation (C{workers/canary.py}); once the
window passed, the old process tells it so, and it replaces the other
workers one slot at a time before it says C{ready} again.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

from attrs import define, field, frozen
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from .core import ProcessCore
from .departure import Departure
from . import restart_log
from .._status import ServerStatus
from ..handoff.messages import (
    CanaryCounts,
    CanaryPassed,
    CanaryStart,
    CountsRequest,
    Error,
    Message,
    Ready,
    Rollback,
)
from ..handoff.pipes import ChildProcess, describe_exit

T = TypeVar("T")

#: Set by the old process in the new one's environment: "1" when it wants
#: it to serve as a canary, "0" otherwise (so that a value inherited from
#: further back never holds a process's ports for nothing).
CANARY_VARIABLE = "GRACEFUL_CANARY"

#: Below this many answers from the new generation, the window says too
#: little to judge: the restart goes on, and the log says so.
MIN_REQUESTS = 20

#: Seconds the new process has to answer C{count}: a healthy one answers in
#: one reactor turn; one that does not is treated as failing.
COUNTS_TIMEOUT = 5.0


@frozen
class Counts:
    """
    What a generation answered.

    @ivar responses: responses finished.
    @ivar errors: those with a 5xx status.
    @ivar resets: connections lost with a request unanswered.
    """

    responses: int = 0
    errors: int = 0
    resets: int = 0

    @classmethod
    def of_sites(cls, sites: Iterable[Any]) -> Counts:
        responses = errors = resets = 0
        for site in sites:
            responses += getattr(site, "responses", 0)
            errors += getattr(site, "server_errors", 0)
            resets += getattr(site, "resets", 0)
        return cls(responses, errors, resets)

    @classmethod
    def of_servers(cls, servers: Iterable[ServerStatus]) -> Counts:
        """
        The counts a worker reported to its master (its status's servers).
        """
        responses = errors = resets = 0
        for server in servers:
            by_class = server.responses or {}
            responses += sum(by_class.values())
            errors += by_class.get("5xx", 0)
            resets += server.resets or 0
        return cls(responses, errors, resets)

    @classmethod
    def of_message(cls, message: CanaryCounts) -> Counts:
        return cls(message.responses, message.errors, message.resets)

    def message(self) -> CanaryCounts:
        return CanaryCounts(self.responses, self.errors, self.resets)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.responses + other.responses,
            self.errors + other.errors,
            self.resets + other.resets,
        )

    def since(self, earlier: Counts) -> Counts:
        return Counts(
            self.responses - earlier.responses,
            self.errors - earlier.errors,
            self.resets - earlier.resets,
        )

    @property
    def total(self) -> int:
        return self.responses + self.resets

    @property
    def ratio(self) -> float:
        """
        The share of bad outcomes: 5xx answers and resets, of all.
        """
        return (self.errors + self.resets) / self.total if self.total else 0.0


@frozen
class CanaryVerdict:
    """
    How the canary window went.

    @ivar old: the old generation's counts in the window.
    @ivar new: the new one's.
    @ivar passed: whether the restart goes on.
    @ivar reason: one line saying why, with both ratios.
    """

    old: Counts
    new: Counts
    passed: bool
    reason: str

    @property
    def ratios(self) -> tuple[float, float]:
        return round(self.old.ratio, 6), round(self.new.ratio, 6)


def judge(old: Counts, new: Counts, allowance: float, minimum: int = MIN_REQUESTS) -> CanaryVerdict:
    """
    Whether the new generation's error ratio stays within C{allowance} of
    the old one's.
    """
    ratios = (
        f"canary error ratio {new.ratio:.4f} ({new.errors} 5xx, {new.resets} reset, of "
        f"{new.total}) against the old generation's {old.ratio:.4f} ({old.errors} 5xx, "
        f"{old.resets} reset, of {old.total})"
    )
    if new.total < minimum:
        too_few = f"{ratios}: too few requests to judge (under {minimum})"
        return CanaryVerdict(old, new, True, too_few)
    if new.ratio > old.ratio + allowance:
        return CanaryVerdict(old, new, False, f"{ratios}: more than {allowance:g} above it")
    return CanaryVerdict(old, new, True, f"{ratios}: within {allowance:g}")


def canary_asked(process: ProcessCore) -> bool:
    """
    Whether the old generation asked this new one to serve as a canary (the
    variable is taken out either way, so that no child of ours inherits it).
    """
    asked = process.environ.pop(CANARY_VARIABLE, None) == "1"
    return asked and process.old_process.is_handoff


def rolled_back(process: ProcessCore, reason: str, depart: Callable[[], Any]) -> Any:
    """
    The old generation rolled this new one back: say so, and start and
    return C{depart()}'s departure.
    """
    process.log.warn(
        "{pid}: rolled back by the old generation ({reason}); draining",
        pid=process.pid,
        reason=reason,
    )
    departure = depart()
    departure.start()
    return departure


def counting_sites(process: ProcessCore) -> Callable[[], Counts]:
    """
    Start counting the answers of a process serving alone: the result
    gives those since.
    """
    at_start = Counts.of_sites(process.sites())
    return lambda: Counts.of_sites(process.sites()).since(at_start)


@define(eq=False)
class CanaryWindow:
    """
    The old process's side of a canary window: it tells the new process to
    accept, asks for its counts at the end, and judges.  A new master (it
    said C{started}) that passed is told so, and has replaced the other
    workers once it says C{ready} again: only then has it passed.

    @ivar process: the old process.
    @ivar new_process: the new one.
    @ivar seconds: the window's length.
    @ivar allowance: C{canary_max_error_ratio}.
    @ivar passed: called once the new generation passed.
    @ivar failed: called with the reason once it failed (or ended).
    @ivar count_old: starts counting the old generation's answers; what it
        returns gives them since (L{counting_sites} for a process serving
        alone).
    @ivar verdict: how it went, once judged.
    @ivar master: whether the new process is a master (it said C{started}).
    """

    process: ProcessCore
    new_process: ChildProcess
    seconds: float
    allowance: float
    passed: Callable[[], None]
    failed: Callable[[str], None]
    count_old: Callable[[], Callable[[], Counts]] | None = None
    verdict: CanaryVerdict | None = None
    master: bool = False
    _old_since: Callable[[], Counts] = lambda: Counts()
    _timer: IDelayedCall | None = None
    _rolling_on: bool = False
    _closed: bool = False
    _exited_already: bool = False

    def open(self) -> None:
        process = self.process
        count_old = self.count_old or (lambda: counting_sites(process))
        self._old_since = count_old()
        said = self.new_process.on_message

        def on_message(message: Message) -> None:
            self._heard(message)
            said(message)

        self.new_process.on_message = on_message
        self.new_process.on_exit = self._exited
        self.new_process.send(CanaryStart())
        self._timer = process.reactor.callLater(self.seconds, self._ask)
        process.log.info(
            "{pid}: {what} {new_pid} serves beside this one for {seconds:g}s (canary)",
            pid=process.pid,
            what="a worker of new master" if self.master else "process",
            new_pid=self.new_process.pid,
            seconds=self.seconds,
        )

    def _ask(self) -> None:
        self.new_process.send(CountsRequest())
        self._timer = self.process.reactor.callLater(COUNTS_TIMEOUT, self._silent)

    def _silent(self) -> None:
        self._timer = None
        if self._rolling_on:
            what = f"new master {self.new_process.pid} did not replace the other workers"
            self._fail(f"{what} within {self.process.settings.ready_timeout:g}s of a step")
            return
        self._fail(
            f"new process {self.new_process.pid} did not report its canary counts "
            f"within {COUNTS_TIMEOUT:g}s"
        )

    def _heard(self, message: Message) -> None:
        if self._closed or self._timer is None:
            return
        if isinstance(message, Error):
            self._fail(message.reason)  # a new master's worker died, or did not come up
            return
        if self._rolling_on:
            self._heard_rolling_on(message)
            return
        if not isinstance(message, CanaryCounts):
            return
        new = Counts.of_message(message)
        verdict = self.verdict = judge(self._old_since(), new, self.allowance)
        restart_log.canary(self.process, verdict.ratios, verdict.passed)
        if not verdict.passed:
            self._fail(verdict.reason)
            return
        process = self.process
        process.log.info("{pid}: canary passed: {reason}", pid=process.pid, reason=verdict.reason)
        if not self.master:
            self.close()
            self.passed()
            return
        # The new master replaces the other workers now, each step within
        # ready_timeout (as when it started without a canary).
        self._rolling_on = True
        self._timer.cancel()
        self._timer = process.reactor.callLater(process.settings.ready_timeout, self._silent)
        process.log.info(
            "{pid}: new master {new_pid} replaces the other workers",
            pid=process.pid,
            new_pid=self.new_process.pid,
        )
        self.new_process.send(CanaryPassed())

    def _heard_rolling_on(self, message: Message) -> None:
        if isinstance(message, Ready):
            self.close()
            self.passed()
        elif self._timer is not None and self._timer.active():
            self._timer.reset(self.process.settings.ready_timeout)

    def _exited(self, reason: Failure) -> None:
        self._exited_already = True
        when = "after its canary passed" if self._rolling_on else "during the canary window"
        self._fail(f"new process {self.new_process.pid} {describe_exit(reason)} {when}")

    def _fail(self, reason: str) -> None:
        if self._closed:
            return
        self.close()
        self.failed(reason)

    def close(self) -> None:
        """
        The window is over, judged or not: hear no more of it.
        """
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def roll_back(self, reason: str, gone: Callable[[], None] = lambda: None) -> None:
        """
        Tell the new process to drain and exit; C{gone} runs once it has
        (at once if it already had).
        """
        self.close()
        if self._exited_already:
            gone()
            return
        self.new_process.on_exit = lambda reason: gone()
        self.new_process.send(Rollback(reason))

    @property
    def ratios(self) -> tuple[float, float] | None:
        return self.verdict.ratios if self.verdict is not None else None


@define(eq=False)
class Candidate:
    """
    The new process's side: it holds its ports after its ready until the old
    process says C{canary} (or hands over, or dies), answers C{count} with
    its counts, and on C{rollback} leaves as an old generation does.

    @ivar process: this process.
    @ivar accepting: whether it accepts yet.
    @ivar departure: its departure, once rolled back.
    @ivar leaving: whether the process leaves already (shut down on its own).
    """

    process: ProcessCore
    leaving: Callable[[], bool] = lambda: False
    accepting: bool = False
    departure: Departure | None = None
    _held: list[Any] = field(factory=list)

    @classmethod
    def requested(
        cls, process: ProcessCore, leaving: Callable[[], bool] = lambda: False
    ) -> Candidate | None:
        """
        A candidate, holding its ports, if the old process asked for a
        canary; else L{None}.
        """
        if not canary_asked(process):
            return None
        candidate = cls(process, leaving)
        # The servers serve before the reactor first runs, and this comes
        # in its first turn (or after the apps' startup, while they hold
        # their ports anyway): no connection was accepted yet.
        for server in process.servers.values():
            for listener in server.listeners:
                listener.port.stopReading()  # type: ignore[attr-defined]
                candidate._held.append(listener.port)
        return candidate

    def heard(self, message: Message) -> None:
        if isinstance(message, CanaryStart):
            self.accept()
        elif isinstance(message, CountsRequest):
            self.process.old_process.send(Counts.of_sites(self.process.sites()).message())
        elif isinstance(message, Rollback):
            self._leave(message.reason)

    def accept(self) -> None:
        """
        Accept beside the old process (or alone, once it handed over or died).
        """
        if self.accepting or self.departure is not None:
            return
        self.accepting = True
        # Not the last holder: the old process accepts on them still.
        self.process.start_accepting(last_holder=False)
        held, self._held = self._held, []
        for port in held:
            port.startReading()

    def accepting_first(self, then: Callable[[T], None]) -> Callable[[T], None]:
        """
        C{then}, once this process accepts: the old process handed over, or
        died, while it held its ports.
        """

        def first(value: T) -> None:
            self.accept()
            then(value)

        return first

    def _leave(self, reason: str) -> None:
        if self.departure is not None or self.leaving():
            return
        process = self.process
        # As an old generation hands over: the other one serves on.
        self.departure = rolled_back(
            process, reason,
            lambda: Departure(process, "restart", final=False, handed_over=False),
        )
