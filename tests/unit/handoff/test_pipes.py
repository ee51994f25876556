"""
Unit tests for L{graceful.handoff.pipes}: the old process's L{NewProcess}
protocol fed by hand on a L{Clock}, how the new process is spawned, and the
new process's L{OldProcess} over real pipes.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import (
    ConnectionDone,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff import pipes
from graceful.handoff.messages import Accepted, Released
from graceful.handoff.pipes import (
    GENERATION_VARIABLE,
    HANDOFF_VARIABLE,
    STDERR_HOLD_BYTES,
    STDERR_TAIL_LINES,
    NewProcess,
    NoOldProcess,
    OldProcess,
    ListeningSocket,
    RestartFailed,
    spawn_new_process,
)

PID = 4242
READY_FD = 5
CONTROL_FD = 6
TIMEOUT = 15.0


@define
class FakeProcessTransport:
    """
    The parts of L{IProcessTransport} that L{NewProcess} uses.
    """

    pid: int = PID
    signals: list[str] = field(factory=list)
    written: list[tuple[int, bytes]] = field(factory=list)
    closed: list[int] = field(factory=list)
    exited: bool = False
    pipes_gone: bool = False

    def signalProcess(self, signal: str) -> None:
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(signal)

    def writeToChild(self, fd: int, data: bytes) -> None:
        if fd not in (CONTROL_FD,) or self.pipes_gone:
            raise KeyError(fd)
        self.written.append((fd, data))

    def closeChildFD(self, fd: int) -> None:
        if self.pipes_gone:
            raise KeyError(fd)
        self.closed.append(fd)


class NewProcessTests(SynchronousTestCase):
    """
    L{NewProcess}: C{ready} fires with the pid on a C{ready} line, or fails
    with a L{RestartFailed} that says why, and the process is killed.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.forwarded: list[bytes] = []
        self.transport = FakeProcessTransport()
        self.process = NewProcess(
            ready_fd=READY_FD,
            control_fd=CONTROL_FD,
            clock=self.clock,
            ready_timeout=TIMEOUT,
            forward_stderr=self.forwarded.append,
        )
        self.process.makeConnection(self.transport)

    def say(self, data: bytes) -> None:
        self.process.childDataReceived(READY_FD, data)

    def stderr(self, data: bytes) -> None:
        self.process.childDataReceived(2, data)

    def exit(self, reason: Exception) -> None:
        self.transport.exited = True
        self.process.processExited(Failure(reason))

    def failure(self) -> RestartFailed:
        error = self.failureResultOf(self.process.ready, RestartFailed).value
        assert isinstance(error, RestartFailed)
        self.assertEqual(str(error), error.reason)
        return error

    def test_ready(self) -> None:
        self.assertNoResult(self.process.ready)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.say(b"rea")
        self.assertNoResult(self.process.ready)
        self.say(b"dy\n")
        self.assertEqual(self.successResultOf(self.process.ready), PID)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.transport.signals, [])

    def test_ready_on_another_fd_ignored(self) -> None:
        self.process.childDataReceived(1, b"ready\n")
        self.stderr(b"ready\n")
        self.assertNoResult(self.process.ready)

    def test_unknown_lines_ignored(self) -> None:
        self.say(b"hello\nready\n")
        self.assertEqual(self.successResultOf(self.process.ready), PID)

    def test_error_then_exit(self) -> None:
        self.say(b"error cannot listen on :8100: Address already in use\n")
        self.assertNoResult(self.process.ready)
        self.stderr(b"graceful: error: cannot listen\n")
        self.exit(ProcessTerminated(exitCode=1))
        error = self.failure()
        self.assertEqual(
            error.reason,
            f"new process {PID} exited with status 1: "
            "cannot listen on :8100: Address already in use",
        )
        self.assertEqual(error.stderr_tail, "graceful: error: cannot listen")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exit_explained_by_stderr(self) -> None:
        self.stderr(b"Traceback (most recent call last):\n  File \"x\"\n")
        self.stderr(b"ImportError: no module named 'mypkg'\n\n")
        self.exit(ProcessTerminated(exitCode=2))
        error = self.failure()
        self.assertEqual(
            error.reason,
            f"new process {PID} exited with status 2: ImportError: no module named 'mypkg'",
        )
        self.assertIn("Traceback", error.stderr_tail)

    def test_exit_with_unfinished_stderr_line(self) -> None:
        self.stderr(b"killed by the OOM killer")
        self.exit(ProcessTerminated(exitCode=137))
        self.assertTrue(self.failure().reason.endswith(": killed by the OOM killer"))

    def test_exit_without_reason(self) -> None:
        self.exit(ProcessTerminated(exitCode=1))
        self.assertEqual(
            self.failure().reason, f"new process {PID} exited with status 1: no reason given"
        )

    def test_exit_status_zero(self) -> None:
        self.exit(ProcessDone(0))
        self.assertIn("exited with status 0", self.failure().reason)

    def test_killed_by_signal(self) -> None:
        self.exit(ProcessTerminated(signal=9))
        self.assertIn(f"new process {PID} was killed by signal 9", self.failure().reason)

    def test_ready_timeout(self) -> None:
        self.clock.advance(TIMEOUT - 0.1)
        self.assertNoResult(self.process.ready)
        self.clock.advance(0.1)
        self.assertEqual(
            self.failure().reason, f"new process {PID} was not ready within 15s"
        )
        self.assertEqual(self.transport.signals, ["KILL"])
        # The killed process's exit changes nothing, and neither does a late
        # ready line.
        self.say(b"ready\n")
        self.exit(ProcessTerminated(signal=9))
        self.assertEqual(self.transport.signals, ["KILL"])

    def test_progress_renews_the_timeout(self) -> None:
        """
        A new master telling that one more of its workers serves gets
        ready_timeout afresh for the next: each step is bounded, not the
        sum of a whole group's.
        """
        self.clock.advance(TIMEOUT - 1)
        self.say(b'serves {"slot":0}\n')
        self.clock.advance(TIMEOUT - 1)
        self.assertNoResult(self.process.ready)
        self.clock.advance(1)
        self.assertIn("was not ready within", self.failure().reason)

    def test_error_is_killed(self) -> None:
        self.process._fail("shutdown asked for")
        self.assertEqual(self.failure().reason, "shutdown asked for")
        self.assertEqual(self.transport.signals, ["KILL"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exit_after_ready(self) -> None:
        self.say(b"ready\n")
        self.exit(ProcessTerminated(exitCode=1))
        self.assertEqual(self.successResultOf(self.process.ready), PID)
        self.assertEqual(self.transport.signals, [])

    def test_kill_after_exit(self) -> None:
        self.transport.exited = True
        self.process.kill()
        self.assertEqual(self.transport.signals, [])

    def test_stderr_forwarded_once_ready(self) -> None:
        """
        A starting process's stderr is held back until it is ready, then
        forwarded, and from then on as it comes.
        """
        self.stderr(b"one\ntw")
        self.stderr(b"o\n")
        self.assertEqual(self.forwarded, [])
        self.assertEqual(self.process.stderr_tail(), "one\ntwo")
        self.say(b"ready\n")
        self.assertEqual(self.forwarded, [b"one\ntwo\n"])
        self.stderr(b"three\n")
        self.assertEqual(self.forwarded, [b"one\ntwo\n", b"three\n"])

    def test_stderr_of_a_failure_told_once(self) -> None:
        """
        A process that fails: what its tail shows is not forwarded too, the
        lines before it are; a line that only repeats the reason is left
        out of the tail the report shows.
        """
        self.stderr(b"".join(b"line %d\n" % i for i in range(20)))
        self.stderr(b"graceful: error: bad config\n")
        self.say(b"error bad config\n")
        self.exit(ProcessTerminated(exitCode=1))
        error = self.failure()
        self.assertEqual(self.forwarded, [b"".join(b"line %d\n" % i for i in range(9))])
        self.assertEqual(
            error.stderr_tail.splitlines(),
            [f"line {i}" for i in range(9, 20)] + ["graceful: error: bad config"],
        )
        self.assertEqual(
            error.tail_beyond_reason().splitlines(), [f"line {i}" for i in range(9, 20)]
        )

    def test_reason_from_the_last_line_not_repeated(self) -> None:
        self.stderr(b"Traceback (most recent call last):\nImportError: no mypkg\n")
        self.exit(ProcessTerminated(exitCode=1))
        error = self.failure()
        self.assertEqual(self.forwarded, [])
        self.assertEqual(error.tail_beyond_reason(), "Traceback (most recent call last):")
        self.assertEqual(RestartFailed("x: boom", "graceful: error: boom").tail_beyond_reason(), "")

    def test_chatty_stderr_forwarded_as_it_comes(self) -> None:
        self.stderr(b"x" * (STDERR_HOLD_BYTES + 1) + b"\n")
        self.assertEqual(len(self.forwarded), 1)
        self.stderr(b"more\n")
        self.assertEqual(self.forwarded[-1], b"more\n")
        self.exit(ProcessTerminated(exitCode=1))
        self.assertEqual(self.failure().stderr_tail, "")  # forwarded already

    def test_tail_bounded(self) -> None:
        self.stderr(b"".join(b"line %d\n" % i for i in range(100)))
        lines = self.process.stderr_tail().splitlines()
        self.assertEqual(lines, [f"line {i}" for i in range(100 - STDERR_TAIL_LINES, 100)])

    def test_long_lines_cut(self) -> None:
        self.stderr(b"x" * 10_000 + b"END\n")
        self.stderr(b"y" * 10_000)
        first, second = self.process.stderr_tail().splitlines()
        self.assertEqual(len(first), 512)
        self.assertTrue(first.endswith("END"))
        self.assertEqual(second, "y" * 4096)

    def test_accept_then_release(self) -> None:
        self.process.accept(Accepted(handoff_seconds=0.5, restarts=3))
        self.process.release(1700000000.25)
        self.assertEqual(
            self.transport.written,
            [
                (
                    CONTROL_FD,
                    b'accepted {"handoff_seconds":0.5,"restarts":3,"failed_restarts":0}\n',
                ),
                (CONTROL_FD, b'released {"at":1700000000.25}\n'),
            ],
        )
        self.assertEqual(self.transport.closed, [CONTROL_FD])

    def test_release_when_gone(self) -> None:
        self.process.control_fd = 99  # the transport no longer has it
        self.process.accept(Accepted(restarts=1))
        self.process.release(1.0)
        self.process.transport = None
        self.process.accept(Accepted(restarts=1))
        self.process.release(1.0)
        self.assertEqual(self.transport.written, [])

    def test_release_waits_for_the_pipe_to_close(self) -> None:
        released = self.process.release(1.0)
        self.assertNoResult(released)
        self.process.childConnectionLost(CONTROL_FD)
        self.assertIsNone(self.successResultOf(released))

    def test_release_after_the_new_process_died(self) -> None:
        """
        The new process died after it took over: its end of the control
        pipe is gone, and the old process must not wait for it.
        """
        exits: list[Failure] = []
        self.process.on_exit = exits.append
        self.say(b"ready\n")
        self.process.childConnectionLost(READY_FD)
        self.process.childConnectionLost(CONTROL_FD)
        self.exit(ProcessTerminated(signal=9))
        self.assertEqual(len(exits), 1)
        self.assertIsNone(self.successResultOf(self.process.release(1.0)))
        self.assertEqual(self.transport.written, [])

    def test_release_when_the_transport_lost_the_pipe(self) -> None:
        self.say(b"ready\n")
        self.transport.pipes_gone = True
        self.process.accept(Accepted(restarts=1))
        self.assertIsNone(self.successResultOf(self.process.release(1.0)))
        self.assertEqual(self.transport.written, [])


@define
class SpawningReactor:
    """
    Records C{spawnProcess} calls.
    """

    calls: list[dict[str, Any]] = field(factory=list)
    pid: int = PID

    def spawnProcess(
        self, protocol: Any, executable: str, args: list[str], **kwargs: Any
    ) -> FakeProcessTransport:
        self.calls.append(dict(protocol=protocol, executable=executable, args=args, **kwargs))
        # The mask the child would inherit.
        self.calls[-1]["blocked"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        transport = FakeProcessTransport(pid=self.pid)
        protocol.makeConnection(transport)
        return transport


class SpawnTests(SynchronousTestCase):
    """
    L{spawn_new_process}: sockets from fd 3 in systemd's layout, then the
    ready, control and stderr pipes, named in the environment.
    """

    def spawn(self, sockets: list[ListeningSocket], environ: dict[str, str]) -> dict[str, Any]:
        reactor = SpawningReactor()
        clock = Clock()
        forward: Callable[[bytes], None] = lambda data: None
        process = spawn_new_process(
            reactor,
            clock,
            command=["/usr/bin/python3", "-m", "app"],
            environ=environ,
            cwd="/srv/app/current",
            sockets=sockets,
            generation=3,
            extra_environ={"EXTRA": "1"},
            ready_timeout=9.0,
            forward_stderr=forward,
        )
        [call] = reactor.calls
        self.assertIs(call["protocol"], process)
        self.assertEqual(clock.getDelayedCalls()[0].getTime(), 9.0)
        return call

    def test_layout(self) -> None:
        environ = {"PATH": "/bin", "LISTEN_PID": "1", "LISTEN_FDS": "9", HANDOFF_VARIABLE: "old"}
        call = self.spawn(
            [ListeningSocket(11, "s1/http/8100/0"), ListeningSocket(12, "s2/https/8443/0")], environ
        )
        self.assertEqual(call["executable"], "/usr/bin/python3")
        self.assertEqual(call["args"], ["/usr/bin/python3", "-m", "app"])
        self.assertEqual(call["path"], "/srv/app/current")
        self.assertEqual(
            call["childFDs"], {0: 0, 1: 1, 2: "r", 3: 11, 4: 12, 5: "r", 6: "w", 7: 2}
        )
        protocol = call["protocol"]
        self.assertEqual((protocol.ready_fd, protocol.control_fd), (5, 6))
        self.assertEqual(
            call["env"],
            {
                "PATH": "/bin",
                "LISTEN_FDS": "2",
                "LISTEN_FDNAMES": "s1/http/8100/0:s2/https/8443/0",
                "EXTRA": "1",
                HANDOFF_VARIABLE: f"ready=5,control=6,stderr=7,parent={os.getpid()}",
                GENERATION_VARIABLE: "3",
            },
        )
        self.assertEqual(environ["LISTEN_PID"], "1")  # the caller's mapping is untouched

    def test_starts_with_sigusr1_blocked(self) -> None:
        """
        The new process inherits SIGUSR1 blocked, so that a restart signal
        sent to the whole group while it imports its code does not kill it;
        the caller's own mask is as it was.
        """
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        call = self.spawn([], {})
        self.assertIn(signal.SIGUSR1, call["blocked"])
        self.assertNotIn(signal.SIGUSR1, before)
        self.assertEqual(signal.pthread_sigmask(signal.SIG_BLOCK, []), before)

    def test_no_sockets(self) -> None:
        call = self.spawn([], {})
        self.assertEqual(call["childFDs"], {0: 0, 1: 1, 2: "r", 3: "r", 4: "w", 5: 2})
        self.assertEqual(
            call["env"][HANDOFF_VARIABLE], f"ready=3,control=4,stderr=5,parent={os.getpid()}"
        )
        self.assertEqual(call["env"]["LISTEN_FDS"], "0")


class OldProcessTests(SynchronousTestCase):
    """
    L{OldProcess}: the new process's side of the pipes.
    """

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        for fd in (read, write):
            os.set_inheritable(fd, True)
            self.addCleanup(_close_quietly, fd)
        return read, write

    def old_process(self) -> tuple[OldProcess, dict[str, int]]:
        ready_read, ready_write = self.pipe()
        control_read, control_write = self.pipe()
        stderr_read, stderr_write = self.pipe()
        environ = {
            "PATH": "/bin",
            HANDOFF_VARIABLE: f"ready={ready_write},control={control_read},stderr={stderr_write}",
        }
        old = OldProcess.from_environment(environ)
        assert old is not None
        self.assertEqual(environ, {"PATH": "/bin"})
        ends = dict(
            ready=ready_read, control=control_write, stderr=stderr_write,
            ready_write=ready_write, control_read=control_read,
        )
        return old, ends

    def test_from_environment(self) -> None:
        old, ends = self.old_process()
        self.assertTrue(old.is_handoff)
        self.assertEqual(old.pid, os.getppid())  # not said: our parent
        said = OldProcess.from_environment(
            {
                HANDOFF_VARIABLE: f"ready={ends['ready_write']},control={ends['control_read']},"
                f"stderr={ends['stderr']},parent=4321"
            }
        )
        assert said is not None
        self.assertEqual(said.pid, 4321)
        for fd in (ends["ready_write"], ends["control_read"], ends["stderr"]):
            self.assertFalse(os.get_inheritable(fd))

    def test_not_a_handoff(self) -> None:
        environ = {"PATH": "/bin"}
        self.assertIsNone(OldProcess.from_environment(environ))
        self.assertIsNone(OldProcess.from_environment({HANDOFF_VARIABLE: ""}))

    def test_report_error(self) -> None:
        old, ends = self.old_process()
        old.report_error("port 8100 is used twice\nsecond line")
        self.assertEqual(os.read(ends["ready"], 100), b'error {"reason":"port 8100 is used twice"}\n')

    def test_report_error_when_old_process_gone(self) -> None:
        old, ends = self.old_process()
        os.close(ends["ready"])
        old.report_error("nobody listens")  # EPIPE is ignored

    def test_report_ready(self) -> None:
        dup2_calls: list[tuple[int, int]] = []
        self.patch(pipes.os, "dup2", lambda fd, fd2: dup2_calls.append((fd, fd2)))
        old, ends = self.old_process()
        old.report_ready()
        self.assertEqual(dup2_calls, [(ends["stderr"], 2)])
        self.assertEqual(os.read(ends["ready"], 100), b"ready {}\n")
        self.assertEqual(os.read(ends["ready"], 100), b"")  # closed after

    def listen(self) -> tuple[Deferred[Released], list[Accepted], Any, int]:
        reactor = MemoryReactor()
        old, ends = self.old_process()
        accepted: list[Accepted] = []
        self.gone: list[bool] = []
        released = old.listen(reactor, accepted.append, on_gone=self.gone.append)
        [reader] = reactor.readers
        self.assertEqual(reader.fileno(), ends["control_read"])
        self.reactor = reactor
        return released, accepted, reader, ends["control"]

    def test_accepted_then_released(self) -> None:
        released, accepted, reader, control = self.listen()
        reader.doRead()  # nothing to read yet
        self.assertNoResult(released)
        os.write(control, b'accepted {"handoff_seconds":0.25,"restarts":2,"bad":"x"}\nrel')
        reader.doRead()
        self.assertEqual(accepted, [Accepted(handoff_seconds=0.25, restarts=2)])
        self.assertNoResult(released)
        os.write(control, b'eased {"at":1700000000.5}\n')
        reader.doRead()
        self.assertEqual(self.successResultOf(released), Released(1700000000.5))
        # The channel is read until the old process closes it (a worker's
        # master goes on talking after the release).
        self.assertEqual(self.reactor.readers, {reader})
        os.close(control)
        reader.doRead()
        self.assertEqual(self.reactor.readers, set())
        self.assertRaises(OSError, os.fstat, reader.fileno())
        self.assertEqual(self.gone, [True])

    def test_released_when_old_process_exits(self) -> None:
        released, accepted, reader, control = self.listen()
        os.close(control)
        reader.doRead()
        self.assertEqual(self.successResultOf(released), Released())
        self.assertEqual(accepted, [])
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual(self.gone, [False])

    def test_hang_up_reported_as_connection_lost(self) -> None:
        """
        The old process died: the reactor reports the hang-up with nothing
        to read through C{connectionLost}, never C{doRead}.
        """
        released, accepted, reader, control = self.listen()
        os.close(control)
        self.reactor.removeReader(reader)  # as the reactor does first
        reader.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(released), Released())
        self.assertEqual(self.gone, [False])
        self.assertRaises(OSError, os.fstat, reader.fileno())
        reader.connectionLost(Failure(ConnectionDone()))  # once is enough
        reader.doRead()
        self.assertEqual(self.gone, [False])

    def test_hang_up_after_release(self) -> None:
        released, accepted, reader, control = self.listen()
        os.write(control, b"released at=2.5\n")
        reader.doRead()
        os.close(control)
        reader.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(released), Released(2.5))
        self.assertEqual(self.gone, [True])

    def test_hang_up_on_a_real_reactor(self) -> None:
        """
        What Linux's epoll reactor does with a pipe whose writer died: one
        turn of it (no waiting: the hang-up is already there) ends the
        channel.
        """
        reactor = EPollReactor()
        self.addCleanup(_close_reactor, reactor)
        old, ends = self.old_process()
        gone: list[bool] = []
        released = old.listen(reactor, lambda facts: None, on_gone=gone.append)
        reactor.doIteration(0)
        self.assertNoResult(released)
        os.close(ends["control"])
        reactor.doIteration(0)
        self.assertEqual(gone, [False])
        self.assertEqual(self.successResultOf(released), Released())
        self.assertNotIn(ends["control_read"], [r.fileno() for r in reactor.getReaders()])

    def test_no_old_process(self) -> None:
        none = NoOldProcess()
        self.assertFalse(none.is_handoff)
        none.report_error("x")
        none.report_ready()
        self.assertEqual(self.successResultOf(none.listen(MemoryReactor(), lambda facts: None)), Released())


def _close_reactor(reactor: EPollReactor) -> None:
    reactor.removeAll()
    reactor.waker.connectionLost(None)
    reactor._poller.close()


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
