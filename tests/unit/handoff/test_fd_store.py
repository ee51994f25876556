"""
Unit tests of L{graceful.handoff.fd_store}: when systemd's fd store is
used, what each datagram says and carries (read from a notify socket of the
test's own, as systemd reads it), and which sockets a process stores or
removes.
"""

from __future__ import annotations

import array
import os
import shutil
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff.fd_store import FdStore, fd_store_allowed, socket_identity
from graceful._sockets import ListeningSocket


class FakeSystemd:
    """
    A notify socket: datagrams and the descriptors they carry.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        directory = tempfile.mkdtemp(prefix="graceful-fdstore-")
        test.addCleanup(shutil.rmtree, directory, True)
        self.address = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        test.addCleanup(self.sock.close)
        self.sock.bind(self.address)
        self.sock.setblocking(False)
        self.test = test

    def received(self) -> list[tuple[str, list[int]]]:
        """
        Each datagram so far: its text, and the inodes of its descriptors
        (which are closed).
        """
        got = []
        while True:
            fds = array.array("i")
            try:
                data, ancillary, _, _ = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(16 * fds.itemsize)
                )
            except BlockingIOError:
                return got
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(value[: len(value) - len(value) % fds.itemsize])
            inodes = [os.fstat(fd).st_ino for fd in fds]
            for fd in fds:
                os.close(fd)
            got.append((data.decode(), inodes))


def listening(test: SynchronousTestCase, family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    test.addCleanup(sock.close)
    if family == socket.AF_UNIX:
        directory = tempfile.mkdtemp(prefix="graceful-fdstore-")
        test.addCleanup(shutil.rmtree, directory, True)
        sock.bind(os.path.join(directory, "s.sock"))
    else:
        sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


class AllowedTests(SynchronousTestCase):
    def test_where_systemd_offers_it(self) -> None:
        notify = {"NOTIFY_SOCKET": "/run/systemd/notify"}
        self.assertTrue(fd_store_allowed(notify, True))  # systemd before 254 does not say
        self.assertTrue(fd_store_allowed({**notify, "FDSTORE": "16"}, True))
        self.assertFalse(fd_store_allowed({**notify, "FDSTORE": "0"}, True))
        self.assertFalse(fd_store_allowed({**notify, "FDSTORE": "many"}, True))
        self.assertFalse(fd_store_allowed(notify, False))  # fd_store = false
        self.assertFalse(fd_store_allowed({"FDSTORE": "16"}, True))  # no systemd
        self.assertFalse(fd_store_allowed({"NOTIFY_SOCKET": ""}, True))

    def test_abstract_address(self) -> None:
        store = FdStore.from_environment({"NOTIFY_SOCKET": "@sd/notify"}, True)
        assert store is not None
        self.assertEqual(store.address, "\0sd/notify")
        self.assertIsNone(FdStore.from_environment({}, True))


class StoreTests(SynchronousTestCase):
    def test_each_socket_with_its_name(self) -> None:
        """
        One datagram per socket: FDSTORE=1, FDNAME= its LISTEN_FDNAMES
        name, and the socket itself attached.
        """
        systemd = FakeSystemd(self)
        web, api = listening(self), listening(self)
        store = FdStore(systemd.address)
        stored = store.store(
            [ListeningSocket(web.fileno(), "web/http/8100/0"), ListeningSocket(api.fileno(), "api/http/0/0")]
        )
        self.assertEqual(stored, ["web/http/8100/0", "api/http/0/0"])
        self.assertEqual(
            systemd.received(),
            [
                ("FDSTORE=1\nFDNAME=web/http/8100/0", [os.fstat(web.fileno()).st_ino]),
                ("FDSTORE=1\nFDNAME=api/http/0/0", [os.fstat(api.fileno()).st_ino]),
            ],
        )

    def test_remove(self) -> None:
        systemd = FakeSystemd(self)
        FdStore(systemd.address).remove(["web/http/8200/0"])
        self.assertEqual(systemd.received(), [("FDSTOREREMOVE=1\nFDNAME=web/http/8200/0", [])])

    def test_systemd_gone(self) -> None:
        """
        A store that fails costs nothing but the store.
        """
        directory = tempfile.mkdtemp(prefix="graceful-fdstore-")
        self.addCleanup(shutil.rmtree, directory, True)
        store = FdStore(os.path.join(directory, "nobody"))
        self.assertEqual(store.store([ListeningSocket(listening(self).fileno(), "web/http/1/0")]), [])
        store.remove(["web/http/1/0"])


class KeepTests(SynchronousTestCase):
    """
    A process stores what it bound and removes what it dropped; what it
    inherited is in the store already (systemd drops a second copy anyway,
    but removes by name only, so names must stay apart).
    """

    def setUp(self) -> None:
        self.sent: list[tuple[str, list[int]]] = []
        self.store = FdStore("/run/notify", send=lambda address, message, fds: self.sent.append(
            (message.decode(), [socket_identity(fd) or 0 for fd in fds])
        ))

    def test_first_start_stores_every_tcp_socket(self) -> None:
        web, unix = listening(self), listening(self, socket.AF_UNIX)
        stored = self.store.keep(
            {},
            [ListeningSocket(web.fileno(), "web/http/8100/0"), ListeningSocket(unix.fileno(), "web/unix/0")],
        )
        self.assertEqual(stored, ["web/http/8100/0"])
        self.assertEqual(
            self.sent, [("FDSTORE=1\nFDNAME=web/http/8100/0", [os.fstat(web.fileno()).st_ino])]
        )

    def test_a_later_generation(self) -> None:
        """
        It inherited 8100 and 8200, keeps 8100, drops 8200 and binds 8300:
        8200's name is removed, 8300 stored, 8100 left alone.
        """
        kept, dropped, new = listening(self), listening(self), listening(self)
        received = {
            os.fstat(kept.fileno()).st_ino: "web/http/8100/0",
            os.fstat(dropped.fileno()).st_ino: "web/http/8200/1",
        }
        copy = os.dup(kept.fileno())  # as adopted: another descriptor, the same socket
        self.addCleanup(os.close, copy)
        stored = self.store.keep(
            received,
            [ListeningSocket(copy, "web/http/8100/0"), ListeningSocket(new.fileno(), "web/http/8300/1")],
        )
        self.assertEqual(stored, ["web/http/8300/1"])
        self.assertEqual(
            self.sent,
            [
                ("FDSTOREREMOVE=1\nFDNAME=web/http/8200/1", []),
                ("FDSTORE=1\nFDNAME=web/http/8300/1", [os.fstat(new.fileno()).st_ino]),
            ],
        )

    def test_a_dropped_name_that_is_passed_again_stays(self) -> None:
        """
        A port-0 socket dropped and bound anew under the same name: removing
        the name would remove the new one too, so the name stays.
        """
        old, new = listening(self), listening(self)
        self.store.keep(
            {os.fstat(old.fileno()).st_ino: "web/http/0/0"},
            [ListeningSocket(new.fileno(), "web/http/0/0")],
        )
        self.assertEqual(
            self.sent, [("FDSTORE=1\nFDNAME=web/http/0/0", [os.fstat(new.fileno()).st_ino])]
        )
