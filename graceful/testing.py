# -*- test-case-name: tests.unit.test_testing -*-
"""
Fakes for testing graceful, and programs built on it, without processes,
signals or real time: a whole process runs on a
L{MemoryReactorClock<twisted.internet.testing.MemoryReactorClock>}, and
the test says when the new process is ready, when a worker reports, when
the old generation releases.

    from twisted.internet.testing import MemoryReactorClock
    from graceful.testing import MemoryEnvironment, memory_runtime

    reactor = MemoryReactorClock()
    environment = MemoryEnvironment()
    runtime = memory_runtime(reactor, environment)
    result = runtime.restart()
    environment.spawner.last.report_ready()     # the new process serves
    assert reactor.hasStopped                   # this one handed over

Each fake has the public methods of the real class it stands for, with the
same signatures (graceful's own tests check that they cannot drift).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable, MutableMapping

from attrs import define, field
from twisted.internet.interfaces import IListeningPort
from zope.interface import implementer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from .handoff.pipes import RestartFailed
from .handoff.messages import Accepted, Message, Ready, Released
from .process.runtime import Runtime

__all__ = [
    "FakeNewProcess",
    "FakeOldProcess",
    "FakePort",
    "FakeSpawner",
    "MemoryEnvironment",
    "MemoryFiles",
    "memory_runtime",
]


@define(eq=False)
class FakeNewProcess:
    """
    Stands for L{graceful.handoff.pipes.NewProcess}: a process this one started
    (a new generation, or a worker), which the test makes ready or fail.

    @ivar pid: its pid.
    @ivar ready: fires with the pid once it serves, or fails.
    @ivar ready_facts: what it said as it got ready.
    @ivar on_message: where its messages go.
    @ivar on_exit: told when it ends.
    @ivar sent: the messages sent to it.
    @ivar accepted: the handoff facts it was told.
    @ivar releases: how often it was told the services stopped.
    @ivar kills: how often it was killed.
    @ivar signals: the signals sent to it, by number.
    @ivar exited: whether it ended.
    """

    pid: int
    ready: Deferred[int] = field(factory=Deferred)
    ready_facts: Ready = field(factory=Ready)
    on_message: Callable[[Message], None] = lambda message: None
    on_exit: Callable[[Failure], None] = lambda reason: None
    sent: list[Message] = field(factory=list)
    accepted: list[Accepted] = field(factory=list)
    releases: int = 0
    kills: int = 0
    signals: list[int] = field(factory=list)
    exited: bool = False

    # What graceful does to it:

    @property
    def transport(self) -> FakeNewProcess:
        # Signals go through the transport, as with a real process.
        return self

    def signalProcess(self, signal: int | str) -> None:
        self.signals.append(signal if isinstance(signal, int) else 0)

    def kill(self) -> None:
        self.kills += 1

    def accept(self, record: Accepted) -> None:
        self.accepted.append(record)

    def release(self, at: float) -> Deferred[None]:
        self.releases += 1
        return succeed(None)

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def abandon(self, reason: str) -> None:
        if self.ready.called:
            return
        self.kill()
        self.ready.errback(RestartFailed(reason))

    # What the real process would do:

    def report_ready(self, facts: Ready | None = None) -> None:
        if facts is not None:
            self.ready_facts = facts
        self.ready.callback(self.pid)

    def report_failure(self, reason: str, stderr_tail: str = "") -> None:
        self.ready.errback(RestartFailed(reason, stderr_tail))

    def say(self, message: Message) -> None:
        """
        It sends C{message} on its pipe.
        """
        self.on_message(message)

    def exit(self, code: int | None = 0, signal: int | None = None) -> None:
        """
        It ends, with status C{code} or killed by C{signal}.
        """
        self.exited = True
        if code == 0 and signal is None:
            self.on_exit(Failure(ProcessDone(0)))
        else:
            self.on_exit(Failure(ProcessTerminated(exitCode=code, signal=signal)))


@define
class FakeSpawner:
    """
    Stands for L{graceful.handoff.pipes.spawn_new_process}: records what would
    have been started and returns a L{FakeNewProcess}.

    @ivar calls: the keyword arguments of every start.
    @ivar processes: every process started.
    @ivar error: raised by the next start, if set.
    @ivar next_pid: the pid the next process gets.
    """

    calls: list[dict[str, Any]] = field(factory=list)
    processes: list[FakeNewProcess] = field(factory=list)
    error: Exception | None = None
    next_pid: int = 456

    def __call__(self, reactor: Any, clock: Any, **kwargs: Any) -> FakeNewProcess:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        process = FakeNewProcess(self.next_pid)
        self.next_pid += 1
        self.processes.append(process)
        return process

    @property
    def last(self) -> FakeNewProcess:
        return self.processes[-1]


@define
class MemoryEnvironment:
    """
    Stands for L{graceful.handoff.environment.OSEnvironment}: nothing reaches the
    operating system.

    @ivar spawner: starts fake processes.
    @ivar wall: what C{now()} answers.
    @ivar handlers: the installed signal handlers, by number.
    @ivar stack_dumps: the signals that would dump the stacks.
    @ivar held: signals that arrived while held back (during startup), not
        yet released.
    @ivar released: the signals released, in order.
    @ivar ignored: the signals ignored, in order.
    @ivar armed: the parent-death signals asked for.
    @ivar parent: our parent's pid.
    @ivar rss: our memory, in MiB.
    @ivar exits: the exit codes asked for.
    """

    spawner: FakeSpawner = field(factory=FakeSpawner)
    wall: float = 1_000_000.0
    handlers: dict[int, Callable[[], None]] = field(factory=dict)
    stack_dumps: list[int] = field(factory=list)
    held: set[int] = field(factory=set)
    released: list[int] = field(factory=list)
    ignored: list[int] = field(factory=list)
    armed: list[int] = field(factory=list)
    parent: int = 1
    rss: float = 10.0
    exits: list[int] = field(factory=list)

    @property
    def spawn(self) -> FakeSpawner:
        return self.spawner

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall

    def on_signal(self, signum: int, handler: Callable[[], None]) -> None:
        self.handlers[signum] = handler

    def dump_stacks_on(self, signum: int) -> None:
        self.stack_dumps.append(signum)

    def ignore_signal(self, signum: int) -> None:
        self.ignored.append(signum)
        self.handlers.pop(signum, None)

    def release_signal(self, signum: int) -> bool:
        self.released.append(signum)
        if signum in self.held:
            self.held.discard(signum)
            return True
        return False

    def arm_parent_death(self, signum: int) -> bool:
        self.armed.append(signum)
        return True

    def parent_pid(self) -> int:
        return self.parent

    def rss_mib(self) -> float:
        return self.rss

    def exit(self, code: int) -> None:
        self.exits.append(code)

    def send_signal(self, signum: int) -> None:
        """
        The process gets C{signum} (nothing happens to an ignored one).
        """
        if signum in self.ignored and signum not in self.handlers:
            return
        self.handlers[signum]()


@define(eq=False)
class FakeOldProcess:
    """
    Stands for L{graceful.handoff.pipes.OldProcess}: the process that started
    this one (an older generation, or a worker's master).

    @ivar pid: its pid.
    @ivar reported: what this process reported (C{"ready"}, C{"error ..."}).
    @ivar ready_facts: the facts it reported ready with.
    @ivar sent: the messages this process sent it.
    @ivar released: fires once it says its services stopped.
    @ivar gone: whether its pipe closed.
    @ivar died: whether it died (its pipe may not have told yet).
    @ivar stderr_fd: where the old process passed its own stderr.
    @ivar stderr_taken: whether this process took its stderr back.
    """

    pid: int = 77
    reported: list[str] = field(factory=list)
    ready_facts: Ready | None = None
    sent: list[Message] = field(factory=list)
    released: Deferred[Released] = field(factory=Deferred)
    gone: bool = False
    died: bool = False
    stderr_fd: int = 9
    stderr_taken: bool = False
    _accepted: Callable[[Accepted], None] | None = None
    _on_message: Callable[[Message], None] = lambda message: None
    _on_gone: Callable[[bool], None] | None = None

    @property
    def is_handoff(self) -> bool:
        return True

    def report_error(self, reason: str) -> None:
        self.reported.append(f"error {reason}")

    def report_ready(self, facts: Ready = Ready(), keep_open: bool = False) -> None:
        self.take_stderr()
        if self.gone:
            return  # nobody reads the pipe
        self.reported.append("ready")
        self.ready_facts = facts

    def take_stderr(self) -> None:
        self.stderr_taken = True

    def stderr_target(self) -> int:
        return 2 if self.stderr_taken else self.stderr_fd

    def alive(self) -> bool:
        return not self.gone and not self.died

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def listen(
        self,
        reactor: Any,
        accepted: Callable[[Accepted], None],
        on_message: Callable[[Message], None] = lambda message: None,
        on_gone: Callable[[bool], None] = lambda released: None,
    ) -> Deferred[Released]:
        self._accepted = accepted
        self._on_message = on_message
        self._on_gone = on_gone
        return self.released

    # What the real pipes would tell, in the real order:

    def accept(self, record: Accepted) -> None:
        assert self._accepted is not None, "not listening yet"
        self._accepted(record)

    def tell(self, message: Message) -> None:
        self._on_message(message)

    def release(self, at: float = 1.0) -> None:
        self.released.callback(Released(at))

    def die(self) -> None:
        """
        It dies; this process has not read the end of its pipe yet.
        """
        self.died = True

    def close(self) -> None:
        """
        The pipe closed: after a release, or because the old process died.
        """
        assert self._on_gone is not None, "not listening yet"
        self.gone = True
        if not self.released.called:
            self.take_stderr()
        self._on_gone(self.released.called)
        if not self.released.called:
            self.released.callback(Released())


@define
class MemoryFiles:
    """
    Stands for L{graceful.handoff.supervision.OSFiles}, the pidfile's file
    operations: files in memory.  A C{full} disk creates a file, then fails
    to write it, as a real one does.

    @ivar files: the content of every file, by path.
    @ivar full: whether writes fail with C{ENOSPC}.
    """

    files: dict[str, str] = field(factory=dict)
    full: bool = False

    def write_text(self, path: Path, text: str) -> None:
        self.files[str(path)] = ""
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.files[str(path)] = text

    def read_text(self, path: Path) -> str:
        try:
            return self.files[str(path)]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))

    def replace(self, source: Path, target: Path) -> None:
        self.files[str(target)] = self.read_text(source)
        del self.files[str(source)]

    def unlink(self, path: Path) -> None:
        self.read_text(path)
        del self.files[str(path)]


@implementer(IListeningPort)
@define(eq=False)
class FakePort:
    """
    A listening port (L{IListeningPort}) that records being closed; like
    Twisted's, it no longer knows its address once closed.

    @ivar fd: its descriptor.
    @ivar number: its port number.
    @ivar listening: whether it still listens.
    @ivar reading: whether it accepts.
    """

    fd: int
    number: int
    listening: bool = True
    reading: bool = True

    def getHost(self) -> IPv4Address:
        if not self.listening:
            raise AttributeError("'Port' object has no attribute 'socket'")
        return IPv4Address("TCP", "0.0.0.0", self.number)

    def stopListening(self) -> None:
        self.listening = False

    def startListening(self) -> None:
        self.listening = True

    def fileno(self) -> int:
        return self.fd

    def startReading(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False


def memory_runtime(
    reactor: Any,
    environment: MemoryEnvironment | None = None,
    environ: MutableMapping[str, str] | None = None,
    pid: int = 123,
    **kwargs: Any,
) -> Runtime:
    """
    A graceful process on C{reactor} (a memory reactor), whose every effect
    on the operating system goes to C{environment}.
    """
    return Runtime(
        reactor,
        environ if environ is not None else {},
        pid,
        environment=environment if environment is not None else MemoryEnvironment(),
        forward_stderr=lambda data: None,
        **kwargs,
    )
