"""
Unit tests of L{graceful.lifecycle.verification}: a process serving alone,
or a worker, reports ready only once its servers' C{verify} paths answered
2xx through its own site; otherwise it says why and exits 1, and never
accepts on the shared ports meanwhile.
"""

from __future__ import annotations

import io
import os
import socket
import sys
from typing import Any

from attrs import define

from graceful._sockets import InheritedSockets, ListeningSocket
from graceful.process.runtime import Runtime
from graceful.testing import FakeOldProcess, FakePort

from ..http.test_verify import Health, PairingReactor
from ..runtime_case import PID, _RuntimeCase


@define(slots=False)
class WorkerPort(FakePort):
    """
    A fake port a worker can wrap to accept one connection per wakeup.
    """

    def doRead(self) -> None:
        pass


class Reactor(PairingReactor):
    """
    Pairs socketpair ends; adopted listening ports are fake ones that
    record whether they accept.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakePort] = []

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def adoptStreamPort(self, fileno: int, addressFamily: Any, factory: Any) -> FakePort:
        port = WorkerPort(fileno, 8100)
        self.ports.append(port)
        return port


class VerifiedStartTests(_RuntimeCase):
    def setUp(self) -> None:
        super().setUp()
        self.reactor = Reactor()
        self.reactor.running = True
        self.runtime = self.make_runtime()
        self.old = FakeOldProcess()
        self.runtime.old_process = self.old
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def start(self, runtime: Runtime, health: Health, paths: list[str]) -> None:
        server = runtime.server("web")
        server.mount("/", health)
        server.set_host("127.0.0.1")
        server.set_port(0)
        server.set_verify(*paths)
        runtime.start_server(server)
        self.addCleanup(server.release_prepared)

    def test_ready_once_verified(self) -> None:
        health = Health(200, b"fine\n")
        self.start(self.runtime, health, ["/healthz", "/db"])
        [port] = self.reactor.ports
        self.assertFalse(port.reading)  # the old process accepts meanwhile
        self.runtime.serving_started()
        self.assertEqual(health.paths, [b"/healthz", b"/db"])
        self.assertEqual(health.hosts, [b"web", b"web"])
        self.assertEqual(self.old.reported, ["ready"])
        self.assertTrue(port.reading)
        self.assertLogged(f"{PID}: verified /healthz (200)")
        self.assertLogged(f"{PID}: verified /db (200)")
        self.assertEqual(self.environment.exits, [])

    def test_failed_verify_reports_the_reason_and_exits(self) -> None:
        self.start(self.runtime, Health(500, b"database unreachable\nTraceback..."), ["/healthz"])
        [port] = self.reactor.ports
        self.runtime.serving_started()
        reason = "verify web /healthz answered 500: database unreachable"
        self.assertEqual(self.old.reported, [f"error {reason}"])
        self.assertEqual(self.environment.exits, [1])
        self.assertEqual(self.stderr.getvalue(), f"graceful: error: {reason}\n")
        self.assertFalse(port.reading)  # never accepted one connection

    def test_no_answer_within_ready_timeout(self) -> None:
        """
        A path that never answers fails the start before the old process's
        ready_timeout would, so that the reason names it.
        """
        self.runtime.settings.ready_timeout = 10.0
        reactor = self.reactor
        reactor.adoptStreamConnection = lambda *args: None  # type: ignore[method-assign]
        self.start(self.runtime, Health(), ["/healthz"])
        self.runtime.serving_started()
        reactor.advance(8.9)
        self.assertEqual(self.environment.exits, [])
        reactor.advance(0.1)
        self.assertEqual(
            self.old.reported, ["error verify web /healthz: no answer within ready_timeout"]
        )
        self.assertEqual(self.environment.exits, [1])

    def test_without_verify_nothing_is_held(self) -> None:
        health = Health()
        self.start(self.runtime, health, [])
        [port] = self.reactor.ports
        self.assertTrue(port.reading)
        self.runtime.serving_started()
        self.assertEqual((health.paths, self.old.reported), ([], ["ready"]))

    def test_a_worker_verifies_before_it_serves(self) -> None:
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        passed = InheritedSockets([ListeningSocket(os.dup(listening.fileno()), "web/http/0/0")])
        worker = self.make_runtime(worker_slot=0, inherited=passed)
        old = FakeOldProcess()
        worker.old_process = old
        worker.settings.workers = 2
        self.start(worker, Health(503, b"warming up"), ["/healthz"])
        worker.serving_started()
        self.assertEqual(old.reported, ["error verify web /healthz answered 503: warming up"])
        self.assertEqual(self.environment.exits, [1])
