"""
Integration tests of the foundation: real processes started the ways users
start them (the examples, C{twistd -n}, C{twistd} as a daemon, C{twist}),
real HTTP and HTTPS clients on every port, the GoFrame log lines, and the
graceful shutdown every shutdown signal asks for.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from harness.processes import script
from tests.support import (
    CERT,
    EXAMPLES,
    KEY,
    ServerProcess,
    answers,
    child_environment,
    free_ports,
    get,
    listening_pids,
    pid_of,
    process_alive,
    refuses,
    wait_until,
)

#: How long the drained request of the SIGTERM test takes, in seconds.
SLOW = 2.0


class InFlight(threading.Thread):
    """
    One request made from a thread, so the test can signal the server while
    it is in flight.
    """

    def __init__(self, port: int, path: str, tls: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.tls = port, path, tls
        self.result: tuple[int, dict[str, str], bytes] | None = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        try:
            self.result = get(self.port, self.path, tls=self.tls, timeout=15)
        except BaseException as e:
            self.error = e
        self.finished_at = time.monotonic()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        self.join(15)
        assert not self.is_alive(), f"request {self.path} on {self.port} still running"
        assert self.error is None, f"request {self.path} on {self.port} failed: {self.error!r}"
        assert self.result is not None
        return self.result


class ProcessTestCase(SynchronousTestCase):
    """
    Temporary folders, config files and processes cleaned up after each test.
    """

    def folder(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="graceful-test-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def config(self, folder: Path, text: str) -> Path:
        path = folder / "graceful.toml"
        path.write_text(text)
        return path

    def launch(self, proc: ServerProcess) -> ServerProcess:
        self.addCleanup(proc.stop)
        return proc.start()

    def wait_serving(self, proc: ServerProcess, plain: list[int], tls: list[int] = []) -> None:
        for port in plain:
            wait_until(lambda: answers(port), what=f"http on {port}\n{proc.log()}")
        for port in tls:
            wait_until(lambda: answers(port, tls=True), what=f"https on {port}\n{proc.log()}")

    def assert_in_log(self, proc: ServerProcess, *lines: str) -> None:
        log = proc.log()
        for line in lines:
            self.assertIn(line, log, f"log line {line!r} missing from:\n{log}")

    def wait_for_log(self, proc: ServerProcess, line: str, count: int = 1) -> None:
        wait_until(
            lambda: proc.log().count(line) >= count,
            timeout=10,
            what=f"{count} x {line!r} in the log",
        )

    def assert_closed(self, *ports: int) -> None:
        """
        Nothing listens on C{ports} any more.
        """
        for port in ports:
            wait_until(lambda: refuses(port), timeout=5, what=f"port {port} to refuse")
            self.assertEqual(listening_pids(port), set(), f"port {port}")

    def assert_drains(
        self, proc: ServerProcess, pid: int, signum: int, plain: list[int], tls: list[int],
        seconds: float,
    ) -> None:
        """
        A slow request on every port, in flight when C{signum} arrives: new
        connections are refused while they run, they complete with 200 and
        C{Connection: close}, and C{pid} logs its shutdown lines.
        """
        requests = [InFlight(port, f"/slow?seconds={seconds}") for port in plain]
        requests += [InFlight(port, f"/slow?seconds={seconds}", tls=True) for port in tls]
        already = proc.log().count(f"{pid}: slow request started")
        for request in requests:
            request.start()
        self.wait_for_log(proc, f"{pid}: slow request started", already + len(requests))
        os.kill(pid, signum)
        for port in plain + tls:
            wait_until(lambda: refuses(port), timeout=seconds, what=f"{port} to refuse")
        refused_at = time.monotonic()
        self.assertTrue(
            all(r.finished_at is None or r.finished_at > refused_at for r in requests),
            "the ports should refuse while the slow requests are still in flight",
        )
        for request in requests:
            status, headers, body = request.response()
            self.assertEqual(status, 200, body)
            self.assertEqual(headers.get("connection"), "close")
            self.assertEqual(body, f"{pid} slow\n".encode())
        self.assert_in_log(proc, f"{pid}: server shutting down")
        wait_until(lambda: f"{pid}: all servers shutdown" in proc.log(), timeout=5,
                   what="the last log line")


def three_servers(ports: list[int]) -> str:
    """
    s1: a resource on two HTTP ports; s2: a resource factory on an HTTP and
    an HTTPS port; s3: a resource whose C{ports} serve HTTPS (cert and no
    https_ports, as in GoFrame).
    """
    p1, p2, p3, p4, p5 = ports
    return f"""
[graceful]
drain_timeout = 10.0
ready_timeout = 10.0

[servers.s1]
app = "tests.integration.fixtures.apps:root"
ports = [{p1}, {p2}]

