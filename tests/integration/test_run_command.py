"""
C{graceful run MODULE:APP}: a FastAPI, a Flask and a Django app, each started
with one command line, restarted with SIGUSR1 under wrk with nothing failed,
and drained by SIGTERM; C{graceful check} and C{graceful --version}.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from harness.processes import listening_pids, script
from harness.wrk import Wrk, wrk_path
from tests.support import ROOT, ServerProcess, free_port, get, pid_of, wait_until

PROGRAMS = "tests.integration.programs"


def graceful(*args: str) -> list[str]:
    return [sys.executable, script("graceful"), *args]


class RunCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="graceful-run-")
        self.addCleanup(directory.cleanup)
        self.folder = Path(directory.name)
        self.port = free_port()

    def start(self, app: str, *options: str) -> ServerProcess:
        proc = ServerProcess(graceful("run", app, "--port", str(self.port), *options))
        proc.start()
        self.addCleanup(proc.kill)
        return proc

    def restart_under_wrk(self, app: str, path: str) -> None:
        """
        C{app} serves under C{graceful run}; a SIGUSR1 while wrk runs
        hands it to a new process with no request failed.
        """
        if wrk_path() is None:
            raise SkipTest("wrk is not installed")
        proc = self.start(app, "--timeout-graceful-shutdown", "10", "--no-access-log")
        old = wait_until(lambda: pid_of(self.port, path), what=f"{app} to serve")
        self.assertEqual(old, proc.pid)  # the command itself serves: no wrapper process
        run = Wrk(f"http://127.0.0.1:{self.port}{path}", 30, 2, self.folder / "wrk.log")
        self.addCleanup(run.proc.kill)
        time.sleep(0.5)
        proc.signal(old, signal.SIGUSR1)
        new = wait_until(lambda: (lambda p: p if p != old else None)(pid_of(self.port, path)),
                         what="the new process")
        proc.remember(new)
        proc.wait_gone(old)
        time.sleep(0.3)
        run.stop()
        result = run.result()
        assert result is not None, "wrk gave no result"
        self.assertEqual(result["failed"], 0, result)
        self.assertGreater(result["requests"], 20, result)
        self.assertIn(f"{new}: ", proc.log())

    def test_fastapi_restarts_under_load(self) -> None:
        self.restart_under_wrk(f"{PROGRAMS}.run_fastapi:app", "/pid")

    def test_flask_restarts_under_load(self) -> None:
        self.restart_under_wrk(f"{PROGRAMS}.run_flask:app", "/pid")

    def test_django_restarts_under_load(self) -> None:
        self.restart_under_wrk(f"{PROGRAMS}.django_app:application", "/")

    def test_backlog_and_keep_alive(self) -> None:
        """
        C{--backlog} is the listening socket's backlog (as C{ss} shows it),
        and C{--timeout-keep-alive} closes an idle keep-alive connection
        that long after its response, quietly (no log line), on the native
        channel (no Server header: twisted.web's names itself).
        """
        proc = self.start(f"{PROGRAMS}.run_flask:app", "--backlog", "77",
                          "--timeout-keep-alive", "1")
        wait_until(lambda: pid_of(self.port, "/pid"), what="the app to serve")
        listing = subprocess.run(
            ["ss", "-Hltn", f"sport = :{self.port}"], capture_output=True, text=True, timeout=10
        ).stdout.split()
        self.assertEqual(listing[:3], ["LISTEN", "0", "77"], listing)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as client:
            client.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = client.recv(4096)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
            self.assertNotIn(b"\r\nserver:", answer.lower())
            started = time.monotonic()
            self.assertEqual(client.recv(4096), b"")  # closed, with a FIN
            self.assertTrue(0.8 < time.monotonic() - started < 5, time.monotonic() - started)
        self.assertNotIn("Timing out client", proc.log())

    def test_sigterm_drains(self) -> None:
        """
        SIGTERM lets the request in flight finish, then the command exits 0.
        """
        proc = self.start(f"{PROGRAMS}.run_fastapi:app")
        wait_until(lambda: pid_of(self.port, "/pid"), what="the app to serve")
        answers: list[tuple[int, bytes]] = []
        slow = threading.Thread(
            target=lambda: answers.append(get(self.port, "/slow")[::2])  # type: ignore[arg-type]
        )
        slow.start()
        time.sleep(0.3)
        proc.signal(proc.pid, signal.SIGTERM)
        slow.join(10)
        self.assertEqual(answers, [(200, b"slow done\n")])
        self.assertEqual(proc.wait_exit(), 0)
        # --access-log is on by default, as with uvicorn.
        self.assertIn('"GET /slow HTTP/1.1" 200', proc.log())

    def test_bad_option_one_line(self) -> None:
        """
        A bad value on the command line is one line naming the option, exit
        1, nothing left listening.
        """
        out = subprocess.run(
            graceful("run", f"{PROGRAMS}.run_flask:app", "--port", "1", "--port", "1"),
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(
            (out.returncode, out.stderr),
            (1, "graceful: error: graceful run: --port lists a port twice\n"),
        )

    def test_check_and_version(self) -> None:
        """
        C{graceful check} imports the app and says what would serve;
        C{graceful --version} says the package's version.
        """
        config = self.folder / "graceful.toml"
        config.write_text(
            f'[servers.web]\napp = "{PROGRAMS}.run_flask:app"\nports = [8000]\n'
        )
        out = subprocess.run(
            graceful("check", "--config", str(config), "--port", str(self.port)),
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(
            out.stdout,
            f"web: {PROGRAMS}.run_flask:app (wsgi) on http://0.0.0.0:{self.port}\nconfig OK\n",
        )
        from importlib.metadata import version

        out = subprocess.run(graceful("--version"), capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout, f"graceful {version('graceful')}\n")


class RunOptionsTests(SynchronousTestCase):
    def test_workers_tls_unix_env_pidfile_admin(self) -> None:
        """
        C{--workers 2} over HTTPS and a UNIX socket, with the environment
        file's variables, a pidfile naming the master, and the admin: all
        kept across a SIGUSR1.
        """
        from tests.integration.test_nginx import unix_get
        from tests.support import CERT, KEY, admin_auth

        directory = tempfile.TemporaryDirectory(prefix="graceful-run-")
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        (folder / ".env").write_text("export GREETING='hello there'\n")
        port = free_port()
        proc = ServerProcess(graceful(
            "run", f"{PROGRAMS}.run_env:app", "--port", str(port), "--uds", str(folder / "app.sock"),
            "--workers", "2", "--ssl-certfile", str(CERT), "--ssl-keyfile", str(KEY),
            "--env-file", str(folder / ".env"), "--pidfile", str(folder / "app.pid"),
            "--admin", "/debug/admin", "--no-access-log",
        ))
        proc.start()
        self.addCleanup(proc.kill)
        pidfile = folder / "app.pid"
        wait_until(lambda: get(port, "/pid", tls=True)[0] == 200, what="HTTPS to serve")
        master = wait_until(lambda: pidfile.exists() and int(pidfile.read_text() or 0),
                            what="the pidfile")
        self.assertEqual(master, proc.pid)
        worker, greeting = get(port, "/pid", tls=True)[2].decode().split(" ", 1)
        self.assertNotEqual(int(worker), master)  # a worker answers
        self.assertEqual(greeting, "hello there\n")
        self.assertEqual(unix_get(folder / "app.sock", "/pid").decode().split(" ", 1)[1],
                         "hello there\n")
        status = get(port, "/debug/admin/status", tls=True, headers=admin_auth())
        self.assertEqual(status[0], 200, status)
        proc.signal(master, signal.SIGUSR1)
        new = wait_until(lambda: (lambda p: p if p != master else None)(
            pidfile.exists() and int(pidfile.read_text() or 0)),
                         what="the pidfile to name the new master")
        proc.remember(new)
        proc.wait_gone(master)
        self.assertEqual(get(port, "/pid", tls=True)[2].decode().split(" ", 1)[1], "hello there\n")

    def test_client_certificates_required(self) -> None:
        """
        C{--ssl-cert-reqs required}: curl with a certificate the CA file
        holds is served; without one, the handshake fails.
        """
        from tests.support import CERT, KEY

        port = free_port()
        proc = ServerProcess(graceful(
            "run", f"{PROGRAMS}.run_env:app", "--port", str(port), "--ssl-certfile", str(CERT),
            "--ssl-keyfile", str(KEY), "--ssl-ca-certs", str(CERT), "--ssl-cert-reqs", "required",
            "--ssl-min-version", "1.3",
        ))
        proc.start()
        self.addCleanup(proc.kill)
        curl = ["curl", "-s", "-k", "--max-time", "10", f"https://127.0.0.1:{port}/"]
        wait_until(lambda: subprocess.run(curl + ["--cert", str(CERT), "--key", str(KEY)],
                                          capture_output=True).returncode == 0,
                   what="HTTPS with a client certificate")
        without = subprocess.run(curl, capture_output=True)
        self.assertNotEqual(without.returncode, 0)
        old_tls = subprocess.run(curl + ["--cert", str(CERT), "--key", str(KEY), "--tls-max", "1.2"],
                                 capture_output=True)
        self.assertNotEqual(old_tls.returncode, 0)

    def test_json_logs_and_log_config(self) -> None:
        """
        C{--log-format json}: every line of the output is a JSON object; with
        C{--log-config}, a dictConfig sends the access log to its own file.
        """
        import json

        directory = tempfile.TemporaryDirectory(prefix="graceful-run-")
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        port = free_port()
        proc = ServerProcess(graceful("run", f"{PROGRAMS}.run_env:app", "--port", str(port),
                                      "--log-format", "json"))
        proc.start()
        self.addCleanup(proc.kill)
        wait_until(lambda: get(port, "/pid")[0] == 200, what="the app to serve")
        wait_until(lambda: "GET /pid" in proc.log(), what="the access line")
        records = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
        self.assertIn("graceful.access", {r["namespace"] for r in records})
        proc.stop()

        access = folder / "access.log"
        config = folder / "logging.json"
        config.write_text(json.dumps({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"bare": {"format": "%(name)s %(message)s"}},
            "handlers": {"access": {"class": "logging.FileHandler", "filename": str(access),
                                    "formatter": "bare"}},
            "loggers": {"graceful.access": {"handlers": ["access"], "level": "INFO",
                                            "propagate": False}},
        }))
        port = free_port()
        proc = ServerProcess(graceful("run", f"{PROGRAMS}.run_env:app", "--port", str(port),
                                      "--log-config", str(config)))
        proc.start()
        self.addCleanup(proc.kill)
        wait_until(lambda: get(port, "/pid")[0] == 200, what="the app to serve")
        line = wait_until(lambda: access.exists() and access.read_text(), what="the access file")
        self.assertTrue(line.startswith('graceful.access "127.0.0.1" - - ['), line)

    def test_fd(self) -> None:
        """
        C{--fd 3}: the socket the command was started with is served, and
        handed on by a restart.
        """
        import fcntl
        import os
        import socket

        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]

        def place() -> None:
            high = fcntl.fcntl(listening.fileno(), fcntl.F_DUPFD, 100)
            os.dup2(high, 3)
            os.close(high)

        proc = ServerProcess(graceful("run", f"{PROGRAMS}.run_env:app", "--fd", "3"))
        proc.start(pass_fds=(3,), preexec_fn=place)
        self.addCleanup(proc.kill)
        listening.close()  # the server holds it now
        first = wait_until(lambda: pid_of(port, "/pid"), what="the socket of fd 3 to serve")
        self.assertEqual(first, proc.pid)
        proc.signal(first, signal.SIGUSR1)
        new = wait_until(lambda: (lambda p: p if p != first else None)(pid_of(port, "/pid")),
                         what="the new process")
        proc.remember(new)
        proc.wait_gone(first)
        self.assertEqual(pid_of(port, "/pid"), new)

    def test_limit_concurrency(self) -> None:
        """
        C{--limit-concurrency 1}: while one request is in progress another
        gets 503 at once, with Retry-After; then it is served again.  On
        the native channel (no Server header: twisted.web's names itself).
        """
        port = free_port()
        proc = ServerProcess(graceful("run", f"{PROGRAMS}.run_fastapi:app", "--port", str(port),
                                      "--limit-concurrency", "1"))
        proc.start()
        self.addCleanup(proc.kill)
        wait_until(lambda: pid_of(port, "/pid"), what="the app to serve")
        # The slow request is sent before any other connects (from a thread,
        # it could arrive second and be the one refused).
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(slow.close)
        slow.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        refused = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(get(port, "/pid")),
                             what="the second request's 503")
        self.assertEqual(refused[1].get("retry-after"), "1")
        self.assertNotIn("server", refused[1])
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        status, headers, _ = get(port, "/pid")
        self.assertEqual(status, 200)
        self.assertNotIn("server", headers)
        self.assertIn("limit_concurrency 1 reached", proc.log())


#: The README's quick start: each framework's app as its own tutorial
#: makes it, and the one command that serves it.
QUICK_START = {
    "FastAPI": (
        "main.py",
        "from fastapi import FastAPI\napp = FastAPI()\n\n@app.get('/')\ndef root():\n"
        "    return {'hello': 'world'}\n",
        "graceful run main:app",
    ),
    "Django": (None, None, "graceful run mysite.asgi:application"),
    "Flask": (
        "app.py",
        "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef root():\n"
        "    return 'hello'\n",
        "graceful run app:app",
    ),
}


class QuickStartTests(SynchronousTestCase):
    """
    The README's one command for FastAPI, Django and Flask users serves
    their app from its folder, and a SIGUSR1 hands it over.
    """

    def serve(self, framework: str) -> None:
        module = {"FastAPI": "fastapi", "Django": "django", "Flask": "flask"}[framework]
        try:
            __import__(module)
        except ImportError:
            raise SkipTest(f"{module} is not installed")
        name, source, command = QUICK_START[framework]
        readme = (ROOT / "README.rst").read_text()
        self.assertIn(f"&& {command}  ", readme)
        directory = tempfile.TemporaryDirectory(prefix="graceful-quickstart-")
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        if name is None:
            subprocess.run(
                [sys.executable, "-m", "django", "startproject", "mysite", str(folder)],
                check=True, timeout=60,
            )
        else:
            (folder / name).write_text(source or "")
        port = free_port()
        proc = ServerProcess(graceful(*command.split()[1:], "--port", str(port)), cwd=str(folder))
        proc.start()
        self.addCleanup(proc.kill)
        wait_until(lambda: get(port, "/")[0] == 200, what=f"the {framework} app to serve")
        old = proc.pid
        proc.signal(old, signal.SIGUSR1)

        def new_listener() -> int | None:
            # Only the new process listens once the old one handed over.
            pids = listening_pids(port)
            return pids.pop() if len(pids) == 1 and old not in pids else None

        proc.remember(wait_until(new_listener, what="the new process to take over"))
        proc.wait_gone(old)
        self.assertEqual(get(port, "/")[0], 200)

    def test_fastapi(self) -> None:
        self.serve("FastAPI")

    def test_django(self) -> None:
        self.serve("Django")

    def test_flask(self) -> None:
        self.serve("Flask")
