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
from typing import Any, Callable

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from graceful.admin.resource import AdminResource
from graceful._config import parse_config
from graceful.ctl.cli import NodeStatus, UsageError, list_table, normalize_node, split_unix_node
from graceful._errors import ConfigError
from graceful.handoff.messages import Accepted
from graceful.http.routing import Router
from graceful.process.runtime import Runtime
from graceful._sockets import (
    ListeningSocket,
    InheritedSockets,
    ListenSpec,
    bind_unix_socket,
    listen_environment,
    remove_unix_socket,
    socket_inode,
)
from graceful._status import PortStatus
from graceful.testing import FakeOldProcess, MemoryEnvironment, memory_runtime


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
        inherited = InheritedSockets([ListeningSocket(fd, "s1/unix/0")])
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


class SocketFileOwnerTests(TempDir):
    """
    Who removes a UNIX socket file: the last process holding its socket, at
    its final shutdown.  A worker never does (its master holds the socket),
    nor a process that handed the socket over.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.path = self.tempdir() / "s1.sock"

    def runtime(self, **kwargs: Any) -> Runtime:
        runtime = memory_runtime(self.reactor, **kwargs)

        def release() -> None:
            for server in runtime.servers.values():
                server.release_prepared()

        self.addCleanup(release)
        return runtime

    def handed(self) -> InheritedSockets:
        """
        The socket at C{self.path} as an older generation (or the master)
        passes it: bound there, handed over as C{s1/unix/0}.
        """
        sock = self.bind(self.path)
        return InheritedSockets([ListeningSocket(os.dup(sock.fileno()), "s1/unix/0")])

    def worker(self, inherited: InheritedSockets) -> Runtime:
        environment = MemoryEnvironment(parent=77)
        return self.runtime(
            environment=environment,
            old_process=FakeOldProcess(pid=77),
            inherited=inherited,
            worker_slot=0,
        )

    def test_worker_keeps_the_file_it_serves(self) -> None:
        runtime = self.worker(self.handed())
        server = runtime.server("s1")
        server.set_unix_socket(str(self.path))
        server.prepare()
        self.assertEqual(runtime.unix_files, {})
        self.successResultOf(runtime.leave())
        self.assertTrue(self.path.exists())

    def test_worker_keeps_a_file_no_server_asks_for(self) -> None:
        """
        A worker closes an inherited UNIX socket its config no longer
        names, but the file stays: its master still holds the socket.
        """
        inherited = self.handed()
        [handed] = inherited.sockets
        runtime = self.worker(inherited)
        runtime.serving_started()
        self.assertRaises(OSError, os.fstat, handed.fd)
        self.assertTrue(self.path.exists())

    def test_last_holder_removes_a_file_no_server_asks_for(self) -> None:
        """
        A new generation serving alone that no longer names an inherited
        UNIX socket is its last holder once it serves: the file goes.
        """
        runtime = self.runtime(old_process=FakeOldProcess(), inherited=self.handed())
        runtime.serving_started()
        self.assertFalse(self.path.exists())

    def test_new_master_removes_a_file_no_server_asks_for(self) -> None:
        """
        With workers, the master is that last holder: it removes the file
        of an inherited UNIX socket its config dropped.
        """
        runtime = self.runtime(old_process=FakeOldProcess(), inherited=self.handed())
        runtime.settings.workers = 2
        runtime.serving_started()
        self.assertEqual(runtime._the_role().name, "master")
        self.assertFalse(self.path.exists())

    def test_kept_at_a_handover(self) -> None:
        runtime = self.runtime()
        runtime.server("s1").set_unix_socket(str(self.path))
        runtime.server("s1").prepare()
        runtime.restart()
        runtime.core.environment.spawner.last.report_ready()  # type: ignore[attr-defined]
        self.successResultOf(runtime.core.when_exited())
        self.assertTrue(self.path.exists())

    def test_removed_at_the_final_shutdown(self) -> None:
        runtime = self.runtime()
        runtime.server("s1").set_unix_socket(str(self.path))
        runtime.server("s1").prepare()
        self.successResultOf(runtime.shutdown())
        self.assertFalse(self.path.exists())


class MasterHoldTests(TempDir):
    def test_master_binds_a_unix_socket_a_new_worker_needs(self) -> None:
        """
        A new worker whose config adds a UNIX socket asks its master for it
        (the spec travels as JSON, path included): the master binds it with
        the server's mode and will remove it at its final shutdown.
        """
        from graceful.workers.group import WorkerGroup

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


class _WSGIReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} runs the call at once, so a
    WSGI app answers within the request (its pool is patched to run the
    app at once too).
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def environ_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    "A WSGI app that answers the environ's address keys as JSON."
    start_response("200 OK", [("Content-Type", "application/json")])
    keys = ("SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT", "PATH_INFO")
    return [json.dumps({key: environ.get(key) for key in keys}).encode()]


class WSGIOnUnixSocketTests(TempDir):
    """
    A server's WSGI app on a UNIX socket, where neither end has a host or a
    port: the environ gets uvicorn's and gunicorn's values instead of the
    500 that twisted.web.wsgi's AttributeError made of every request.
    """

    def serve(self, raw: bytes, unix: bool = True) -> tuple[int, dict[str, Any]]:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from .http.test_routing import HTTPConnection

        path = str(self.tempdir() / "wsgi.sock")
        from graceful.http import wsgi_native

        from .http.test_routing import SyncThreadPool

        self.patch(wsgi_native, "WorkerThreads", lambda threads: SyncThreadPool())
        runtime = Runtime(reactor=_WSGIReactor(), environ={}, pid=1)
        server = runtime.server("legacy")
        server.mount_wsgi("/", environ_app)
        # twisted.web's WSGI path (the native channel's environ is tested in
        # tests/unit/http/test_wsgi_native.py).
        server.set_http_impl("twisted")
        server.set_unix_socket(path)
        server.prepare()
        server.serve()
        for listener in server.listeners:
            self.addCleanup(listener.port.connectionLost, None)
        assert server.site is not None
        if unix:
            ends: dict[str, Any] = {
                "hostAddress": UNIXAddress(path),
                "peerAddress": UNIXAddress(None),
            }
        else:
            ends = {
                "hostAddress": IPv4Address("TCP", "127.0.0.1", 8100),
                "peerAddress": IPv4Address("TCP", "127.0.0.1", 40000),
            }
        connection = HTTPConnection(server.site, StringTransport(**ends))
        connection.send(raw)
        response = connection.only_response()
        body = json.loads(response.body) if response.status == 200 else {}
        return response.status, body

    def test_host_header(self) -> None:
        """
        C{curl --unix-socket S http://localhost:8080/x}: the name and port
        of the C{Host} header, and no client address.
        """
        status, environ = self.serve(b"GET /x HTTP/1.1\r\nHost: localhost:8080\r\n\r\n")
        self.assertEqual(
            (status, environ),
            (200, {"SERVER_NAME": "localhost", "SERVER_PORT": "8080", "REMOTE_ADDR": "",
                   "REMOTE_PORT": "", "PATH_INFO": "/x"}),
        )

    def test_no_host_header(self) -> None:
        """
        HTTP/1.0 without C{Host}: C{localhost}, port 80, so that a URL the
        app rebuilds from the environ is C{http://localhost/...}.
        """
        status, environ = self.serve(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual((status, environ["SERVER_NAME"], environ["SERVER_PORT"]),
                         (200, "localhost", "80"))
        self.assertEqual(environ["REMOTE_ADDR"], "")

    def test_tcp_unchanged(self) -> None:
        """
        On a TCP port the environ has the connection's real addresses.
        """
        status, environ = self.serve(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", unix=False)
        self.assertEqual(
            (status, environ["SERVER_NAME"], environ["SERVER_PORT"], environ["REMOTE_ADDR"]),
            (200, "example.com", "8100", "127.0.0.1"),
        )


def other_group() -> tuple[str, int]:
    """
    A group this process may give a file to that is not its own: any group
    for root (C{nogroup} where there is one), else one it is a member of.
    """
    import grp

    own = os.getegid()
    if os.geteuid() == 0:
        groups = sorted(grp.getgrall(), key=lambda g: g.gr_name != "nogroup")
        candidates = [(g.gr_name, g.gr_gid) for g in groups]
    else:
        candidates = []
        for gid in os.getgroups():
            try:
                candidates.append((grp.getgrgid(gid).gr_name, gid))
            except KeyError:
                pass
    for name, gid in candidates:
        if gid != own:
            return name, gid
    raise SkipTest("no group other than the process's own to give a socket to")


class GroupTests(TempDir):
    """
    C{unix_socket_group}: the socket file's group, so that nginx's group may
    connect through the mode's group bits (the default group is the
    process's, which nginx is seldom in).
    """

    def test_unix_group(self) -> None:
        """
        A name is looked up, a number taken as it is (chown(1) does too: a
        container's groups often have no name); anything else is one line.
        """
        from graceful._sockets import unix_group

        name, gid = other_group()
        self.assertEqual(unix_group(name), gid)
        self.assertEqual(unix_group(gid), gid)
        self.assertEqual(unix_group(str(gid)), gid)
        self.assertEqual(unix_group(54321), 54321)
        for bad, message in [
            ("no-such-group-here", "UNIX socket group 'no-such-group-here' does not exist"),
            ("", "UNIX socket group must be a group name or number, not ''"),
            (-1, "UNIX socket group must be a group name or number, not -1"),
            (True, "UNIX socket group must be a group name or number, not True"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                unix_group(bad)
            self.assertEqual(str(caught.exception), message)

    def test_bind_gives_the_file_to_the_group(self) -> None:
        _, gid = other_group()
        path = self.tempdir() / "s1.sock"
        sock = bind_unix_socket(str(path), 0o660, gid)
        self.addCleanup(sock.close)
        st = os.stat(path)
        self.assertEqual((st.st_gid, stat.S_IMODE(st.st_mode)), (gid, 0o660))

    def test_server_binds_with_its_group(self) -> None:
        """
        C{set_unix_socket(path, group=...)}: the server's socket file has
        that group once prepared; an unknown group is refused at the call.
        """
        name, gid = other_group()
        path = str(self.tempdir() / "web.sock")
        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=1)
        server = runtime.server("web")
        with self.assertRaises(ConfigError) as caught:
            server.set_unix_socket(path, group="no-such-group-here")
        self.assertEqual(
            str(caught.exception), "UNIX socket group 'no-such-group-here' does not exist"
        )
        server.set_unix_socket(path, mode=0o660, group=name)
        self.assertEqual(server.unix_socket_group, gid)
        server.prepare()
        self.addCleanup(server.release_prepared)
        self.assertEqual(os.stat(path).st_gid, gid)

    def test_config_key(self) -> None:
        """
        C{unix_socket_group} beside C{unix_socket_mode}, a name or a number,
        reaches the server; an unknown one is a line naming the key.
        """
        import tomllib

        from twisted.web.resource import Resource

        from graceful._config import apply_config

        name, gid = other_group()
        directory = self.tempdir()
        path = directory / "graceful.toml"
        config = parse_config(tomllib.loads(
            f'[servers.s1]\napp = "m:a"\nunix_sockets = ["s1.sock"]\nunix_socket_group = "{name}"\n'
            f'[servers.s2]\napp = "m:a"\nunix_sockets = ["s2.sock"]\nunix_socket_group = {gid}\n'
            '[servers.s3]\napp = "m:a"\nunix_sockets = ["s3.sock"]\n'
        ), path)
        self.assertEqual([s.unix_socket_group for s in config.servers], [gid, gid, None])
        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=1)
        apps = {server: ("resource", Resource()) for server in ("s1", "s2", "s3")}
        apply_config(config, runtime, apps)
        self.assertEqual(runtime.server("s1").unix_socket_group, gid)
        self.assertIsNone(runtime.server("s3").unix_socket_group)
        for value, message in [
            ('"no-such-group-here"', "UNIX socket group 'no-such-group-here' does not exist"),
            ("[33]", 'must be a group name or number such as "www-data", not [33]'),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_config(tomllib.loads(
                    '[servers.s1]\napp = "m:a"\nunix_sockets = ["s1.sock"]\n'
                    f"unix_socket_group = {value}\n"
                ), path)
            self.assertIn(f"{path}: servers.s1.unix_socket_group", str(caught.exception))
            self.assertTrue(str(caught.exception).endswith(message), str(caught.exception))


class AdminSocketGenerationTests(TempDir):
    """
    Who accepts on the private admin socket: the first generation at once;
    a later one only once the older generation has released, so that a new
    process which may still fail its start never answers there.
    """

    def runtime(self, old: FakeOldProcess | None) -> tuple[Runtime, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        reactor.running = True
        runtime = memory_runtime(reactor, old_process=old) if old else memory_runtime(reactor)
        runtime.set_admin_socket(str(self.tempdir() / "admin.sock"))
        runtime.admin_socket.site = lambda: Site(Resource())
        runtime.admin_socket.prepare()
        self.addCleanup(lambda: runtime.core.admin_port and runtime.core.admin_port.stopListening())
        return runtime, reactor

    def accepting(self, runtime: Runtime, reactor: MemoryReactorClock) -> bool:
        port = runtime.core.admin_port
        return port is not None and port in reactor.getReaders()

    def test_first_generation_at_once(self) -> None:
        runtime, reactor = self.runtime(None)
        runtime.admin_socket.serve()
        self.assertTrue(self.accepting(runtime, reactor))

    def test_new_generation_after_the_release(self) -> None:
        """
        Listening (so that a restart would hand it on) but not accepting
        while starting, nor once ready and accepted; accepting once released.
        """
        old = FakeOldProcess()
        runtime, reactor = self.runtime(old)
        runtime.admin_socket.serve()
        self.assertIsNotNone(runtime.core.admin_port)
        self.assertIn("graceful-admin", [s.name for s in runtime.core.passed_sockets()])
        self.assertFalse(self.accepting(runtime, reactor))
        runtime.serving_started()  # no ASGI app: reports ready at once
        self.assertEqual(old.reported, ["ready"])
        old.accept(Accepted(restarts=1, at=2.0))
        self.assertFalse(self.accepting(runtime, reactor))
        old.release(3.0)
        self.assertTrue(self.accepting(runtime, reactor))

    def test_new_generation_whose_start_fails(self) -> None:
        """
        An ASGI startup that fails: the process reports the error and
        exits, never having accepted on the admin socket.
        """
        old = FakeOldProcess()
        runtime, reactor = self.runtime(old)
        lifespan = FailingLifespan()
        runtime.add_lifespan(lifespan)
        runtime.admin_socket.serve()
        runtime.serving_started()
        self.assertEqual(old.reported, ["error ASGI lifespan startup failed: told to fail"])
        self.assertEqual(runtime.core.environment.exits, [1])  # type: ignore[attr-defined]
        self.assertFalse(self.accepting(runtime, reactor))

    def test_old_generation_died(self) -> None:
        """
        An older generation that dies before it releases leaves us the
        speaker: accept.
        """
        old = FakeOldProcess()
        runtime, reactor = self.runtime(old)
        runtime.admin_socket.serve()
        runtime.serving_started()
        old.close()
        self.assertTrue(self.accepting(runtime, reactor))


class FailingLifespan:
    def startup(self) -> Deferred[None]:
        return fail(RuntimeError("told to fail"))

    def shutdown(self) -> Deferred[None]:
        return succeed(None)
