"""
Unit tests of a process that outlives the one that started it: a new master
whose old master died before all its workers served takes over at once
(pidfile, stderr, every slot, retries instead of rolling back); a pidfile
on a full disk; the watchdog's kills, counted once and their stacks logged.
On a memory reactor with L{graceful.testing}'s fakes.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff.environment import OSEnvironment
from graceful.handoff.messages import Accepted, SlotServes
from graceful.workers.recycling import STACK_DUMP_WAIT
from graceful.handoff.supervision import Pidfile
from graceful.workers.group import BACKOFF_FIRST
from graceful.workers.starter import STACKS_SETTLE
from graceful.testing import FakeOldProcess, FakeSpawner, MemoryEnvironment, MemoryFiles, memory_runtime

from .test_master import MASTER, MasterCase
from .test_group import GroupTestCase, report

PIDFILE = Path("/run/app.pid")


class OldMasterDiesTests(MasterCase):
    """
    kill -9 of the old master while the new one starts its workers: the new
    master is all that is left.
    """

    def new_master(self, workers: int = 2) -> tuple[FakeOldProcess, MemoryFiles]:
        self.files = MemoryFiles({str(PIDFILE): "77\n"})
        old = FakeOldProcess()
        self.master(
            workers=workers, old_process=old, generation=2, pidfile=Pidfile(PIDFILE, self.files)
        )
        return old, self.files

    def test_pidfile_names_the_new_master_at_once(self) -> None:
        """
        Not once every worker serves: as soon as the old master's pipe
        closes.
        """
        old, files = self.new_master()
        self.assertEqual(len(self.spawned), 1)
        old.close()
        self.assertEqual(files.files[str(PIDFILE)], f"{MASTER}\n")
        self.assertIn(f"{MASTER}: previous generation 77 is gone; taking over", self.messages)

    def test_takes_its_stderr_and_starts_every_slot(self) -> None:
        """
        Its stderr is no longer the dead master's pipe; the slots that
        waited their turn start now, with no old worker to replace.
        """
        old, _ = self.new_master(workers=3)
        self.assertEqual(self.environment.spawner.calls[0]["stderr_target"], old.stderr_fd)
        old.close()
        self.assertTrue(old.stderr_taken)
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(
            [c["extra_environ"]["GRACEFUL_WORKER"] for c in self.environment.spawner.calls],
            ["0", "1", "2"],
        )
        self.assertEqual([c["stderr_target"] for c in self.environment.spawner.calls[1:]], [2, 2])
        self.workers_up()
        self.assertIn(f"{MASTER}: 3 workers serve", self.messages)
        self.assertEqual(self.environment.exits, [])

    def test_a_worker_that_fails_is_started_again(self) -> None:
        """
        Nobody is left to roll back to: the slot is retried after a
        back-off, and the master never exits.
        """
        old, _ = self.new_master()
        self.spawned[0].report_ready()
        self.assertEqual(old.sent[-1], SlotServes(0))
        old.close()
        self.spawned[1].report_failure("worker 1001 exited with status 1: boom")
        self.assertIn(
            f"{MASTER}: the worker for slot 1 did not come up: worker 1001 exited with "
            f"status 1: boom; with no older master to roll back to, trying again in "
            f"{BACKOFF_FIRST:g}s",
            self.messages,
        )
        self.assertEqual(len(self.spawned), 2)
        self.reactor.advance(BACKOFF_FIRST)
        self.assertEqual(len(self.spawned), 3)
        self.spawned[2].report_failure("worker 1002 exited with status 1: boom")
        self.reactor.advance(BACKOFF_FIRST)
        self.assertEqual(len(self.spawned), 3, "the back-off doubles")
        self.reactor.advance(BACKOFF_FIRST)
        self.assertEqual(self.environment.spawner.calls[3]["extra_environ"]["GRACEFUL_WORKER"], "1")
        self.spawned[3].report_ready()
        self.assertIn(f"{MASTER}: 2 workers serve", self.messages)
        self.assertEqual(self.environment.exits, [])
        self.assertEqual(old.reported, [], "nobody to report to")

    def test_a_failure_before_the_pipe_told(self) -> None:
        """
        The old master died, and a worker failed before the reactor read
        the end of its pipe: retried all the same, never an exit.
        """
        old, files = self.new_master()
        self.spawned[0].report_ready()
        old.die()
        self.spawned[1].report_failure("worker 1001 exited with status 1: boom")
        self.assertEqual((old.reported, self.environment.exits), ([], []))
        old.close()
        self.assertEqual(files.files[str(PIDFILE)], f"{MASTER}\n")
        self.reactor.advance(BACKOFF_FIRST)
        self.spawned[2].report_ready()
        self.assertIn(f"{MASTER}: 2 workers serve", self.messages)

    def test_while_the_old_master_lives_a_failure_still_rolls_back(self) -> None:
        old, files = self.new_master()
        self.spawned[0].report_failure("worker 1000 exited with status 1: boom")
        self.assertEqual(
            old.reported, ["error the workers did not come up: worker 1000 exited with status 1: boom"]
        )
        self.assertEqual(files.files[str(PIDFILE)], "77\n")


class FullDiskTests(SynchronousTestCase):
    """
    The pidfile on a full disk: the write fails without a trace, and the
    process it should name writes it once the disk has room.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.files = MemoryFiles({str(PIDFILE): "77\n"}, full=True)
        self.messages: list[str] = []
        observer: Any = lambda event: self.messages.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_write_leaves_no_temporary_file(self) -> None:
        pidfile = Pidfile(PIDFILE, self.files)
        self.assertRaises(OSError, pidfile.write, 456)
        self.assertEqual(self.files.files, {str(PIDFILE): "77\n"})

    def test_old_process_handed_over_on_a_full_disk(self) -> None:
        """
        The old process could not name us (and exited): we find the pidfile
        naming it once it accepts our takeover, say so, and write it once
        the disk has room.
        """
        old = FakeOldProcess()
        runtime = memory_runtime(
            self.reactor, MemoryEnvironment(), old_process=old, pidfile=Pidfile(PIDFILE, self.files)
        )
        runtime.serving_started()
        old.accept(Accepted(restarts=1))
        path = str(PIDFILE)
        self.assertIn(f"123: pidfile {path} does not name this process; writing it", self.messages)
        self.assertIn(
            f"123: cannot write pidfile {path}: No space left on device; trying again in 1s",
            self.messages,
        )
        self.assertEqual(self.files.files, {path: "77\n"})
        self.reactor.advance(1)
        self.assertIn(
            f"123: cannot write pidfile {path}: No space left on device; trying again in 2s",
            self.messages,
        )
        self.files.full = False
        self.reactor.advance(2)
        self.assertEqual(self.files.files, {path: "123\n"})
        self.assertIn(f"123: pidfile {path} names 123 now", self.messages)
        self.reactor.advance(60)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_handing_over_stops_the_retries(self) -> None:
        """
        A newer process named meanwhile: our retry must not take it back.
        """
        environment = MemoryEnvironment(spawner=FakeSpawner(next_pid=456))
        runtime = memory_runtime(self.reactor, environment, pidfile=Pidfile(PIDFILE, self.files))
        runtime.serving_started()
        self.files.full = False
        runtime.restart()
        environment.spawner.last.report_ready()
        self.reactor.advance(100)
        self.assertEqual(self.files.files[str(PIDFILE)], "456\n")


