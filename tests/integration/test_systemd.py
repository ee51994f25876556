"""
graceful under a supervisor, checked the way systemd sees it:

- sd_notify: the datagrams on a real C{NOTIFY_SOCKET}, with the sender's pid
  from the kernel (C{SO_PASSCRED}), since systemd (C{NotifyAccess=main})
  takes a message only from the main process;
- socket activation: sockets bound here and passed from fd 3 with
  C{LISTEN_FDS}, C{LISTEN_PID} and C{LISTEN_FDNAMES}, as systemd passes them,
  adopted and never bound or closed by graceful.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    CERT,
    EXAMPLES,
    KEY,
    ServerProcess,
    child_environment,
    free_ports,
    get,
    group_members,
    pid_of,
    wait_until,
)

# -- sd_notify -----------------------------------------------------------------


class NotifySocket:
    """
    What systemd listens on: a datagram socket that also learns each
    sender's pid from the kernel.
    """

    def __init__(self, test: SynchronousTestCase, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        test.addCleanup(self.sock.close)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"graceful-test-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            directory = tempfile.mkdtemp(prefix="graceful-notify-")
            test.addCleanup(shutil.rmtree, directory, True)
            self.address = os.path.join(directory, "notify")
            self.sock.bind(self.address)

    def receive(self, timeout: float = 20.0) -> tuple[int, dict[str, str]]:
        """
        The next message: the sender's pid and its fields.  The fd store's
        messages are skipped (tests/integration/test_fd_store.py reads them;
        the sockets they carry, with no room here, the kernel closes).
        """
        self.sock.settimeout(timeout)
        credentials = struct.calcsize("3i")
        for _ in range(20):
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(credentials))
            sender = -1
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack("3i", value[:credentials])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            if "FDSTORE" not in fields and "FDSTOREREMOVE" not in fields:
                return sender, fields
        raise AssertionError("only fd store messages")

    def nothing_more(self, wait: float = 0.3) -> list[dict[str, str]]:
        self.sock.settimeout(wait)
        extra = []
        try:
            for _ in range(10):
                extra.append(self.receive(wait)[1])
        except (TimeoutError, socket.timeout):
            pass
        return extra


def write_config(directory: Path, http_port: int, https_port: int | None = None, extra: str = "") -> Path:
    secure = (
        f"""
[servers.secure]
app = "examples.apps:other"
https_ports = [{https_port}]
cert = "{CERT}"
key = "{KEY}"
"""
        if https_port
        else ""
    )
    path = directory / "graceful.toml"
    path.write_text(
        f"""
[graceful]
drain_timeout = 5.0
ready_timeout = 10.0

