"""
Unit tests of L{graceful.process.runtime.Runtime}: when it reports that
it serves, and the signals it handles.
"""

from __future__ import annotations

import os
import signal
import socket

from twisted.application.service import Service

from graceful._errors import ConfigError
from graceful.handoff.messages import Accepted, Released
from graceful._sockets import ListeningSocket, InheritedSockets
from graceful.process.signals import SHUTDOWN_SIGNALS
from graceful.testing import FakeOldProcess, MemoryEnvironment

from ..runtime_case import PID, ThreadedMemoryReactor, _RuntimeCase


class ServingStartedTests(_RuntimeCase):
    """
    Once serving: drop unclaimed inherited sockets, install the signals,
    report ready, and start the services when no older generation runs them.
    """

    def test_first_generation(self) -> None:
        service = Service()
        self.runtime.add_service(service)
        self.runtime.serving_started()
        self.runtime.serving_started()
        self.assertEqual(self.signal_handlers_installed, 1)
        self.assertTrue(service.running)

    def test_unclaimed_sockets_closed(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.runtime.inherited = InheritedSockets([ListeningSocket(write, "old/http/8100/0")])
        self.runtime.serving_started()
        self.assertRaises(OSError, os.fstat, write)
        self.assertLogged(f"{PID}: closed inherited socket old/http/8100/0: no server asks for it")

    def test_config_error_reported_to_the_old_process(self) -> None:
        """
        A new generation that cannot serve its config tells the old
        process why: the reason its failed restart is reported with.
        """
        old = FakeOldProcess()
        self.runtime.old_process = old
        server = self.runtime.server("s1")
        server.set_https_port(8443)
        error = self.assertRaises(ConfigError, self.runtime.start_server, server)
        self.assertEqual(old.reported, [f"error {error}"])
        self.assertIn("no certificate", str(error))

    def test_new_generation(self) -> None:
        old = FakeOldProcess()
        self.runtime.old_process = old
        service = Service()
        self.runtime.add_service(service)
        self.runtime.serving_started()
        self.assertEqual(old.reported, ["ready"])
        self.assertFalse(service.running)
        old.accept(Accepted(restarts=3, failed_restarts=1, handoff_seconds=0.2, at=1.5))
        self.assertEqual((self.runtime.core.history.restarts, self.runtime.core.history.failed_restarts), (3, 1))
        record = self.runtime.core.history.last
        assert record is not None
        self.assertEqual((record.ok, record.at, record.handoff_seconds), (True, 1.5, 0.2))
        old.release(1.0)
        self.assertTrue(service.running)

    def test_services_not_started_when_leaving(self) -> None:
        old = FakeOldProcess()
        self.runtime.old_process = old
        service = Service()
        self.runtime.add_service(service)
        self.runtime.serving_started()
        self.runtime.shutdown()
        old.released.callback(Released())
        self.assertFalse(service.running)

    def test_wait_reports_ready(self) -> None:
        self.reactor.running = False
        self.runtime._log_to_stdout = False
        self.runtime.wait()
        self.assertTrue(self.reactor.hasRun)
        self.assertEqual(self.signal_handlers_installed, 1)

    def test_status(self) -> None:
        self.serve("s1", 8100, 41)
        self.restart_and_fail("no luck")
        status = self.runtime.status().to_json()
        self.assertEqual((status["pid"], status["generation"]), (PID, 1))
        self.assertEqual(
            status["servers"],
            [
                {
                    "name": "s1",
                    "ports": [{"port": 8100, "tls": False}],
                    "in_flight": 0,
                    "requests": 0,
                    "connections": {"http/1.1": 0, "h2": 0, "websocket": 0, "stream": 0},
                    "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
                    "duration_counts": [0] * 15,
                    "duration_sum": 0.0,
                    "refused": {"limit_concurrency": 0},
                    "resets": 0,
                }
            ],
        )
        self.assertEqual(
            (status["last_restart"]["ok"], status["last_restart"]["error"]), (False, "no luck")
        )
        self.assertEqual((status["restarts"], status["failed_restarts"]), (0, 1))


class SignalTests(_RuntimeCase):
    """
    SIGUSR1 restarts and the shutdown signals shut down, through the reactor.
    """

    def install(self) -> None:
        self.runtime.install_signal_handlers()

    def deliver(self, name: str) -> None:
        self.environment.send_signal(getattr(signal, name))

    def test_sigusr1_restarts(self) -> None:
        self.install()
        self.deliver("SIGUSR1")
        self.assertEqual(self.spawner.calls, [])  # only scheduled
        self.reactor.advance(0)
        self.assertEqual(len(self.spawner.calls), 1)
        self.deliver("SIGUSR1")  # refused, quietly
        self.reactor.advance(0)
        self.assertEqual(len(self.spawner.calls), 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_sigusr1_held_while_starting_is_dropped(self) -> None:
        """
        A SIGUSR1 that reached this process while it started (held back
        until its handlers were in place) was meant for the process it
        replaces: dropped, with one line, and the next one restarts.
        """
        self.environment.held.add(signal.SIGUSR1)
        self.install()
        self.reactor.advance(0)
        self.assertEqual(self.spawner.calls, [])
        self.assertEqual(
            self.environment.released, [signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU]
        )
        self.assertLogged(
            f"{PID}: restart refused: SIGUSR1 arrived while this process was starting"
        )
        self.deliver("SIGUSR1")
        self.reactor.advance(0)
        self.assertEqual(len(self.spawner.calls), 1)

    def test_sigusr1_ignored_once_exiting(self) -> None:
        """
        Once every server is shut down nothing is left to restart, and a
        late SIGUSR1 is ignored rather than left to its default action.
        """
        self.install()
        self.runtime.shutdown()
        self.reactor.advance(0)
        self.assertTrue(self.exited)
        self.assertEqual(self.environment.ignored, [signal.SIGUSR1])
        self.deliver("SIGUSR1")
        self.reactor.advance(0)
        self.assertEqual(self.spawner.calls, [])

    def test_nothing_held_nothing_said(self) -> None:
        self.install()
        self.assertEqual(
            self.environment.released, [signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU]
        )
        self.assertFalse(any("SIGUSR1 arrived" in line for line in self.log), self.log)

    def test_shutdown_signals(self) -> None:
        for name in SHUTDOWN_SIGNALS:
            self.setUp_runtime_again()
            self.install()
            self.deliver(name)
            self.assertFalse(self.runtime.draining)
            self.reactor.advance(0)
            self.assertTrue(self.runtime.draining, name)
            self.assertTrue(self.exited, name)

    def setUp_runtime_again(self) -> None:
        self.reactor = ThreadedMemoryReactor()
        self.reactor.running = True
        self.environment = MemoryEnvironment()
        self.runtime = self.make_runtime()
