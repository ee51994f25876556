"""
graceful.testing's fakes have the methods of the real classes they stand
for, with the same parameters, so that they cannot drift; and they behave
as its docstring says.
"""

from __future__ import annotations

import inspect
import os
import signal
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff.environment import OSEnvironment
from graceful.handoff.pipes import NewProcess, OldProcess
from graceful.testing import (
    FakeNewProcess,
    FakeOldProcess,
    FakePort,
    FakeSpawner,
    MemoryEnvironment,
    memory_runtime,
)


def parameters(method: Any) -> list[tuple[str, Any]]:
    return [
        (p.name, p.kind)
        for p in inspect.signature(method).parameters.values()
        if p.name != "self"
    ]


class SameInterfaceTests(SynchronousTestCase):
    def check(self, fake: type, real: type, methods: list[str]) -> None:
        for name in methods:
            self.assertEqual(
                parameters(getattr(fake, name)),
                parameters(getattr(real, name)),
                f"{fake.__name__}.{name} differs from {real.__name__}.{name}",
            )

    def test_new_process(self) -> None:
        self.check(FakeNewProcess, NewProcess, ["kill", "accept", "release", "send", "abandon"])
        for attribute in ("pid", "ready", "ready_facts", "on_message", "on_exit"):
            self.assertIn(attribute, {a.name for a in FakeNewProcess.__attrs_attrs__})

    def test_old_process(self) -> None:
        self.check(FakeOldProcess, OldProcess, ["report_error", "report_ready", "send", "listen"])

    def test_environment(self) -> None:
        self.check(
            MemoryEnvironment,
            OSEnvironment,
            [
                "now",
                "monotonic",
                "on_signal",
                "dump_stacks_on",
                "release_signal",
                "ignore_signal",
                "arm_parent_death",
                "parent_pid",
                "rss_mib",
                "exit",
            ],
        )

    def test_released_signal_that_arrived_is_dropped(self) -> None:
        """
        The real release: a SIGUSR1 that arrived while blocked is reported
        and consumed, never handled; with none pending it just unblocks.
        """
        handled: list[int] = []
        previous = signal.signal(signal.SIGUSR1, lambda number, frame: handled.append(number))
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
        self.addCleanup(signal.pthread_sigmask, signal.SIG_SETMASK, before)
        os.kill(os.getpid(), signal.SIGUSR1)
        environment = OSEnvironment()
        self.assertTrue(environment.release_signal(signal.SIGUSR1))
        self.assertNotIn(signal.SIGUSR1, signal.pthread_sigmask(signal.SIG_BLOCK, []))
        self.assertFalse(environment.release_signal(signal.SIGUSR1))
        self.assertEqual(handled, [])

    def test_ignored_signal(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        OSEnvironment().ignore_signal(signal.SIGUSR1)
        self.assertIs(signal.getsignal(signal.SIGUSR1), signal.SIG_IGN)

    def test_spawner(self) -> None:
        from graceful.handoff.pipes import spawn_new_process

        fake = [name for name, _ in parameters(FakeSpawner.__call__)][:2]
        real = [name for name, _ in parameters(spawn_new_process)][:2]
        self.assertEqual(fake, real)

    def test_port(self) -> None:
        from twisted.internet.interfaces import IListeningPort
        from twisted.internet.tcp import Port
        from zope.interface.verify import verifyObject

        self.assertTrue(verifyObject(IListeningPort, FakePort(3, 8100)))
        self.check(FakePort, Port, ["getHost", "fileno", "startReading", "stopReading"])


class BehaviourTests(SynchronousTestCase):
    def test_the_docstring_example(self) -> None:
        reactor = MemoryReactorClock()
        reactor.running = True
        environment = MemoryEnvironment()
        runtime = memory_runtime(reactor, environment)
        result = runtime.restart()
        environment.spawner.last.report_ready()
        self.assertEqual(self.successResultOf(result), environment.spawner.last.pid)
        self.assertTrue(reactor.hasStopped)

    def test_signals(self) -> None:
        import signal

        class Reactor(MemoryReactorClock):
            def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
                self.callLater(0, f, *args, **kwargs)

        reactor = Reactor()
        reactor.running = True
        environment = MemoryEnvironment()
        runtime = memory_runtime(reactor, environment)
        runtime.install_signal_handlers()
        environment.send_signal(signal.SIGTERM)
        self.assertFalse(runtime.draining)  # only scheduled, on the reactor
        reactor.advance(0)
        self.assertTrue(reactor.hasStopped)

    def test_process_exit(self) -> None:
        process = FakeSpawner()(None, None)
        reasons: list[Any] = []
        process.on_exit = reasons.append
        process.exit(code=1)
        self.assertEqual(reasons[0].value.exitCode, 1)
        self.assertTrue(process.exited)
