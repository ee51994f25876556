"""
A server's UNIX socket as nginx users set it up, in real processes: a WSGI
app answered through C{curl --unix-socket}, and C{unix_socket_group}, which
lets nginx workers of another user reach a 0660 socket, across restarts.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from harness.processes import Process
from tests.support import ROOT, ServerProcess, free_port, wait_until
from tests.unit.test_unix_sockets import other_group

CURL = shutil.which("curl")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def curl(args: list[str]) -> tuple[int, str]:
    """
    C{curl ARGS}: the HTTP status and the body; status 0 when curl failed.
    """
    assert CURL is not None
    done = subprocess.run(
        [CURL, "-s", "--max-time", "5", "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, timeout=10,
    )
    body, _, status = done.stdout.rpartition("\n")
    return (int(status) if done.returncode == 0 else 0), body


class UnixSocketOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        if CURL is None:
            raise SkipTest("curl is not installed")
        # Short: a UNIX socket path must fit in 107 bytes.
        directory = tempfile.TemporaryDirectory(prefix="gu-", dir="/tmp")
        self.addCleanup(directory.cleanup)
        self.directory = Path(directory.name)
        self.socket = self.directory / "app.sock"

    def start(self, server: str, graceful: str = "") -> ServerProcess:
        config = self.directory / "graceful.toml"
        config.write_text(
            f"[graceful]\nready_timeout = 10.0\ndrain_timeout = 10.0\n{graceful}\n"
            "[servers.legacy]\n"
            'app = "tests.integration.programs.wsgi_environ:app"\n'
            f'unix_sockets = ["{self.socket}"]\n{server}'
        )
        self.pidfile = self.directory / "twistd.pid"
        proc = ServerProcess.twistd(
            "-n", f"--pidfile={self.pidfile}", "graceful", "--config", str(config), cwd=ROOT
        )
        proc.pidfiles.append(self.pidfile)
        proc.start()
        self.addCleanup(proc.stop)
        return proc

    def environ(self, proc: ServerProcess, url: str = "http://localhost/x") -> dict[str, Any]:
        def answered() -> dict[str, Any] | None:
            if not proc.running():
                raise AssertionError(f"graceful exited: {proc.log()}")
            status, body = curl(["--unix-socket", str(self.socket), url])
            if status == 0:
                return None  # not listening yet
            self.assertEqual(status, 200, proc.log())
            return dict(json.loads(body))

        return dict(wait_until(answered, what="the WSGI app on its UNIX socket"))

    def restart(self, proc: ServerProcess) -> int:
        old = int(self.pidfile.read_text())
        proc.signal(old, signal.SIGUSR1)
        new = wait_until(
            lambda: (lambda pid: pid if pid != old else None)(self.environ(proc)["pid"]),
            what="the new process to answer",
        )
        proc.remember(new)
        proc.wait_gone(old)
        return int(new)

    def test_wsgi_app_answers_curl_on_a_unix_socket(self) -> None:
        """
        C{curl --unix-socket}: the app answers, with the Host header's name
        and port and no client address, before and after a restart (it was
        a 500 for every request).
        """
        proc = self.start("")
        expected = {"SERVER_NAME": "localhost", "SERVER_PORT": "80", "REMOTE_ADDR": "",
                    "REMOTE_PORT": "", "PATH_INFO": "/x"}
        first = self.environ(proc)
        self.assertEqual({k: v for k, v in first.items() if k != "pid"}, expected)
        self.restart(proc)
        again = self.environ(proc, "http://localhost:8080/x")
        self.assertEqual((again["SERVER_NAME"], again["SERVER_PORT"]), ("localhost", "8080"))

    def test_group_of_the_socket_file(self) -> None:
        """
        C{unix_socket_group}: the socket file has that group and mode 0660
        from the start, and keeps both, and its inode, across a restart.
        """
        name, gid = other_group()
        proc = self.start(f'unix_socket_group = "{name}"\n')
        self.environ(proc)
        before = os.stat(self.socket)
        self.assertEqual((before.st_gid, stat.S_IMODE(before.st_mode)), (gid, 0o660))
        self.restart(proc)
        after = os.stat(self.socket)
        self.assertEqual((after.st_gid, after.st_ino), (gid, before.st_ino))

    def test_group_with_workers(self) -> None:
        """
        With workers the master binds the socket and the workers adopt it:
        the file has the group, and both workers answer on it.
        """
        name, gid = other_group()
        proc = self.start(f'unix_socket_group = "{name}"\n', "workers = 2\n")
        pids = wait_until(
            lambda: (lambda seen: seen if len(seen) == 2 else None)(
                {self.environ(proc)["pid"] for _ in range(20)}
            ),
            what="both workers to answer",
        )
        self.assertNotIn(int(self.pidfile.read_text()), pids)  # the master serves nothing
        self.assertEqual(os.stat(self.socket).st_gid, gid)

    def test_unknown_group_is_one_line(self) -> None:
        """
        An unknown group: one line naming the key and the group, exit status
        1, and no socket file left.
        """
        proc = self.start('unix_socket_group = "no-such-group-here"\n')
        self.assertEqual(proc.wait_exit(15), 1, proc.log())
        lines = [line for line in proc.log().splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, proc.log())
        self.assertIn("servers.legacy.unix_socket_group", lines[0])
        self.assertIn("'no-such-group-here' does not exist", lines[0])
        self.assertFalse(self.socket.exists())

    def test_nginx_of_another_user_reaches_the_socket_through_its_group(self) -> None:
        """
        nginx's workers run as C{nobody:nogroup}, graceful as root: with
        C{unix_socket_group = "nogroup"} they reach its 0660 socket (without
        it: 502), before and after a restart.
        """
        if os.geteuid() != 0:
            raise SkipTest("needs root, to run nginx's workers as another user")
        if not os.access(NGINX, os.X_OK):
            raise SkipTest(f"nginx is not installed ({NGINX})")
        try:
            pwd.getpwnam("nobody")
            grp.getgrnam("nogroup")
        except KeyError:
            raise SkipTest("no user nobody or group nogroup")
        # nobody may pass through the directory, not list or write it.
        os.chmod(self.directory, 0o711)
        proc = self.start('unix_socket_group = "nogroup"\n')
        self.environ(proc)
        port = self.start_nginx()
        url = f"http://127.0.0.1:{port}/x"
        status, body = wait_until(lambda: (lambda r: r if r[0] else None)(curl([url])),
                                  what="nginx to answer")
        self.assertEqual(status, 200, body)
        new = self.restart(proc)
        status, body = curl([url])
        self.assertEqual((status, json.loads(body)["pid"]), (200, new))

    def start_nginx(self) -> int:
        port = free_port()
        temp = "".join(
            f"    {kind}_temp_path {self.directory}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (self.directory / "nginx.conf").write_text(
            "user nobody nogroup;\nworker_processes 1;\nevents { worker_connections 64; }\n"
            "http {\n    access_log off;\n" + temp +
            f"    server {{\n        listen 127.0.0.1:{port};\n"
            f"        location / {{ proxy_pass http://unix:{self.socket}:; }}\n    }}\n}}\n"
        )
        nginx = Process(
            [NGINX, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
             "-g", f"daemon off; pid {self.directory}/nginx.pid; error_log stderr;"],
            cwd=self.directory, log=self.directory / "nginx.log", name="nginx",
        ).start()
        self.addCleanup(nginx.kill)

        def listening() -> bool:
            if nginx.wait_exit(0) is not None:
                raise AssertionError(f"nginx exited: {nginx.log()}")
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(listening, what="nginx to listen")
        return port