[servers.web]
app = "examples.apps:basic"
ports = [{http_port}]
admin = "/debug/admin"
health = "/healthz"
{extra}
{secure}
"""
    )
    return path


def twistd_args() -> list[str]:
    # What examples/systemd/graceful.service runs.
    return ["--nodaemon", "--pidfile=", "graceful", "--config", "graceful.toml"]


class NotifyTests(SynchronousTestCase):
    def test_ready_reload_handoff_failed_reload_and_stop(self) -> None:
        """
        READY=1 with MAINPID from the first process; on SIGUSR1, RELOADING=1
        with MONOTONIC_USEC, then MAINPID=<new pid> and READY=1, each sent by
        the process that is the main one at that moment; a failed restart
        ends with READY=1 and the reason, MAINPID unchanged; SIGTERM sends
        STOPPING=1 from the new main process.
        """
        notify = NotifySocket(self)
        directory = Path(tempfile.mkdtemp(prefix="graceful-sd-"))
        [port] = free_ports(1)
        config = write_config(directory, port)
        process = ServerProcess.twistd(
            *twistd_args(), cwd=directory, env=child_environment(NOTIFY_SOCKET=notify.address)
        )
        self.addCleanup(process.stop)
        process.start()
        first = process.process.pid  # type: ignore[union-attr]

        sender, fields = notify.receive()
        self.assertEqual(fields, {"READY": "1", "MAINPID": str(first), "STATUS": "serving"})
        self.assertEqual(sender, first)
        self.assertEqual(pid_of(port), first)

        process.signal(first, signal.SIGUSR1)
        sender, fields = notify.receive()
        self.assertEqual((sender, sorted(fields)), (first, ["MONOTONIC_USEC", "RELOADING"]))
        self.assertEqual(fields["RELOADING"], "1")
        # CLOCK_MONOTONIC, which systemd compares with its own.
        self.assertLess(abs(int(fields["MONOTONIC_USEC"]) / 1e6 - time.monotonic()), 30)
        sender, fields = notify.receive()
        second = int(fields["MAINPID"])
        self.assertEqual(fields, {"MAINPID": str(second), "READY": "1"})
        self.assertEqual(sender, first)  # still the main process when it says so
        process.remember(second)
        self.assertNotEqual(second, first)
        self.assertEqual(pid_of(port), second)
        process.wait_gone(first)
        self.assertEqual(notify.nothing_more(), [])  # the old one exits silently

        config.write_text(config.read_text() + "\nbogus_key = 1\n")
        process.signal(second, signal.SIGUSR1)
        sender, fields = notify.receive()
        self.assertEqual((sender, fields["RELOADING"]), (second, "1"))
        sender, fields = notify.receive()
        self.assertEqual(sender, second)
        self.assertEqual(fields["READY"], "1")
        self.assertNotIn("MAINPID", fields)
        self.assertIn("restart failed", fields["STATUS"])
        self.assertIn("bogus_key", fields["STATUS"])
        self.assertEqual(pid_of(port), second)

        process.signal(second, signal.SIGTERM)
        sender, fields = notify.receive()
        self.assertEqual((sender, fields), (second, {"STOPPING": "1"}))
        process.wait_gone(second)

    def test_abstract_socket(self) -> None:
        """
        An abstract C{NOTIFY_SOCKET} ("@name", as systemd uses in
        containers and for user managers) works too.
        """
        notify = NotifySocket(self, abstract=True)
        [port] = free_ports(1)
        process = ServerProcess.python(
            EXAMPLES / "basic.py", str(port), env=child_environment(NOTIFY_SOCKET=notify.address)
        )
        self.addCleanup(process.stop)
        process.start()
        sender, fields = notify.receive()
        self.assertEqual(fields["READY"], "1")
        self.assertEqual(int(fields["MAINPID"]), sender)
        self.assertEqual(sender, process.process.pid)  # type: ignore[union-attr]


# -- socket activation ----------------------------------------------------------


def listening_socket(port: int, blocking: bool) -> socket.socket:
    """
    A socket as systemd makes one for C{ListenStream=PORT} with
    C{BindIPv6Only=both}: every address, IPv6 and IPv4.
    """
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address: tuple[Any, ...] = ("::", port)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("0.0.0.0", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.setblocking(blocking)
    return sock


class SocketActivated(ServerProcess):
    """
    A process started the way systemd starts a socket-activated service:
    the sockets from fd 3 on, C{LISTEN_FDS}, C{LISTEN_FDNAMES}, and
    C{LISTEN_PID} set to the pid of the process itself (a shell sets it to
    its own pid, then execs the program, which keeps that pid).
    """

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        names: Sequence[str],
        args: list[str],
        listen_pid: int | None = None,
        **kw: Any,
    ) -> None:
        pid = "$$" if listen_pid is None else str(listen_pid)
        super().__init__(["/bin/sh", "-c", f'LISTEN_PID={pid} exec "$@"', "sh", *args], **kw)
        self.sockets = list(sockets)
        self.env.update(LISTEN_FDS=str(len(sockets)), LISTEN_FDNAMES=":".join(names))

    def start(self, **popen: Any) -> SocketActivated:
        sources = [s.fileno() for s in self.sockets]
        targets = list(range(3, 3 + len(sources)))

        def place_sockets() -> None:
            # In the child, before exec: copies above every target first, so
            # no source is overwritten, then onto 3, 4, ... (dup2 leaves the
            # copy inheritable).
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
            for fd, target in zip(high, targets):
                os.dup2(fd, target)
                os.close(fd)

        super().start(pass_fds=targets, preexec_fn=place_sockets, **popen)
        return self


def socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


#: What the core lacks for systemd's default sockets; see the report of issue 7.


class SocketActivationTests(SynchronousTestCase):
    def activate(
        self, sockets: Sequence[socket.socket], directory: Path, listen_pid: int | None = None
    ) -> SocketActivated:
        process = SocketActivated(
            sockets,
            ["graceful"] * len(sockets),  # FileDescriptorName=graceful, as in graceful.socket
            [*ServerProcess.twistd().args, *twistd_args()],
            listen_pid=listen_pid,
            cwd=directory,
        )
        self.addCleanup(process.stop)
        return process.start()

    def sockets(self, count: int, blocking: bool = False) -> list[socket.socket]:
        made = [listening_socket(port, blocking) for port in free_ports(count)]
        for sock in made:
            self.addCleanup(sock.close)
        return made

    def test_adopts_the_sockets_across_restarts_and_stops(self) -> None:
        """
        graceful serves HTTP and HTTPS on the sockets it was given (the very
        sockets: it could not bind those ports, which are held here), hands
        them to the next generation on SIGUSR1, and leaves them open when it
        stops: a connection made while no process runs is served by the next
        one started.
        """
        web, secure = self.sockets(2)
        http_port, https_port = web.getsockname()[1], secure.getsockname()[1]
        directory = Path(tempfile.mkdtemp(prefix="graceful-activation-"))
        write_config(directory, http_port, https_port)
        ours = {os.fstat(web.fileno()).st_ino, os.fstat(secure.fileno()).st_ino}

        process = self.activate([web, secure], directory)
        first = process.process.pid  # type: ignore[union-attr]
        wait_until(lambda: get(http_port, "/healthz", timeout=2)[0] == 200, what="activated server")
        self.assertEqual(pid_of(http_port), first)
        self.assertEqual(get(https_port, "/", tls=True)[0], 200)
        self.assertEqual(socket_inodes(first) & ours, ours)
        self.assertIn("listening on [:%d]" % http_port, process.log())

        process.signal(first, signal.SIGUSR1)
        second = wait_until(lambda: (pid := pid_of(http_port)) != first and pid, what="new generation")
        process.remember(second)
        self.assertEqual(get(https_port, "/", tls=True)[0], 200)
        self.assertEqual(socket_inodes(second) & ours, ours)
        process.wait_gone(first)

        process.signal(second, signal.SIGTERM)
        process.wait_gone(second)
        # Stopped: the port is still open (systemd's, here ours), and a client
        # waits in the backlog...
        waiting = socket.create_connection(("127.0.0.1", http_port), timeout=20)
        self.addCleanup(waiting.close)
        waiting.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # ...until the service starts again.
        again = self.activate([web, secure], directory)
        answer = b""
        for _ in range(100):  # Connection: close: read to the end
            chunk = waiting.recv(4096)
            if not chunk:
                break
            answer += chunk
        self.assertIn(b"200 OK", answer)
        self.assertEqual(int(answer.rstrip().split(b"\n")[-1]), again.process.pid)  # type: ignore[union-attr]

    def test_sockets_for_another_process_are_ignored(self) -> None:
        """
        With C{LISTEN_PID} naming another process, the sockets are not
        graceful's: it binds the port itself, which is taken, and says so.
        """
        [web] = self.sockets(1)
        port = web.getsockname()[1]
        directory = Path(tempfile.mkdtemp(prefix="graceful-activation-"))
        write_config(directory, port)
        process = self.activate([web], directory, listen_pid=1)
        self.assertEqual(process.wait_exit(), 1)
        self.assertIn(f"cannot listen on :{port}", process.log())

    def test_blocking_sockets(self) -> None:
        """
        Sockets as systemd passes them by default (without C{NonBlocking=yes}),
        blocking: graceful serves them all the same.
        """
        [web] = self.sockets(1, blocking=True)
        port = web.getsockname()[1]
        directory = Path(tempfile.mkdtemp(prefix="graceful-activation-"))
        write_config(directory, port)
        process = self.activate([web], directory)
        for _ in range(5):
            status, _, body = get(port, "/pid", timeout=5)
            self.assertEqual(int(body), process.process.pid)  # type: ignore[union-attr]


    def test_systemd_socket_activate(self) -> None:
        """
        systemd's own launcher, C{systemd-socket-activate}, binds and passes
        the socket (blocking, as systemd does by default).
        """
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            self.skipTest("systemd-socket-activate is not installed")
        [port] = free_ports(1)
        directory = Path(tempfile.mkdtemp(prefix="graceful-activation-"))
        write_config(directory, port)
        process = ServerProcess(
            # It passes on only the variables named with -E, and starts the
            # program at the first connection.
            [tool, "-E", "PYTHONPATH", "-E", "PYTHONUNBUFFERED", "-E", "GRACEFUL_ADMIN_TOKEN_FILE",
             f"--listen=127.0.0.1:{port}",
             "--fdname=graceful", *ServerProcess.twistd().args, *twistd_args()],
            cwd=directory,
        )
        self.addCleanup(process.stop)
        process.start()
        wait_until(lambda: get(port, "/healthz", timeout=2)[0] == 200, what="activated server")
        self.assertEqual(pid_of(port), process.process.pid)  # type: ignore[union-attr]



# -- containers -------------------------------------------------------------------


class ContainerTests(SynchronousTestCase):
    def test_sigusr1_as_pid_1(self) -> None:
        """
        In a container graceful is PID 1 of its PID namespace; when that
        process exits the kernel kills every other process in the namespace.
        A restart there must leave the new process serving.
        """
        unshare = shutil.which("unshare")
        if unshare is None or os.geteuid() != 0:
            self.skipTest("needs root and unshare(1) to make a PID namespace")
        [port] = free_ports(1)
        directory = Path(tempfile.mkdtemp(prefix="graceful-pid1-"))
        write_config(directory, port)
        process = ServerProcess(
            [unshare, "--pid", "--fork", "--kill-child", *ServerProcess.twistd().args, *twistd_args()],
            cwd=directory,
        )
        self.addCleanup(process.stop)
        process.start()
        wait_until(lambda: get(port, "/healthz", timeout=2)[0] == 200, what="server as PID 1")
        # As PID 1 graceful is a master that never exits on a restart; its
        # worker serves.
        first_worker = pid_of(port)
        self.assertNotEqual(first_worker, 1)
        # The master is unshare's child (pids may wrap, so no ordering).
        master = next(
            pid
            for pid in group_members(process.pgid)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            == str(process.pgid)
        )
        os.kill(master, signal.SIGUSR1)
        wait_until(lambda: pid_of(port) != first_worker, what="the new worker")
        time.sleep(1.5)  # the old worker drains (nothing in flight) and exits
        self.assertEqual(get(port, "/healthz", timeout=2)[0], 200)

