"""
graceful behind a real nginx (Debian's, started by the test on a free port),
by TCP and by UNIX socket, and the private admin socket; real processes.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from harness.processes import Process
from tests.support import (
    ROOT,
    WAIT,
    Load,
    ServerProcess,
    child_environment,
    free_port,
    get,
    process_alive,
    wait_until,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RESTARTS = 5


class Nginx:
    """
    An nginx of the test's own: config, logs and temp files in C{directory},
    in the foreground, killed by its pid.
    """

    def __init__(self, directory: Path, upstream: str, locations: str = "") -> None:
        if not os.access(NGINX, os.X_OK):
            raise SkipTest(f"nginx is not installed ({NGINX}); .ci/run installs nginx-light")
        self.directory = directory
        self.port = free_port()
        # As root, nginx's workers would run as nobody, who cannot reach a
        # 0660 socket in the test's private directory.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.getuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {directory}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (directory / "nginx.conf").write_text(
            f"{user}worker_processes 1;\nevents {{ worker_connections 512; }}\n"
            "http {\n    access_log off;\n" + temp +
            f"    server {{\n        listen 127.0.0.1:{self.port};\n"
            f"        location / {{ proxy_pass {upstream}; }}\n{locations}    }}\n}}\n"
        )
        self.process = Process(
            [
                NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"),
                "-g", f"daemon off; pid {directory}/nginx.pid; error_log stderr;",
            ],
            cwd=directory,
            log=directory / "nginx.log",
            name="nginx",
        ).start()

    def wait_serving(self) -> None:
        def up() -> bool:
            if self.process.wait_exit(0) is not None:
                raise AssertionError(f"nginx exited: {self.process.log()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_until(up, what="nginx to listen")

    def stop(self) -> None:
        # The master, then any worker it left (same session).
        self.process.kill()


def admin_socket_request(path: Path, method: str, page: str) -> tuple[int, Any]:
    """
    One request to the private admin socket, with no token.
    """

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(10)
            self.sock.connect(str(path))

    conn = Connection("localhost", timeout=10)
    try:
        conn.request(method, f"/debug/admin/{page}", body=b"" if method == "POST" else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def unix_get(path: Path, page: str = "/pid") -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"GET {page} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].split()[1:2] == [b"200"], head
    return body


class Base(SynchronousTestCase):
    def start_on_unix_sockets(self, directory: Path) -> tuple[ServerProcess, Path, Path]:
        """
        graceful serving on C{app.sock} with its admin on C{admin.sock}, both
        in C{directory}; once it answers.
        """
        app_socket, admin_socket = directory / "app.sock", directory / "admin.sock"
        proc = self.start_graceful(
            directory,
            f'unix_sockets = ["{app_socket}"]\n',
            graceful=f'admin_socket = "{admin_socket}"\n',
        )
        wait_until(lambda: unix_get(app_socket), what="graceful to serve on its UNIX socket")
        return proc, app_socket, admin_socket

    def tempdir(self) -> Path:
        # Short: a UNIX socket path must fit in 107 bytes.
        directory = tempfile.TemporaryDirectory(prefix="gx-", dir="/tmp")
        self.addCleanup(directory.cleanup)
        return Path(directory.name)

    def start_graceful(self, directory: Path, server: str, graceful: str = "") -> ServerProcess:
        config = directory / "graceful.toml"
        config.write_text(
            f"[graceful]\nready_timeout = 10.0\ndrain_timeout = 10.0\n{graceful}\n"
            f'[servers.web]\napp = "tests.integration.programs.pages:root"\nadmin = "/debug/admin"\n{server}'
        )
        pidfile = directory / "twistd.pid"
        proc = ServerProcess.twistd(
            "-n", f"--pidfile={pidfile}", "graceful", "--config", str(config), cwd=ROOT
        )
        proc.pidfiles.append(pidfile)
        proc.start()
        self.addCleanup(proc.stop)
        self.pidfile = pidfile
        return proc

    def start_nginx(self, directory: Path, upstream: str) -> Nginx:
        nginx = Nginx(directory, upstream)
        self.addCleanup(nginx.stop)
        nginx.wait_serving()
        return nginx

    def serving_pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def restarts_under_load(self, proc: ServerProcess, nginx: Nginx, ask_pid: Any) -> None:
        """
        RESTARTS restarts (SIGUSR1, each awaited) while clients load the app
        through nginx: no request fails, and every generation served.
        """
        with Load([("close", nginx.port), ("keepalive", nginx.port)], max_seconds=90) as load:
            load.wait_for(50)
            for _ in range(RESTARTS):
                old = ask_pid()
                proc.signal(old, signal.SIGUSR1)
                new = wait_until(
                    lambda: (lambda p: p if p != old else None)(ask_pid()),
                    what=f"a new process to replace {old}",
                )
                proc.remember(new)
                load.wait_for(20)
        self.assertEqual(load.failures, [])
        self.assertGreaterEqual(len(load.pids), RESTARTS + 1)


class BehindNginxTests(Base):
    def test_tcp_upstream_restarts_under_load(self) -> None:
        """
        nginx's default C{proxy_pass http://127.0.0.1:PORT;}: five restarts
        under load through nginx, no failed request.
        """
        directory = self.tempdir()
        port = free_port()
        proc = self.start_graceful(directory, f'host = "127.0.0.1"\nports = [{port}]\n')
        wait_until(lambda: get(port, "/pid")[0] == 200, what="graceful to serve")
        nginx = self.start_nginx(directory, f"http://127.0.0.1:{port}")
        self.restarts_under_load(proc, nginx, lambda: int(get(nginx.port, "/pid")[2].split()[0]))

    def test_tcp_proxied_tokenless_admin_is_refused(self) -> None:
        """
        Through nginx every client connects from loopback and sends
        C{Host: 127.0.0.1:PORT}: a token-less admin must still refuse it.
        """
        directory = self.tempdir()
        port = free_port()
        self.start_graceful(directory, f'host = "127.0.0.1"\nports = [{port}]\n')
        wait_until(lambda: get(port, "/pid")[0] == 200, what="graceful to serve")
        nginx = self.start_nginx(directory, f"http://127.0.0.1:{port}")
        for method, page in (("GET", "/debug/admin/status"), ("POST", "/debug/admin/shutdown")):
            code, _, body = get(nginx.port, page, method=method)
            self.assertEqual(code, 401, (method, page, body))

    def test_unix_upstream_and_admin_socket(self) -> None:
        """
        C{proxy_pass http://unix:PATH:;}: five restarts under load through
        nginx, no failed request; the proxied admin is refused; the admin
        socket answers without a token (status, restart) and
        C{graceful ctl --node unix:PATH} reads it.
        """
        directory = self.tempdir()
        proc, app_socket, admin_socket = self.start_on_unix_sockets(directory)
        nginx = self.start_nginx(directory, f"http://unix:{app_socket}:")
        self.restarts_under_load(proc, nginx, lambda: int(unix_get(app_socket).split()[0]))

        for method, page in (("GET", "/debug/admin/status"), ("POST", "/debug/admin/shutdown")):
            code, _, body = get(nginx.port, page, method=method)
            self.assertTrue(400 <= code < 500, (method, page, code, body))

        code, status = admin_socket_request(admin_socket, "GET", "status")
        self.assertEqual(code, 200)
        self.assertEqual(status["generation"], RESTARTS + 1)
        self.assertEqual(
            status["servers"][0]["ports"], [{"unix": str(app_socket), "tls": False}]
        )
        old = status["pid"]
        code, answer = admin_socket_request(admin_socket, "POST", "restart")
        if code == 200:  # within a second of the last restart: coalesced with it
            self.assertEqual(answer["coalesced"], True)
            time.sleep(max(0.0, 1.1 - answer["restarted_seconds_ago"]))
            code, answer = admin_socket_request(admin_socket, "POST", "restart")
        self.assertEqual((code, answer["next_generation"]), (202, RESTARTS + 2))
        wait_until(
            lambda: admin_socket_request(admin_socket, "GET", "status")[1]["generation"]
            == RESTARTS + 2,
            what="the restart asked for on the admin socket",
        )
        proc.remember(self.serving_pid())
        proc.wait_gone(old)

        ctl = subprocess.run(
            [sys.executable, "-m", "graceful", "ctl", "--node", f"unix:{admin_socket}", "status"],
            env=child_environment(),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        self.assertIn(f"unix:{admin_socket}:/debug/admin", ctl.stdout)
        self.assertIn(str(self.serving_pid()), ctl.stdout)


class UnixSocketLifetimeTests(Base):
    def test_kept_across_restarts_removed_at_shutdown(self) -> None:
        """
        The socket files are the same (inode, modification time) after three
        restarts, and both are gone once SIGTERM has shut the process down.
        """
        directory = self.tempdir()
        proc, app_socket, admin_socket = self.start_on_unix_sockets(directory)

        def identity(path: Path) -> tuple[int, int, int]:
            st = os.stat(path)
            return st.st_ino, st.st_mtime_ns, st.st_mode

        before = identity(app_socket), identity(admin_socket)
        self.assertEqual(before[0][2] & 0o777, 0o660)
        self.assertEqual(before[1][2] & 0o777, 0o600)
        for _ in range(3):
            old = int(unix_get(app_socket).split()[0])
            proc.signal(old, signal.SIGUSR1)
            new = wait_until(
                lambda: (lambda p: p if p != old else None)(int(unix_get(app_socket).split()[0])),
                what=f"a new process to replace {old}",
            )
            proc.remember(new)
            proc.wait_gone(old)
        self.assertEqual((identity(app_socket), identity(admin_socket)), before)

        last = self.serving_pid()
        os.kill(last, signal.SIGTERM)
        wait_until(lambda: not process_alive(last), what="the server to shut down")
        self.assertFalse(app_socket.exists())
        self.assertFalse(admin_socket.exists())
