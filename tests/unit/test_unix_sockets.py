"""
UNIX sockets, without a server process: binding and stale files in a temp
directory, their names across a restart, the config keys, the trusted admin
of the private admin socket, and C{graceful ctl}'s C{unix:} nodes.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from pathlib import Path

from twisted.internet.address import UNIXAddress
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from graceful._admin import AdminResource
from graceful._config import parse_config
from graceful._ctl import NodeStatus, UsageError, list_table, normalize_node, split_unix_node
from graceful._errors import ConfigError
from graceful._routing import Router
from graceful._runtime import Runtime
from graceful._sockets import (
    InheritedSocket,
    InheritedSockets,
    ListenSpec,
    bind_unix_socket,
    listen_environment,
    remove_unix_socket,
    socket_inode,
)
from graceful._status import PortStatus


class TempDir(SynchronousTestCase):
    def tempdir(self) -> Path:
        directory = tempfile.TemporaryDirectory(prefix="graceful-unix-")
        self.addCleanup(directory.cleanup)
        return Path(directory.name)

    def bind(self, path: Path, mode: int = 0o660) -> socket.socket:
        sock = bind_unix_socket(str(path), mode)
        self.addCleanup(sock.close)
        return sock


class BindTests(TempDir):
    def test_binds_listening_non_blocking_with_the_mode(self) -> None:
        """
        The socket listens, does not block, and its file has the mode asked
        for (0660 for servers, 0600 for the admin socket).
        """
        directory = self.tempdir()
        sock = self.bind(directory / "s1.sock")
        admin = self.bind(directory / "admin.sock", 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(directory / "s1.sock").st_mode), 0o660)
        self.assertEqual(stat.S_IMODE(os.stat(directory / "admin.sock").st_mode), 0o600)
        self.assertFalse(sock.getblocking())
        self.assertFalse(admin.getblocking())
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(directory / "s1.sock"))

    def test_stale_socket_file_is_replaced(self) -> None:
        """
        A socket file nobody listens on (its process died) is replaced.
        """
        directory = self.tempdir()
        path = directory / "s1.sock"
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(str(path))
        dead.close()
        with socket.socket(socket.AF_UNIX) as client:
            self.assertRaises(ConnectionRefusedError, client.connect, str(path))
        self.bind(path)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))

    def test_live_listener_is_left_alone(self) -> None:
        """
        A socket someone listens on is in use: one line, and the file stays.
        """
        directory = self.tempdir()
        path = directory / "s1.sock"
        live = self.bind(path)
        inode = os.stat(path).st_ino
        with self.assertRaises(ConfigError) as caught:
            bind_unix_socket(str(path))
        self.assertEqual(str(caught.exception), f"cannot listen on unix:{path}: already in use")
        self.assertEqual(os.stat(path).st_ino, inode)
        live.close()

    def test_other_file_is_never_removed(self) -> None:
        """
        A file that is not a socket is an error, and is kept.
        """
        directory = self.tempdir()
        path = directory / "s1.sock"
        path.write_text("precious")
        with self.assertRaises(ConfigError) as caught:
            bind_unix_socket(str(path))
        self.assertIn("not a socket", str(caught.exception))
        self.assertEqual(path.read_text(), "precious")

    def test_bad_paths(self) -> None:
        """
        A missing directory and a path too long for sun_path: one clear line.
        """
        directory = self.tempdir()
        with self.assertRaises(ConfigError) as caught:
            bind_unix_socket(str(directory / "nowhere" / "s1.sock"))
        self.assertEqual(
            str(caught.exception),
            f"UNIX socket {directory}/nowhere/s1.sock: directory {directory}/nowhere does not exist",
        )
        long_path = str(directory / ("x" * 120))
        with self.assertRaises(ConfigError) as caught:
            bind_unix_socket(long_path)
        self.assertIn("is too long", str(caught.exception))
        self.assertIn("at most 107", str(caught.exception))

    def test_removed_only_if_still_ours(self) -> None:
        """
        At shutdown the file goes only if it is still the socket we bound:
        one another process made since then at that path stays.
        """
        directory = self.tempdir()
        path = directory / "s1.sock"
        self.bind(path)
        inode = socket_inode(str(path))
        assert inode is not None
        # Moved away (so its inode stays in use) and another made in its place.
        os.rename(path, directory / "moved.sock")
        self.bind(path)
        self.assertFalse(remove_unix_socket(str(path), inode))
        self.assertTrue(path.exists())
        self.assertTrue(remove_unix_socket(str(path), socket_inode(str(path)) or 0))
        self.assertFalse(path.exists())


class NamingTests(TempDir):
    def test_fd_names(self) -> None:
        """
        A UNIX socket is named C{server/unix/index} in C{LISTEN_FDNAMES}
        (its path may hold ':', which separates the names).
        """
        spec = ListenSpec("s1", False, 0, "", 1, "/run/app:1/s1.sock")
        self.assertEqual(spec.fd_name, "s1/unix/1")
        env = listen_environment([ListenSpec("s1", False, 8100).fd_name, spec.fd_name])
        self.assertEqual(env["LISTEN_FDNAMES"], "s1/http/8100/0:s1/unix/1")

    def test_server_specs(self) -> None:
        """
        C{set_unix_socket} adds one spec per path, beside the ports; a path
        given twice is refused.
        """
        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=1)
        directory = self.tempdir()
        server = runtime.server("s1")
        server.set_port(8100)
        server.set_unix_socket(str(directory / "a.sock"), str(directory / "b.sock"))
        self.assertEqual(
            [s.fd_name for s in server.listen_specs()], ["s1/http/8100/0", "s1/unix/0", "s1/unix/1"]
        )
        with self.assertRaises(ConfigError) as caught:
            server.set_unix_socket(str(directory / "a.sock"), str(directory / "a.sock"))
        self.assertEqual(str(caught.exception), "server 's1': a UNIX socket path is given twice")

    def test_inherited_unix_socket_found_by_path(self) -> None:
        """
        After a restart the socket is found by the path it is bound to,
        whatever its name or position; a TCP spec never takes it.
        """
        directory = self.tempdir()
        sock = self.bind(directory / "b.sock")
        fd = os.dup(sock.fileno())
        inherited = InheritedSockets([InheritedSocket(fd, "s1/unix/0")])
        self.assertIsNone(inherited.claim(ListenSpec("s1", False, 0)))
        self.assertIsNone(inherited.claim(ListenSpec("s1", False, 0, "", 0, str(directory / "a.sock"))))
        claimed = inherited.claim(ListenSpec("s1", False, 0, "", 1, str(directory / "b.sock")))
        self.assertIsNotNone(claimed)
        assert claimed is not None
        self.assertEqual(claimed.fd, fd)
        claimed.close()


class ConfigTests(TempDir):
    def parse(self, text: str, directory: Path) -> object:
        import tomllib

        return parse_config(tomllib.loads(text), directory / "graceful.toml")

    def test_keys(self) -> None:
        """
        C{unix_sockets} (relative to the config's folder), C{unix_socket_mode}
        (a TOML octal or a string) and C{graceful.admin_socket}; a server may
        have UNIX sockets alone.
        """
        directory = self.tempdir()
        config = self.parse(
            '[graceful]\nadmin_socket = "admin.sock"\n'
            '[servers.s1]\napp = "m:a"\nunix_sockets = ["s1.sock"]\nunix_socket_mode = 0o666\n'
            '[servers.s2]\napp = "m:a"\nports = [8100]\nunix_sockets = ["/tmp/s2.sock"]\n'
            'unix_socket_mode = "0640"\n',
            directory,
        )
        s1, s2 = config.servers  # type: ignore[attr-defined]
        self.assertEqual(s1.unix_sockets, (str(directory / "s1.sock"),))
        self.assertEqual(s1.unix_socket_mode, 0o666)
        self.assertEqual(s2.unix_sockets, ("/tmp/s2.sock",))
        self.assertEqual(s2.unix_socket_mode, 0o640)
        self.assertEqual(config.settings.admin_socket, str(directory / "admin.sock"))  # type: ignore[attr-defined]

    def test_bad_values(self) -> None:
        """
        Each mistake is one line naming the key.
        """
        directory = self.tempdir()
        path = directory / "graceful.toml"
        cases = {
            '[servers.s1]\napp = "m:a"\nunix_sockets = ["a.sock", "a.sock"]\n':
                f"{path}: servers.s1.unix_sockets lists a path twice",
            '[servers.s1]\napp = "m:a"\nunix_sockets = ["none/a.sock"]\n':
                f"{path}: servers.s1.unix_sockets: UNIX socket {directory}/none/a.sock: "
                f"directory {directory}/none does not exist",
            '[servers.s1]\napp = "m:a"\nunix_sockets = ["a.sock"]\nunix_socket_mode = "rw"\n':
                f"{path}: servers.s1.unix_socket_mode must be an octal mode such as \"0660\", not 'rw'",
            '[graceful]\nadmin_socket = "a.sock"\n[servers.s1]\napp = "m:a"\nunix_sockets = ["a.sock"]\n':
                f"{path}: UNIX socket {directory}/a.sock is used twice "
                "(graceful.admin_socket and servers.s1.unix_sockets)",
            '[servers.s1]\napp = "m:a"\nunix_sockets = []\n':
                f"{path}: servers.s1 has no ports, https_ports or unix_sockets",
        }
        for text, message in cases.items():
            with self.assertRaises(ConfigError) as caught:
                self.parse(text, directory)
            self.assertEqual(str(caught.exception), message)


class TrustedAdminTests(SynchronousTestCase):
    def request(self, trusted: bool, method: str = "GET", page: str = "status") -> tuple[int, bytes]:
        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=4242)
        server = runtime.server("s1")
        server.enable_admin("/debug/admin", token="secret")
        router = Router()
        router.mount("/debug/admin", AdminResource(runtime, server, private=trusted))
        request = DummyRequest([b"debug", b"admin", page.encode()])
        request.method = method.encode()
        request.uri = f"/debug/admin/{page}".encode()
        request.path = request.uri  # type: ignore[attr-defined]
        request.client = UNIXAddress(None)
        body = getChildForRequest(router, request).render(request)
        return request.responseCode or 200, body

    def test_trusted_needs_no_token(self) -> None:
        """
        On the admin socket (trusted) a peer with no token is served; the
        same request elsewhere is refused.
        """
        code, body = self.request(trusted=True)
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["pid"], 4242)
        code, _ = self.request(trusted=False)
        self.assertEqual(code, 401)


class CtlNodeTests(SynchronousTestCase):
    def test_unix_nodes(self) -> None:
        """
        C{unix:PATH} and C{unix:PATH:/prefix}, normalized to the second.
        """
        self.assertEqual(normalize_node("unix:/run/g/admin.sock"), "unix:/run/g/admin.sock:/debug/admin")
        self.assertEqual(
            normalize_node("unix:/run/g/admin.sock:/ops/status"), "unix:/run/g/admin.sock:/ops"
        )
        self.assertEqual(split_unix_node("unix:/run/g/admin.sock:/ops"), ("/run/g/admin.sock", "/ops"))
        with self.assertRaises(UsageError):
            normalize_node("unix:admin.sock")

    def test_unix_ports_in_status(self) -> None:
        """
        A server's UNIX socket shows in C{list} as C{unix:PATH}.
        """
        status = NodeStatus.from_json(
            "n",
            {
                "pid": 1,
                "generation": 2,
                "servers": [
                    {"name": "s1", "ports": [{"port": 8100, "tls": False}, {"unix": "/run/s1.sock", "tls": False}]}
                ],
            },
        )
        self.assertEqual(
            status.servers[0].ports, (PortStatus(port=8100), PortStatus(unix="/run/s1.sock"))
        )
        self.assertIn("8100, unix:/run/s1.sock", list_table([status]))


class MasterHoldTests(TempDir):
    def test_master_binds_a_unix_socket_a_new_worker_needs(self) -> None:
        """
        A new worker whose config adds a UNIX socket asks its master for it
        (the spec travels as JSON, path included): the master binds it with
        the server's mode and will remove it at its final shutdown.
        """
        from graceful._worker_group import WorkerGroup

        directory = self.tempdir()
        path = str(directory / "new.sock")
        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=1)
        runtime.settings.workers = 2
        runtime.server("web").set_unix_socket(path, mode=0o666)
        group = WorkerGroup(runtime.core, 2)
        group.starter._hold([ListenSpec("web", False, 0, "", 0, path)])
        [held] = group.sockets
        self.addCleanup(held.close)
        self.assertEqual(held.spec, ListenSpec("web", False, 0, "", 0, path))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o666)
        self.assertEqual(runtime.unix_files, {path: os.stat(path).st_ino})
