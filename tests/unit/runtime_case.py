"""
A runtime on a L{MemoryReactorClock} with a memory environment and a fake
new process: the base of the unit tests that drive a whole process.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff.pipes import RestartFailed
from graceful.process.runtime import Runtime
from graceful.http.server import Listener, Server
from graceful._sockets import ListenSpec
from graceful.testing import FakePort, FakeSpawner, MemoryEnvironment

from .http.test_site import App

from graceful.handoff import environment as _environment
from graceful.process import runtime as _runtime

PID = 123
NEW_PID = 456
OLD_PID = 77
INTERPRETER = ["/usr/bin/python3", "-X", "dev"]
ARGUMENTS = ["app.py", "--flag"]
CWD = "/srv/app"


# -- fakes ---------------------------------------------------------------------


@define
class FakeParentDeathSignal:
    """
    Stands for L{graceful.handoff.supervision.ParentDeathSignal}: records what was
    armed; the test says who our parent is.
    """

    parent: int = OLD_PID
    armed: list[int] = field(factory=list)

    def arm(self, signum: int) -> bool:
        self.armed.append(signum)
        return True

    def parent_pid(self) -> int:
        return self.parent


class StoppableService(Service):
    """
    A service whose stop the test finishes.
    """

    def __init__(self) -> None:
        self.stopping: Deferred[None] | None = None

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.stopping = Deferred()
        return self.stopping


class ThreadedMemoryReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} runs on its next turn.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.callLater(0, f, *args, **kwargs)


# -- the base ------------------------------------------------------------------


class _RuntimeCase(SynchronousTestCase):
    """
    A runtime on a memory reactor, with the spawn replaced and the log kept.
    """

    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactor()
        self.reactor.running = True
        self.environment = MemoryEnvironment(spawner=FakeSpawner(next_pid=NEW_PID))
        self.spawner = self.environment.spawner
        self.runtime = self.make_runtime()
        self.log: list[str] = []
        observer = lambda event: self.log.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def make_runtime(self, **kwargs: Any) -> Runtime:
        return Runtime(
            self.reactor,
            {"PATH": "/bin"},
            PID,
            interpreter=list(INTERPRETER),
            arguments=list(ARGUMENTS),
            cwd=CWD,
            forward_stderr=lambda data: None,
            environment=self.environment,
            **kwargs,
        )

    @property
    def signal_handlers_installed(self) -> int:
        return 1 if signal.SIGUSR1 in self.environment.handlers else 0

    def temp_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="graceful-life-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def assertLogged(self, line: str) -> None:
        self.assertIn(line, self.log)

    def assertLoggedPart(self, fragment: str) -> None:
        self.assertTrue(
            any(fragment in line for line in self.log), f"{fragment!r} not in {self.log!r}"
        )

    @property
    def exited(self) -> bool:
        return bool(self.reactor.hasStopped)

    def serve(
        self, name: str, port: int, fd: int, graceful: bool = True
    ) -> tuple[Server, App, FakePort]:
        """
        A server as if started: a draining site and a listening port.
        """
        from graceful.http.site import DrainingSite

        server = self.runtime.server(name)
        server.set_port(port)
        server.set_graceful(graceful)
        app = App()
        server.site = DrainingSite(app, server_name=name, reactor=self.reactor)
        fake = FakePort(fd, port)
        server.listeners.append(Listener(ListenSpec(name, False, port), fake))  # type: ignore[arg-type]
        return server, app, fake

    def restart_and_fail(self, reason: str = "boom") -> Deferred[int]:
        result = self.runtime.restart()
        self.spawner.last.report_failure(reason)
        self.failureResultOf(result, RestartFailed)
        return result