[servers.s2]
app = "tests.integration.fixtures.apps:factory"
ports = [{p3}]
https_ports = [{p4}]
cert = "{CERT}"
key = "{KEY}"

[servers.s3]
app = "tests.integration.fixtures.apps:root"
ports = [{p5}]
cert = "{CERT}"
key = "{KEY}"
"""


def one_server(port: int, tls_port: int) -> str:
    return f"""
[graceful]
drain_timeout = 10.0

[servers.web]
app = "tests.integration.fixtures.apps:root"
ports = [{port}]
https_ports = [{tls_port}]
cert = "{CERT}"
key = "{KEY}"
"""


class TwistdForegroundTests(ProcessTestCase):
    """
    C{twistd -n graceful --config FILE}, with twistd's default pidfile.
    """

    def test_serves_restarts_and_shuts_down(self) -> None:
        """
        Every port of three servers answers its app, HTTPS verified against
        the test CA; twistd's default C{twistd.pid} names the serving process
        before and after a SIGUSR1 restart; SIGINT then drains the new process
        and removes the pidfile.
        """
        cwd = self.folder()
        ports = free_ports(5)
        p1, p2, p3, p4, p5 = ports
        config = self.config(cwd, three_servers(ports))
        proc = self.launch(ServerProcess.twistd("-n", "graceful", "--config", str(config), cwd=cwd))
        self.wait_serving(proc, [p1, p2, p3], [p4, p5])
        old = proc.process.pid
        pidfile = cwd / "twistd.pid"
        proc.pidfiles.append(pidfile)

        def answers_from(pid: int) -> None:
            for port, tls, path in (
                (p1, False, "/"), (p2, False, "/pid"), (p3, False, "/a/b"),
                (p4, True, "/"), (p5, True, "/pid"),
            ):
                status, _, body = get(port, path, tls=tls)
                self.assertEqual((status, body), (200, f"{pid} resource\n".encode()), port)

        answers_from(old)
        self.assertEqual(pidfile.read_text().strip(), str(old))
        self.assert_in_log(
            proc,
            *[f"{old}: http server started listening on [:{p}]" for p in (p1, p2, p3)],
            *[f"{old}: https server started listening on [:{p}]" for p in (p4, p5)],
        )

        proc.signal(old, signal.SIGUSR1)
        new = wait_until(
            lambda: (pid := int(pidfile.read_text())) != old and pid,
            what="the pidfile to name the new process",
        )
        proc.remember(new)
        self.assertEqual(proc.wait_exit(), 0, proc.log())
        self.assertFalse(process_alive(old))
        answers_from(new)
        self.assert_in_log(
            proc,
            f"{old}: server reloading",
            f"{old}: all servers shutdown",
            *[f"{new}: http server reloaded listening on [:{p}]" for p in (p1, p2, p3)],
            *[f"{new}: https server reloaded listening on [:{p}]" for p in (p4, p5)],
        )

        self.assert_drains(proc, new, signal.SIGINT, [p1], [p4], seconds=1.0)
        proc.wait_gone(new, timeout=10)
        self.assertFalse(pidfile.exists(), "the pidfile outlived the process")
        self.assert_closed(*ports)


class AppKindTests(ProcessTestCase):
    """
    A config's C{app} may be a WSGI app or any resource, leaf or not.
    """

    def test_wsgi_app_and_leaf_resource(self) -> None:
        """
        C{twist graceful} with a WSGI app and a leaf resource (C{isLeaf}), each
        the app of a server, answers every path with them.
        """
        cwd = self.folder()
        wsgi_port, leaf_port = free_ports(2)
        config = self.config(cwd, f"""
[servers.legacy]
app = "tests.integration.fixtures.apps:wsgi_app"
ports = [{wsgi_port}]

