# -*- test-case-name: tests.unit.handoff.test_pipes -*-
"""
The handoff between an old process and the new one it starts.

The old process places every listening socket from fd 3 on (systemd's
C{LISTEN_FDS} layout) and adds three pipes:

- C{ready}: the new process writes C{ready} once it serves, or C{error ...}
  with the reason it cannot;
- C{control}: the old process writes C{released} once its background services
  have stopped, so the new one may start its own;
- C{stderr}: the old process's own stderr, which the new process takes back as
  fd 2 once ready, or as soon as the old process is gone.  Until then the new
  process's stderr is a pipe to the old process, which forwards it and keeps
  its tail to explain a failed start.  A process it starts meanwhile (a new
  master's worker) gets that real stderr to take back, never the pipe, which
  dies with the old process.

Either side learns that the other died from the end of its pipes: a pipe
whose writer is gone reads as end of file, which the reactor reports through
C{connectionLost} (not C{doRead}) when no data is left.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, MutableMapping, Protocol, Sequence

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .._logging import NamedLogger
from .._event import Event
from .messages import Accepted, Error, Message, Ready, Released, decode, encode
from .._sockets import LISTEN_FDS_START, ListeningSocket, listen_environment

HANDOFF_VARIABLE = "GRACEFUL_HANDOFF"
GENERATION_VARIABLE = "GRACEFUL_GENERATION"

#: How much of a failed new process's stderr is kept to explain the failure.
STDERR_TAIL_LINES = 12

#: How much of a starting process's stderr is held back, to be forwarded
#: once it is ready or, if it fails, logged once with the reason instead of
#: twice (forwarded, then as the failure's tail).  Past this, a chatty
#: process's stderr is forwarded as it comes.
STDERR_HOLD_BYTES = 64 * 1024


class RestartFailed(Exception):
    """
    The new process did not come up; the message says why in one line.
    """

    def __init__(self, reason: str, stderr_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr_tail = stderr_tail

    def tail_beyond_reason(self) -> str:
        """
        The stderr tail without the lines that only say the reason again
        (C{graceful: error: REASON}, or the last line, which the reason
        quotes when the process gave no other).
        """
        kept = []
        for line in self.stderr_tail.splitlines():
            said = line.strip().removeprefix("graceful: error:").strip()
            if said and self.reason.endswith(said):
                continue
            kept.append(line)
        return "\n".join(kept) if any(line.strip() for line in kept) else ""


class ChildProcess(Protocol):
    """
    What graceful needs of a process it started (a new generation or a
    worker): L{NewProcess}, or L{graceful.testing.FakeNewProcess}.
    """

    pid: int
    ready: Deferred[int]
    ready_facts: Ready
    on_message: Callable[[Message], None]
    on_exit: Callable[[Failure], None]

    @property
    def transport(self) -> Any: ...

    def kill(self) -> None: ...

    def accept(self, record: Accepted) -> None: ...

    def release(self, at: float) -> Deferred[None]: ...

    def send(self, message: Message) -> None: ...

    def abandon(self, reason: str) -> None: ...


@define(eq=False)
class NewProcess(ProcessProtocol):
    """
    The old process's view of the process it started.

    C{ready} fires once the new process reports ready, or fails with
    L{RestartFailed} when it exits, reports an error or runs past the timeout;
    the process is then killed, and reaped by the reactor.
    """

    ready_fd: int
    control_fd: int
    clock: IReactorTime
    ready_timeout: float
    forward_stderr: Callable[[bytes], None]
    on_message: Callable[[Message], None] = lambda message: None
    on_exit: Callable[[Failure], None] = lambda reason: None
    ready: Deferred[int] = field(factory=Deferred)
    ready_facts: Ready = field(factory=Ready)
    _control_closed: Event = field(factory=Event)
    _tail: deque[bytes] = field(factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    _partial: bytes = b""
    _held: list[bytes] | None = field(factory=list)
    _held_bytes: int = 0
    _messages: bytes = b""
    _timeout: IDelayedCall | None = None
    _error: str | None = None
    pid: int = 0
    exited: bool = False
    _log = NamedLogger("graceful._handoff.NewProcess")

    def connectionMade(self) -> None:
        # The transport forgets the pid once the process has exited.
        self.pid = int(self.transport.pid)  # type: ignore[union-attr]
        self._timeout = self.clock.callLater(self.ready_timeout, self._too_slow)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self._keep_tail(data)
            if self._held is None:
                self._forward(data)
                return
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > STDERR_HOLD_BYTES:
                self._forward_held()
        elif childFD == self.ready_fd:
            self._messages += data
            while b"\n" in self._messages:
                line, self._messages = self._messages.split(b"\n", 1)
                self._message(line.decode("utf-8", "replace"))

    def _keep_tail(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-4096:]
        self._tail.extend(line[-512:] for line in lines if line.strip())

    def _forward_held(self, keep_tail: bool = False) -> None:
        """
        Forward the stderr held so far and what comes from now on; with
        C{keep_tail}, all but the lines the failure's report will show.
        """
        held, self._held = self._held, None
        if not held:
            return
        data = b"".join(held)
        if keep_tail:
            lines = data.split(b"\n")
            shown, cut = 0, len(lines)
            while cut > 0 and shown < STDERR_TAIL_LINES:
                cut -= 1
                shown += 1 if lines[cut].strip() else 0
            data = b"\n".join(lines[:cut]) + b"\n" if cut else b""
        if data:
            self._forward(data)

    def _forward(self, data: bytes) -> None:
        try:
            self.forward_stderr(data)
        except Exception:
            # Our own stderr is broken (a pipe to a dead old process): raised
            # here, it would close this pipe, and the child's next write to
            # its stderr would fail (an app's import).
            pass

    def stderr_tail(self) -> str:
        lines = list(self._tail) + ([self._partial] if self._partial.strip() else [])
        return "\n".join(line.decode("utf-8", "replace") for line in lines)

    def _message(self, line: str) -> None:
        message = decode(line)
        if isinstance(message, (Ready, Error)) and self.ready.called:
            # A new master that served as a canary says so a second time
            # once all its workers serve (or that they did not).
            self.on_message(message)
        elif isinstance(message, Ready):
            self.ready_facts = message
            self._succeed()
        elif isinstance(message, Error):
            self._error = message.reason
        elif message is not None:
            if not self.ready.called and self._timeout is not None:
                # Progress (a new master's worker serves): ready_timeout
                # bounds each step, not the sum of a whole group's.
                self._timeout.reset(self.ready_timeout)
            self.on_message(message)

    def _succeed(self) -> None:
        if self.ready.called:
            return
        self._cancel_timeout()
        self._forward_held()
        self.ready.callback(self.pid)

    def abandon(self, reason: str) -> None:
        """
        Give up on the new process before it is ready: kill it, and fail
        C{ready} with C{reason}.
        """
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self.ready.called:
            return
        self._cancel_timeout()
        self.kill()
        # What the failure's report will not show goes out first.
        holding = self._held is not None
        self._forward_held(keep_tail=True)
        tail = self.stderr_tail() if holding else ""
        self.ready.errback(RestartFailed(reason, tail))

    def _too_slow(self) -> None:
        self._timeout = None
        self._fail(f"new process {self.pid} was not ready within {self.ready_timeout:g}s")

    def processExited(self, reason: Failure) -> None:
        self.exited = True
        try:
            self._explain_exit(reason)
        finally:
            self.on_exit(reason)

    def _explain_exit(self, reason: Failure) -> None:
        if self.ready.called:
            return
        how = describe_exit(reason)
        why = self._error or self._last_line() or "no reason given"
        self._fail(f"new process {self.pid} {how}: {why}")

    def _last_line(self) -> str:
        tail = self.stderr_tail().strip().splitlines()
        return tail[-1] if tail else ""

    def kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except (ProcessExitedAlready, OSError, AttributeError):
            pass

    def accept(self, record: Accepted) -> None:
        """
        Tell the new process it has taken over, with the restart's facts
        (handoff seconds, restart counts) for its status page.
        """
        self.send(record)

    def release(self, at: float) -> Deferred[None]:
        """
        Tell the new process that the old one's services have stopped.  The
        result fires once the message is flushed and the pipe closed: the
        old process must not exit before that.
        """
        if self._control_closed.happened:
            return succeed(None)
        closed = self._control_closed.wait()
        self.send(Released(round(at, 6)))
        try:
            self.transport.closeChildFD(self.control_fd)  # type: ignore[union-attr]
        except (KeyError, OSError, AttributeError):
            self.childConnectionLost(self.control_fd)
        return closed

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == self.control_fd:
            self._control_closed.happen()

    def send(self, message: Message) -> None:
        """
        A message to the new process on the control pipe.
        """
        self._write_control(encode(message))

    def _write_control(self, data: bytes) -> None:
        try:
            self.transport.writeToChild(self.control_fd, data)  # type: ignore[union-attr]
        except (KeyError, OSError, AttributeError):
            pass

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None


def describe_exit(reason: Failure) -> str:
    """
    How a process ended, as a phrase: C{"exited with status 1"},
    C{"was killed by signal 9"}.
    """
    if isinstance(reason.value, ProcessDone):
        return "exited with status 0"
    status = getattr(reason.value, "exitCode", None)
    signum = getattr(reason.value, "signal", None)
    return f"was killed by signal {signum}" if signum else f"exited with status {status}"


#: Signals a new process starts with blocked, until its handlers are in
#: place: a restart signal sent to the whole group (C{kill -USR1 -PGID},
#: C{pkill}) would otherwise kill it with the default action while it
#: imports its code, and a worker count signal (C{systemctl kill -s TTIN})
#: would stop it.  A blocked signal stays blocked across exec, where an
#: ignored one would be reset by Twisted's spawnProcess.
HELD_SIGNALS = frozenset({signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU})


@contextmanager
def signals_held(signals: frozenset[int] = HELD_SIGNALS) -> Iterator[None]:
    """
    Block C{signals} in this thread for the block's duration, so that the
    processes it starts inherit them blocked; one that arrives meanwhile is
    handled once they are unblocked.
    """
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    except (AttributeError, OSError, ValueError):
        yield  # no signal masks here: start the process as it is
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def spawn_new_process(
    reactor: IReactorProcess,
    clock: IReactorTime,
    *,
    command: Sequence[str],
    environ: Mapping[str, str],
    cwd: str,
    sockets: Sequence[ListeningSocket],
    generation: int,
    extra_environ: Mapping[str, str],
    ready_timeout: float,
    forward_stderr: Callable[[bytes], None],
    stderr_target: int = 2,
) -> NewProcess:
    """
    Start the new process with every socket in C{sockets} placed from fd 3.

    @param stderr_target: the stderr it takes back once ready (our own fd 2,
        unless that is still a pipe to our own old process).
    """
    n = len(sockets)
    ready_fd = LISTEN_FDS_START + n
    control_fd = ready_fd + 1
    stderr_fd = ready_fd + 2
    child_fds: dict[int, int | str] = {0: 0, 1: 1, 2: "r"}
    for i, passed in enumerate(sockets):
        child_fds[LISTEN_FDS_START + i] = passed.fd
    child_fds[ready_fd] = "r"
    child_fds[control_fd] = "w"
    child_fds[stderr_fd] = stderr_target
    env = dict(environ)
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", HANDOFF_VARIABLE):
        env.pop(name, None)
    env.update(listen_environment([s.name for s in sockets]))
    env.update(extra_environ)
    env[HANDOFF_VARIABLE] = (
        f"ready={ready_fd},control={control_fd},stderr={stderr_fd},parent={os.getpid()}"
    )
    env[GENERATION_VARIABLE] = str(generation)
    protocol = NewProcess(
        ready_fd=ready_fd,
        control_fd=control_fd,
        clock=clock,
        ready_timeout=ready_timeout,
        forward_stderr=forward_stderr,
    )
    with signals_held():
        reactor.spawnProcess(
            protocol, command[0], list(command), env=env, path=cwd, childFDs=child_fds
        )
    return protocol


class OldProcess:
    """
    The new process's view of the one that started it: an older generation,
    or (for a worker) the master, whose channel stays open both ways.

    @ivar pid: the pid of the process that started us, as it said (so it is
        right even if that process died before we looked at our parent).
    @ivar released: whether it said that its services have stopped.
    @ivar gone: whether its channel closed.
    """

    _log = NamedLogger("graceful._handoff.OldProcess")

    def __init__(self, ready_fd: int, control_fd: int, stderr_fd: int, pid: int = 0) -> None:
        self._ready_fd = ready_fd
        self._control_fd = control_fd
        self._stderr_fd = stderr_fd
        self._upstream_open = True
        self._stderr_taken = False
        self.pid = pid or os.getppid()
        self.released = False
        self.gone = False
        for fd in (ready_fd, control_fd, stderr_fd):
            os.set_inheritable(fd, False)

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> OldProcess | None:
        value = environ.pop(HANDOFF_VARIABLE, None)
        if not value:
            return None
        fds = dict(part.split("=", 1) for part in value.split(","))
        return cls(
            int(fds["ready"]), int(fds["control"]), int(fds["stderr"]), int(fds.get("parent", 0))
        )

    @property
    def is_handoff(self) -> bool:
        return True

    def report_error(self, reason: str) -> None:
        self.send(Error(reason.splitlines()[0] if reason else ""))

    def report_ready(self, facts: Ready = Ready(), keep_open: bool = False) -> None:
        """
        Take stderr back from the old process, then say we serve; a worker
        keeps the channel open to talk to its master.
        """
        self.take_stderr()
        self.send(facts)
        if not keep_open:
            self._upstream_open = False
            os.close(self._ready_fd)
        else:
            os.set_blocking(self._ready_fd, False)

    def take_stderr(self) -> None:
        """
        Make the old process's own stderr our fd 2, in place of the pipe to
        it (once only).
        """
        if self._stderr_taken:
            return
        self._stderr_taken = True
        try:
            os.dup2(self._stderr_fd, 2)
        except OSError:
            pass  # no such descriptor: keep the pipe, whose writes never raise
        _close_quietly(self._stderr_fd)

    def stderr_target(self) -> int:
        """
        The stderr a process we start should take back once ready: the one
        we take back ourselves, while our fd 2 is still the pipe.
        """
        return 2 if self._stderr_taken else self._stderr_fd

    def alive(self) -> bool:
        """
        Whether it still lives, as far as we can tell now: its channel is
        open and it is still our parent (it may have died before the
        reactor read the end of its pipe).
        """
        return not self.gone and os.getppid() == self.pid

    def send(self, message: Message) -> None:
        """
        One line to the process that started us; dropped if it is gone or
        not reading.
        """
        if self._upstream_open:
            _write_quietly(self._ready_fd, encode(message))

    def listen(
        self,
        reactor: Any,
        accepted: Callable[[Accepted], None],
        on_message: Callable[[Message], None] = lambda message: None,
        on_gone: Callable[[bool], None] = lambda released: None,
    ) -> Deferred[Released]:
        """
        Read the old process's messages: C{accepted ...} (we took over; its
        facts go to C{accepted}), C{released at=T}, and for a worker the
        master's other messages (to C{on_message}).  The result fires once
        the old process's services have stopped (with when), or it is gone
        (with an empty L{Released}).  C{on_gone} is called once when the channel
        closes, before the result fires, with whether the old process had
        released: a close before the release means it died.
        """
        d: Deferred[Released] = Deferred()
        fd = self._control_fd
        buffer = b""
        closed = False

        def readable() -> None:
            nonlocal buffer
            if closed:
                return
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = decode(line.decode("utf-8", "replace"))
                if isinstance(message, Accepted):
                    accepted(message)
                elif isinstance(message, Released):
                    self.released = True
                    if not d.called:
                        d.callback(message)
                elif message is not None:
                    on_message(message)
            if not data:
                lost()

        def lost() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            reactor.removeReader(reader)
            _close_quietly(fd)
            self._upstream_open = False
            self.gone = True
            if not self.released:
                # It died: the pipe that is our stderr has nobody reading.
                self.take_stderr()
            on_gone(self.released)
            if not d.called:
                d.callback(Released())

        reader = _FDReader(fd, readable, lost)
        os.set_blocking(fd, False)
        reactor.addReader(reader)
        return d


class NoOldProcess:
    """
    The null object for a process that nobody handed sockets to.
    """

    pid = 0
    released = False
    gone = False

    @property
    def is_handoff(self) -> bool:
        return False

    def take_stderr(self) -> None:
        pass

    def stderr_target(self) -> int:
        return 2

    def alive(self) -> bool:
        return False

    def report_error(self, reason: str) -> None:
        pass

    def report_ready(self, facts: Ready = Ready(), keep_open: bool = False) -> None:
        pass

    def send(self, message: Message) -> None:
        pass

    def listen(
        self,
        reactor: Any,
        accepted: Callable[[Accepted], None],
        on_message: Callable[[Message], None] = lambda message: None,
        on_gone: Callable[[bool], None] = lambda released: None,
    ) -> Deferred[Released]:
        return succeed(Released())


class _FDReader:
    """
    The least an object needs for C{IReactorFDSet.addReader}.

    A pipe whose writer closed with nothing left to read is reported as a
    hang-up, through C{connectionLost} and never C{doRead}: C{lost} must
    handle it like a read of end of file.
    """

    def __init__(self, fd: int, readable: Callable[[], None], lost: Callable[[], None]) -> None:
        self._fd = fd
        self._readable = readable
        self._lost = lost

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._readable()

    def connectionLost(self, reason: Any) -> None:
        self._lost()

    def logPrefix(self) -> str:
        return "graceful-handoff"


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _write_quietly(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass
