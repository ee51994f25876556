"""
Unit tests of when a process keeps its sockets in systemd's fd store: the
first generation once it serves; a later one once it is the main process
(its old generation released), since systemd takes messages from the main
process only; never with C{fd_store = false}.
"""

from __future__ import annotations

import os
import socket

from graceful.http.server import Listener
from graceful._sockets import InheritedSockets, ListenSpec
from graceful.testing import FakeOldProcess, FakePort

from ..handoff.test_fd_store import FakeSystemd, listening
from ..runtime_case import PID, _RuntimeCase


class KeepSocketsTests(_RuntimeCase):
    def setUp(self) -> None:
        super().setUp()
        self.systemd = FakeSystemd(self)
        self.runtime.environ["NOTIFY_SOCKET"] = self.systemd.address

    def listen(self, sock: socket.socket, port: int) -> None:
        server = self.runtime.server("web")
        server.set_port(port)
        fake = FakePort(sock.fileno(), port)
        server.listeners.append(Listener(ListenSpec("web", False, port), fake))  # type: ignore[arg-type]

    def test_first_generation_stores_once_serving(self) -> None:
        sock = listening(self)
        self.listen(sock, 8100)
        self.runtime.serving_started()
        self.assertEqual(
            self.systemd.received(),
            [("FDSTORE=1\nFDNAME=web/http/8100/0", [os.fstat(sock.fileno()).st_ino])],
        )
        self.assertLogged(f"{PID}: stored web/http/8100/0 in systemd's fd store")

    def test_not_with_fd_store_false(self) -> None:
        self.runtime.settings.fd_store = False
        self.listen(listening(self), 8100)
        self.runtime.serving_started()
        self.assertEqual(self.systemd.received(), [])

    def test_a_new_generation_stores_once_it_is_the_main_process(self) -> None:
        """
        It binds 8200 and inherits 8100: it stores 8200 alone, and only
        after its old generation released (and named it MAINPID).
        """
        inherited, bound = listening(self), listening(self)
        self.runtime.core.inherited = InheritedSockets(
            [], {os.fstat(inherited.fileno()).st_ino: "web/http/8100/0"}
        )
        old = FakeOldProcess()
        self.runtime.old_process = old
        self.listen(inherited, 8100)
        server = self.runtime.server("web")
        server.listeners.append(
            Listener(ListenSpec("web", False, 8200, index=1), FakePort(bound.fileno(), 8200))  # type: ignore[arg-type]
        )
        self.runtime.serving_started()
        self.assertEqual(old.reported, ["ready"])
        self.assertEqual(self.systemd.received(), [])
        old.release()
        self.assertEqual(
            self.systemd.received(),
            [("FDSTORE=1\nFDNAME=web/http/8200/1", [os.fstat(bound.fileno()).st_ino])],
        )