[servers.leaf]
app = "tests.integration.fixtures.apps:leaf"
ports = [{leaf_port}]
""")
        proc = self.launch(ServerProcess.twist("--log-format=text", "graceful", "--config", str(config), cwd=cwd))
        self.wait_serving(proc, [wsgi_port, leaf_port])
        pid = proc.process.pid
        for path in ("/", "/a/b"):
            status, _, body = get(wsgi_port, path)
            self.assertEqual((status, body), (200, f"{pid} wsgi {path}\n".encode()), proc.log())
            status, _, body = get(leaf_port, path)
            self.assertEqual((status, body), (200, f"{pid} resource\n".encode()), proc.log())



class TwistdDaemonTests(ProcessTestCase):
    """
    C{twistd --pidfile P --logfile L graceful --config FILE}: a daemon.
    """

    def start_daemon(self) -> tuple[ServerProcess, Path, Path, int, int, int]:
        """
        Start the daemon; wait until it serves.  Returns the process, the
        pidfile, the log file, the HTTP and HTTPS ports, and the daemon's pid.
        """
        cwd = self.folder()
        port, tls_port = free_ports(2)
        config = self.config(cwd, one_server(port, tls_port))
        pidfile, logfile = cwd / "run" / "graceful.pid", cwd / "graceful.log"
        pidfile.parent.mkdir()
        proc = self.launch(ServerProcess.twistd(
            "--pidfile", str(pidfile), "--logfile", str(logfile),
            "graceful", "--config", str(config), cwd=cwd,
        ))
        proc.pidfiles.append(pidfile)
        self.assertEqual(proc.wait_exit(), 0, proc.log())
        daemon = proc.remember(wait_until(
            lambda: int(pidfile.read_text()), what="the daemon's pidfile"
        ))
        self.assertNotEqual(daemon, proc.process.pid)
        self.wait_serving(proc, [port], [tls_port])
        return proc, pidfile, logfile, port, tls_port, daemon

    def restart(self, proc: ServerProcess, pidfile: Path, old: int) -> int:
        """
        SIGUSR1 C{old}; the new process's pid, once the pidfile names it and
        the old one is gone.
        """
        proc.signal(old, signal.SIGUSR1)
        new = wait_until(
            lambda: (pid := int(pidfile.read_text())) != old and pid,
            what="the pidfile to name the new process",
        )
        proc.remember(new)
        proc.wait_gone(old)
        return int(new)

    def test_daemon(self) -> None:
        """
        twistd returns at once with status 0; the pidfile names the daemon,
        which logs to the log file and serves; after SIGUSR1 the pidfile names
        the new process and the old one is gone; SIGTERM then removes the
        pidfile and closes every port, and the new process's last lines are
        in the log file.
        """
        proc, pidfile, logfile, port, tls_port, daemon = self.start_daemon()
        self.assertEqual(pid_of(port), daemon)
        self.assertEqual(pid_of(tls_port, tls=True), daemon)
        log = logfile.read_text()
        self.assertIn(f"{daemon}: http server started listening on [:{port}]", log)
        self.assertIn(f"{daemon}: https server started listening on [:{tls_port}]", log)

        new = self.restart(proc, pidfile, daemon)
        self.assertEqual(pid_of(port), new)
        self.assertEqual(pid_of(tls_port, tls=True), new)

        os.kill(new, signal.SIGTERM)
        proc.wait_gone(new)
        self.assertFalse(pidfile.exists(), "the pidfile outlived the daemon")
        log = logfile.read_text()
        self.assertIn(f"{new}: server shutting down", log)
        self.assertIn(f"{new}: all servers shutdown", log)
        self.assert_closed(port, tls_port)

    def test_daemon_log_file_keeps_every_line(self) -> None:
        """
        Across a SIGUSR1 restart the log file keeps every line of both
        processes: the old one's last lines and the new one's first.
        """
        proc, pidfile, logfile, port, tls_port, daemon = self.start_daemon()
        new = self.restart(proc, pidfile, daemon)
        wait_until(lambda: f"{daemon}: all servers shutdown" in logfile.read_text(),
                   timeout=5, what="the old process's last line")
        log = logfile.read_text()
        for line in (
            f"{daemon}: server reloading",
            f"{daemon}: all servers shutdown",
            f"{new}: http server reloaded listening on [:{port}]",
            f"{new}: https server reloaded listening on [:{tls_port}]",
        ):
            self.assertIn(line, log, log)
        for line in log.splitlines():
            self.assertRegex(line, r"^(\d{4}-\d\d-\d\dT|\t)", f"garbled line in:\n{log}")


class ShutdownTests(ProcessTestCase):
    """
    SIGTERM, SIGINT, SIGQUIT and SIGHUP: stop accepting, finish what is in
    flight, exit 0.
    """

    def test_sigterm_drains(self) -> None:
        """
        C{twist graceful}: slow requests in flight on the HTTP and the HTTPS
        port when SIGTERM arrives complete with 200 and C{Connection: close};
        new connections are refused meanwhile; the exit status is 0.
        """
        cwd = self.folder()
        port, tls_port = free_ports(2)
        config = self.config(cwd, one_server(port, tls_port))
        proc = self.launch(ServerProcess.twist("--log-format=text", "graceful", "--config", str(config), cwd=cwd))
        self.wait_serving(proc, [port], [tls_port])
        pid = proc.process.pid
        self.assertEqual(pid_of(port), pid)
        self.assert_in_log(
            proc,
            f"{pid}: http server started listening on [:{port}]",
            f"{pid}: https server started listening on [:{tls_port}]",
        )
        self.assert_drains(proc, pid, signal.SIGTERM, [port], [tls_port], seconds=SLOW)
        self.assertEqual(proc.wait_exit(10), 0, proc.log())
        self.assert_closed(port, tls_port)

    def test_other_signals_drain(self) -> None:
        """
        SIGINT (C{twist}), SIGQUIT and SIGHUP (C{twistd -n}) each let a
        request in flight complete and exit 0; the three run side by side.
        """
        cases = []
        for signum, how in (
            (signal.SIGINT, lambda *a, **kw: ServerProcess.twist("--log-format=text", *a, **kw)),
            (signal.SIGQUIT, lambda *a, **kw: ServerProcess.twistd("-n", *a, **kw)),
            (signal.SIGHUP, lambda *a, **kw: ServerProcess.twistd("-n", *a, **kw)),
        ):
            cwd = self.folder()
            port, tls_port = free_ports(2)
            config = self.config(cwd, one_server(port, tls_port))
            proc = self.launch(how("graceful", "--config", str(config), cwd=cwd))
            cases.append((signum, proc, port, tls_port))
        for signum, proc, port, tls_port in cases:
            self.wait_serving(proc, [port])
        errors: list[tuple[str, str]] = []
        drains = [
            threading.Thread(
                target=self._drain_into, args=(errors, proc, signum, port), daemon=True
            )
            for signum, proc, port, tls_port in cases
        ]
        for drain in drains:
            drain.start()
        for drain in drains:
            drain.join(20)
        self.assertEqual(errors, [])
        for signum, proc, port, tls_port in cases:
            self.assertEqual(proc.wait_exit(10), 0, f"{signal.Signals(signum).name}:\n{proc.log()}")
            self.assert_closed(port, tls_port)

    def _drain_into(self, errors: list[Any], proc: ServerProcess, signum: int, port: int) -> None:
        try:
            self.assert_drains(proc, proc.process.pid, signum, [port], [], seconds=1.5)
        except BaseException as e:
            errors.append((signal.Signals(signum).name, repr(e)))


class ExampleTests(ProcessTestCase):
    """
    The examples, as their docstrings tell users to run them.
    """

    def test_examples(self) -> None:
        """
        C{basic.py PORT}, C{https.py PORT} and C{multi.py P1 P2 P3 P4} answer
        on every port (HTTPS verified against the test CA), log GoFrame's
        lines, and exit 0 on SIGTERM, closing every port.
        """
        ports = free_ports(6)
        basic = self.launch(ServerProcess.python(EXAMPLES / "basic.py", str(ports[0])))
        https = self.launch(ServerProcess.python(EXAMPLES / "https.py", str(ports[1])))
        multi = self.launch(ServerProcess.python(EXAMPLES / "multi.py", *map(str, ports[2:])))
        self.wait_serving(basic, [ports[0]])
        self.wait_serving(https, [], [ports[1]])
        self.wait_serving(multi, ports[2:])

        status, _, body = get(ports[0], "/")
        self.assertEqual((status, body), (200, b"Hello!\n"))
        self.assertEqual(pid_of(ports[0]), basic.process.pid)
        status, _, body = get(ports[1], "/", tls=True)
        self.assertEqual((status, body), (200, b"Hello!\n"))
        self.assertEqual(pid_of(ports[1], tls=True), https.process.pid)
        for port, name in zip(ports[2:], ("s1", "s1", "s2", "s2")):
            status, _, body = get(port, "/")
            self.assertEqual((status, body), (200, f"{name} {multi.process.pid}\n".encode()))
            self.assertEqual(pid_of(port), multi.process.pid)

        self.assert_in_log(basic, f"{basic.process.pid}: http server started listening on [:{ports[0]}]")
        self.assert_in_log(https, f"{https.process.pid}: https server started listening on [:{ports[1]}]")
        self.assert_in_log(
            multi,
            *[f"{multi.process.pid}: http server started listening on [:{p}]" for p in ports[2:]],
        )

        for proc in (basic, https, multi):
            os.kill(proc.process.pid, signal.SIGTERM)
        for proc in (basic, https, multi):
            self.assertEqual(proc.wait_exit(10), 0, proc.log())
            pid = proc.process.pid
            self.assert_in_log(proc, f"{pid}: server shutting down", f"{pid}: all servers shutdown")
        self.assert_closed(*ports)


class PluginTests(SynchronousTestCase):
    """
    C{pip install .} registers the plugin with twistd.
    """

    def test_twistd_lists_graceful(self) -> None:
        """
        The installed twistd (run away from the repo, with no PYTHONPATH)
        lists graceful among its commands, and C{twistd graceful --help}
        documents C{--config}.
        """
        env = child_environment()
        env.pop("PYTHONPATH")
        outside = tempfile.mkdtemp(prefix="graceful-test-")
        self.addCleanup(shutil.rmtree, outside, True)

        def twistd(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, script("twistd"), *args],
                cwd=outside, env=env, capture_output=True, text=True, timeout=30,
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            return done.stdout

        commands = [line.split() for line in twistd("--help").splitlines()]
        self.assertIn("graceful", [words[0] for words in commands if words])
        self.assertIn("--config=", twistd("graceful", "--help"))
