"""
Unit tests of L{graceful.handoff.supervision}: the pidfile and sd_notify,
through a runtime.
"""

from __future__ import annotations

import socket

from graceful.handoff.pipes import RestartFailed
from graceful.process.runtime import PIDFILE_VARIABLE
from graceful.handoff.supervision import NoPidfile, SystemdNotifier
from graceful.testing import FakeOldProcess

from ..runtime_case import PID, NEW_PID, _RuntimeCase


class PidfileTests(_RuntimeCase):
    """
    The pidfile names the serving process: us, then the new process once it
    is ready; we remove it at exit only if it still names us.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.temp_dir() / "app.pid"
        self.runtime.set_pidfile(str(self.path))

    def content(self) -> str:
        return self.path.read_text().strip()

    def test_set_pidfile(self) -> None:
        self.assertEqual(self.runtime.environ[PIDFILE_VARIABLE], str(self.path.absolute()))
        self.runtime.set_pidfile(None)
        self.assertNotIn(PIDFILE_VARIABLE, self.runtime.environ)
        self.assertIsInstance(self.runtime.pidfile, NoPidfile)

    def test_written_when_serving(self) -> None:
        self.runtime.serving_started()
        self.assertEqual(self.content(), str(PID))

    def test_names_new_process_after_handoff(self) -> None:
        self.runtime.serving_started()
        self.runtime.restart()
        self.assertEqual(self.content(), str(PID))
        self.spawner.last.report_ready()
        self.assertEqual(self.content(), str(NEW_PID))
        self.assertTrue(self.exited)
        self.assertEqual(self.content(), str(NEW_PID))

    def test_kept_after_failed_restart(self) -> None:
        self.runtime.serving_started()
        self.restart_and_fail()
        self.assertEqual(self.content(), str(PID))

    def test_removed_at_shutdown(self) -> None:
        self.runtime.serving_started()
        self.successResultOf(self.runtime.shutdown())
        self.assertFalse(self.path.exists())

    def test_not_removed_when_naming_another(self) -> None:
        self.path.write_text("999\n")
        self.successResultOf(self.runtime.shutdown())
        self.assertEqual(self.content(), "999")

    def test_not_written_by_new_generation(self) -> None:
        """
        A process a restart made leaves the pidfile to the old one, which
        writes it once we report ready.
        """
        self.runtime.old_process = FakeOldProcess()
        self.runtime.serving_started()
        self.assertFalse(self.path.exists())


class NotifyTests(_RuntimeCase):
    """
    sd_notify messages to a real datagram socket in a temporary folder.
    """

    def setUp(self) -> None:
        super().setUp()
        address = str(self.temp_dir() / "notify")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.socket.close)
        self.socket.bind(address)
        self.socket.setblocking(False)
        self.runtime.notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": address})  # type: ignore[assignment]

    def messages(self) -> list[dict[str, str]]:
        received = []
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return received
            received.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def test_ready_when_serving(self) -> None:
        self.runtime.serving_started()
        self.assertEqual(self.messages(), [{"READY": "1", "MAINPID": str(PID), "STATUS": "serving"}])

    def test_restart(self) -> None:
        self.runtime.restart()
        [reloading] = self.messages()
        self.assertEqual(reloading["RELOADING"], "1")
        self.assertGreater(int(reloading["MONOTONIC_USEC"]), 0)
        self.spawner.last.report_ready()
        self.assertEqual(self.messages(), [{"MAINPID": str(NEW_PID), "READY": "1"}])

    def test_failed_restart(self) -> None:
        result = self.runtime.restart()
        self.messages()
        self.spawner.last.report_failure("it broke")
        self.failureResultOf(result, RestartFailed)
        self.assertEqual(
            self.messages(), [{"READY": "1", "STATUS": "restart failed: it broke"}]
        )

    def test_shutdown(self) -> None:
        self.runtime.shutdown()
        self.assertEqual(self.messages(), [{"STOPPING": "1"}])

    def test_socket_gone(self) -> None:
        self.socket.close()
        self.runtime.shutdown()  # no error: nobody to tell
        self.assertTrue(self.exited)
