"""
systemd's file descriptor store, played by the test: a notify socket that
receives the listening sockets graceful stores (SCM_RIGHTS), holds them
while the whole process tree is gone, and passes them to a fresh start
with C{LISTEN_FDS}, C{LISTEN_FDNAMES} and C{LISTEN_PID} as systemd does; a
client whose connection waited in the backlog meanwhile is answered.
"""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import struct
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration import test_systemd as systemd
from tests.support import ServerProcess, child_environment, free_port, get, pid_of, wait_until


class StoreSocket:
    """
    systemd's side of NOTIFY_SOCKET: each datagram's sender, fields, and
    the descriptors it carries (kept open, as the store keeps them).
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        directory = tempfile.mkdtemp(prefix="graceful-fdstore-")
        test.addCleanup(shutil.rmtree, directory, True)
        self.address = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        test.addCleanup(self.sock.close)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.address)
        self.test = test

    def receive(self, timeout: float = 20.0) -> tuple[int, dict[str, str], list[socket.socket]]:
        self.sock.settimeout(timeout)
        fds = array.array("i")
        credentials = struct.calcsize("3i")
        data, ancillary, _, _ = self.sock.recvmsg(
            4096, socket.CMSG_SPACE(credentials) + socket.CMSG_SPACE(16 * fds.itemsize)
        )
        sender = -1
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(value[: len(value) - len(value) % fds.itemsize])
            elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = struct.unpack("3i", value[:credentials])[0]
        held = [socket.socket(fileno=fd) for fd in fds]
        for sock in held:
            self.test.addCleanup(sock.close)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        return sender, fields, held

    def until(self, key: str) -> tuple[int, dict[str, str], list[socket.socket]]:
        for _ in range(20):
            message = self.receive()
            if key in message[1]:
                return message
        raise AssertionError(f"no {key} message")

    def messages(self, wait: float = 0.5) -> list[dict[str, str]]:
        got = []
        try:
            for _ in range(20):
                got.append(self.receive(wait)[1])
        except (TimeoutError, socket.timeout):
            pass
        return got


class FdStoreTests(SynchronousTestCase):
    def test_sockets_outlive_a_crash_of_the_whole_tree(self) -> None:
        store = StoreSocket(self)
        directory = Path(tempfile.mkdtemp(prefix="graceful-fdstore-"))
        self.addCleanup(shutil.rmtree, directory, True)
        port = free_port()
        systemd.write_config(directory, port)
        first = ServerProcess.twistd(
            *systemd.twistd_args(), cwd=directory, env=child_environment(NOTIFY_SOCKET=store.address)
        )
        self.addCleanup(first.stop)
        first.start()

        sender, fields, _ = store.until("READY")
        self.assertEqual(sender, first.pid)
        sender, fields, [stored] = store.until("FDSTORE")
        self.assertEqual((sender, fields), (first.pid, {"FDSTORE": "1", "FDNAME": f"web/http/{port}/0"}))
        self.assertEqual(stored.getsockname()[1], port)
        self.assertEqual(pid_of(port), first.pid)

        # A restart whose config adds an HTTPS port: the new generation
        # stores that one alone (the other is stored), once it is the main
        # process.
        https_port = free_port()
        systemd.write_config(directory, port, https_port)
        first.signal(first.pid, signal.SIGUSR1)
        second = first.remember(int(store.until("MAINPID")[1]["MAINPID"]))
        sender, fields, [added] = store.until("FDSTORE")
        self.assertEqual(
            (sender, fields), (second, {"FDSTORE": "1", "FDNAME": f"secure/https/{https_port}/0"})
        )
        first.wait_gone(first.pid)
        self.assertNotIn("FDSTORE", str(store.messages()))

        # The whole tree dies: the port stays open in the store, and a
        # client's request waits in the backlog.
        first.kill()
        wait_until(lambda: not first.running(), what="every process to be gone")
        waiting = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.addCleanup(waiting.close)
        waiting.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

        again = systemd.SocketActivated(
            [stored, added],
            [f"web/http/{port}/0", f"secure/https/{https_port}/0"],
            [*ServerProcess.twistd().args, *systemd.twistd_args()],
            cwd=directory,
            env=child_environment(NOTIFY_SOCKET=store.address),
        )
        self.addCleanup(again.stop)
        again.start()
        waiting.settimeout(20)
        answer = b""
        while chunk := waiting.recv(65536):
            answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:100])
        self.assertEqual(int(answer.split(b"\r\n\r\n", 1)[1]), again.pid)
        self.assertNotEqual(again.pid, second)
        self.assertEqual(get(port, "/healthz")[0], 200)
        self.assertEqual(get(https_port, "/", tls=True)[0], 200)
        self.assertIn(f"https server started listening on [:{https_port}]", again.log())
        # It adopted the stored socket and stores nothing again.
        self.assertNotIn("FDSTORE", str(store.messages()))