class WatchdogKillTests(GroupTestCase):
    def test_a_retiring_worker_is_not_killed(self) -> None:
        """
        A worker told to drain stops reporting: the watchdog leaves it to
        its drain, however long that takes.
        """
        self.core.settings.worker_timeout = 3
        group = self.group()
        old0, old1 = self.spawned
        group.restart(None).addErrback(lambda f: None)  # left rolling: the cleanup's shutdown fails it
        self.spawned[2].report_ready()
        self.assertTrue(group.serving(0) is not None and group.serving(0).pid == self.spawned[2].pid)
        for _ in range(20):
            self.reactor.advance(0.5)
            report(old1)
            report(self.spawned[2])
        self.assertNotIn(signal.SIGUSR2, old0.signals)
        self.assertNotIn(signal.SIGKILL, old0.signals)

    def test_a_kill_counts_once(self) -> None:
        """
        Killed by the watchdog: a timeout, not also a death.
        """
        self.core.settings.worker_timeout = 1
        group = self.group()
        stuck, fine = self.spawned
        for _ in range(4):
            self.reactor.advance(0.5)
            report(fine)
        self.reactor.advance(STACK_DUMP_WAIT)
        self.assertEqual(stuck.signals[-1], signal.SIGKILL)
        stuck.exit(code=None, signal=signal.SIGKILL)
        status = group.status().to_json()
        self.assertEqual((status["worker_timeouts"], status["worker_deaths"]), (1, 0))
        fine.exit(1)
        status = group.status().to_json()
        self.assertEqual((status["worker_timeouts"], status["worker_deaths"]), (1, 1))

    def test_stacks_are_logged(self) -> None:
        """
        What a ready worker writes on its pipe is faulthandler's dump: into
        the master's log as one entry; before it is ready, its stderr is
        relayed as it comes.
        """
        relayed: list[bytes] = []
        self.core.forward_stderr = relayed.append
        group = WorkerGroupFactory.one(self)
        call = self.environment.spawner.calls[0]
        call["forward_stderr"](b"importing\n")
        self.assertEqual(relayed, [b"importing\n"])
        self.spawned[0].report_ready()
        call["forward_stderr"](b'Thread 0x1 (most recent call first):\n  File "app.py"')
        call["forward_stderr"](b", line 3 in stuck\n")
        self.assertEqual(relayed, [b"importing\n"])
        self.reactor.advance(STACKS_SETTLE)
        self.assertIn(
            f"{MASTER}: worker 1000 (slot 0) stacks:\nThread 0x1 (most recent call first):\n"
            '  File "app.py", line 3 in stuck',
            self.messages,
        )
        group.shutdown()


class WorkerGroupFactory:
    @staticmethod
    def one(case: GroupTestCase) -> Any:
        from graceful.workers.group import WorkerGroup

        group = WorkerGroup(case.core, 1)
        group.serve()
        return group


class LogFileObject:
    """
    twistd's sys.stderr: a file object with no descriptor.
    """

    def write(self, data: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return -1


class StackDumpTests(SynchronousTestCase):
    """
    The real faulthandler, as under twistd: sys.stderr has no descriptor.
    """

    def test_stacks_written_under_twistd(self) -> None:
        read, write = os.pipe()
        os.set_blocking(read, False)
        self.addCleanup(os.close, read)
        saved = os.dup(2)
        self.addCleanup(os.close, saved)
        handled: list[int] = []
        previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handled.append(signum))
        self.addCleanup(signal.signal, signal.SIGUSR2, previous)
        self.patch(sys, "stderr", LogFileObject())
        os.dup2(write, 2)
        try:
            OSEnvironment().dump_stacks_on(signal.SIGUSR2)
        finally:
            os.dup2(saved, 2)
            os.close(write)
        import faulthandler

        self.addCleanup(faulthandler.unregister, signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)
        try:
            written = os.read(read, 65536)
        except BlockingIOError:
            written = b""
        self.assertIn(b"most recent call first", written)
        self.assertEqual(handled, [])
