"""
C{graceful ctl} on real sockets: the HTTP client's error messages against a
fake server, and the whole command against three real graceful processes on
loopback.  Its logic against fake nodes is in tests/unit/ctl/test_cli.py.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful.ctl import cli as ctl
from graceful.ctl.cli import NodeError

from tests.support import (
    ROOT,
    Load,
    ServerProcess,
    child_environment,
    free_port,
    free_ports,
    get,
    wait_until,
)
from tests.unit.ctl.test_roll import status_json


# -- the HTTP client's errors, against a fake server ------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        code, content_type, body = self.routes.get(self.path, (404, "text/html", b"<h1>no</h1>"))
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def fake_server(test: SynchronousTestCase, routes: dict[str, tuple[int, str, bytes]]) -> str:
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    test.addCleanup(thread.join, 5)
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}"


class HttpClientTests(SynchronousTestCase):
    def error(self, url: str, call: str = "status", timeout: float = 5.0) -> str:
        client = ctl.HttpAdminClient(token="t", timeout=timeout)
        error = self.assertRaises(NodeError, getattr(client, call), url)
        self.assertEqual(error.node, url)
        return str(error.reason)

    def test_answers(self) -> None:
        js = "application/json"
        base = fake_server(self, {
            "/a/status": (200, js, json.dumps(status_json(7, 4)).encode()),
            "/a/restart": (202, js, b'{"restarting": true}'),
            "/busy/restart": (409, js, b'{"error": "a restart is already running"}'),
            "/locked/status": (401, js, b'{"error": "a valid bearer token is required"}'),
            "/far/status": (403, js, b'{"error": "admin pages answer loopback only"}'),
            "/html/status": (200, "text/html", b"<html>hello</html>"),
            "/notjson/status": (200, js, b"{nope"),
            "/other/status": (200, js, b'{"status": "green"}'),
            "/boom/status": (500, "text/plain", b"oops"),
        })
        client = ctl.HttpAdminClient(token="t")
        status = client.status(base + "/a")
        self.assertEqual((status.pid, status.generation), (7, 4))
        client.restart(base + "/a")
        self.assertIn("409", self.error(base + "/busy", "restart"))
        self.assertIn("wrong or missing token (401", self.error(base + "/locked"))
        self.assertIn("403 Forbidden: admin pages answer loopback only", self.error(base + "/far"))
        self.assertIn("not a graceful admin API: GET status answered 404", self.error(base + "/missing"))
        self.assertIn("not a graceful admin API: GET status answered text/html", self.error(base + "/html"))
        self.assertIn("invalid JSON", self.error(base + "/notjson"))
        self.assertIn("not a graceful admin API", self.error(base + "/other"))
        self.assertIn("answered 500", self.error(base + "/boom"))

    def test_unreachable(self) -> None:
        self.assertEqual(
            self.error(f"http://127.0.0.1:{free_port()}/debug/admin"), "unreachable: connection refused"
        )

    def test_no_answer(self) -> None:
        """
        A node that accepts but never answers times out after --timeout.
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.addCleanup(listener.close)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/debug/admin"
        self.assertIn("timed out", self.error(url, timeout=0.3))

    def test_not_http(self) -> None:
        """
        Something that is not an HTTP server at all.
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.addCleanup(listener.close)

        def babble() -> None:
            conn, _ = listener.accept()
            conn.recv(1024)
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            conn.close()

        thread = threading.Thread(target=babble, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/debug/admin"
        self.assertIn("not a graceful admin API", self.error(url))


# -- against real graceful processes ------------------------------------------------

TOKEN = "fleet-token-42"


def node_config(port: int, token: str | None = TOKEN, extra: str = "") -> str:
    token_line = 'admin_token_file = "token"' if token else ""
    return f"""
[graceful]
drain_timeout = 5.0
ready_timeout = 10.0

[servers.web]
app = "examples.apps:basic"
ports = [{port}]
admin = "/debug/admin"
health = "/healthz"
{token_line}
{extra}
"""


class Fleet:
    """
    Graceful processes under twistd, each in a directory of its own with its
    config (and token file).
    """

    def __init__(self, test: SynchronousTestCase, count: int, token: str | None = TOKEN) -> None:
        self.ports = free_ports(count)
        self.dirs = []
        self.processes = []
        for port in self.ports:
            directory = Path(tempfile.mkdtemp(prefix="graceful-ctl-"))
            (directory / "graceful.toml").write_text(node_config(port, token))
            if token:
                (directory / "token").write_text(token + "\n")
            process = ServerProcess.twistd(
                "--nodaemon", "--pidfile=", "graceful", "--config", "graceful.toml", cwd=directory
            )
            test.addCleanup(process.stop)
            self.dirs.append(directory)
            self.processes.append(process.start())
        for port in self.ports:
            wait_until(partial(answers_health, port), what=f"node on {port}")
        self.token_file = self.dirs[0] / "token"

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/debug/admin" for port in self.ports]

    def status(self, index: int) -> dict[str, Any]:
        code, _, body = get(
            self.ports[index], "/debug/admin/status", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert code == 200, (code, body)
        result: dict[str, Any] = json.loads(body)
        return result

    def remember_pids(self) -> None:
        for index, process in enumerate(self.processes):
            process.remember(self.status(index)["pid"])


def answers_health(port: int) -> bool:
    return get(port, "/healthz", timeout=2)[0] == 200


def graceful_ctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """
    The command as users run it (C{python -m graceful} is the console script).
    """
    env = child_environment()
    env.pop(ctl.TOKEN_VARIABLE, None)
    return subprocess.run(
        [sys.executable, "-m", "graceful", "ctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class FleetTests(SynchronousTestCase):
    def nodes(self, fleet: Fleet) -> list[str]:
        return [arg for url in fleet.urls() for arg in ("--node", url)]

    def test_status_list_and_shutdown(self) -> None:
        """
        C{status} prints one aligned line per node, C{list} their servers
        and ports (the nodes given with --node and a nodes file), and
        C{shutdown} stops them all.
        """
        fleet = Fleet(self, 3)
        nodes_file = fleet.dirs[0] / "nodes"
        nodes_file.write_text("\n".join(fleet.urls()[1:]) + "\n")
        pids = [fleet.status(i)["pid"] for i in range(3)]
        result = graceful_ctl(
            "--node", fleet.urls()[0], "--nodes-file", str(nodes_file),
            "--token-file", str(fleet.token_file), "status",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 4, result.stdout)
        self.assertEqual(lines[0].split()[:5], ["NODE", "PID", "GEN", "UPTIME", "STATE"])
        for line, url, pid in zip(lines[1:], fleet.urls(), pids):
            self.assertEqual(line.split()[:3], [url, str(pid), "1"])
            self.assertIn("serving", line)
        self.assertEqual({line.index(" serving") for line in lines[1:]}.__len__(), 1)

        result = graceful_ctl(*self.nodes(fleet), "--token", TOKEN, "list")
        self.assertEqual(result.returncode, 0, result.stderr)
        for url, port in zip(fleet.urls(), fleet.ports):
            self.assertRegex(result.stdout, rf"{url}\s+web\s+{port}\s")

        result = graceful_ctl(*self.nodes(fleet), "--token", TOKEN, "--json", "status")
        self.assertEqual([node["pid"] for node in json.loads(result.stdout)], pids)

        result = graceful_ctl(*self.nodes(fleet), "--token", TOKEN, "shutdown")
        self.assertEqual(result.returncode, 0, result.stderr)
        for process in fleet.processes:
            self.assertEqual(process.wait_exit(), 0)

    def test_rolling_restart_under_load(self) -> None:
        """
        Every node gets a new generation, in the order given, one at a time,
        and no request of a steady load fails.
        """
        fleet = Fleet(self, 3)
        fleet.remember_pids()
        # One client per node (two cores are enough for the whole test): kept
        # alive, a new connection per request, kept alive.
        targets = list(zip(("keepalive", "close", "keepalive"), fleet.ports))
        with Load(targets, path="/pid", max_seconds=60) as load:
            load.wait_for(50)
            result = graceful_ctl(
                *self.nodes(fleet), "--token-file", str(fleet.token_file),
                "--poll-interval", "0.1", "restart",
            )
            load.wait_for(50)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(load.failures, [])
        statuses = [fleet.status(i) for i in range(3)]
        fleet.remember_pids()
        self.assertEqual([s["generation"] for s in statuses], [2, 2, 2])
        # In order: each node's new process started after the one before it.
        started = [s["started_at"] for s in statuses]
        self.assertEqual(started, sorted(started))
        lines = [line for line in result.stdout.splitlines() if ": ok: generation 1 -> 2" in line]
        self.assertEqual(
            [line.split()[1].rstrip(":") for line in lines], fleet.urls(), result.stdout
        )
        self.assertIn("restarted 3 node(s)", result.stdout)
        self.assertEqual(len(set(load.pids)), 6, load.pids)  # every old and new process served

    def test_stops_at_broken_config(self) -> None:
        """
        The second node's config is broken: the first is restarted, the
        second reports why it failed and keeps serving, the third is left
        alone, and the exit status is non-zero.
        """
        fleet = Fleet(self, 3)
        fleet.remember_pids()
        broken = fleet.dirs[1] / "graceful.toml"
        broken.write_text(broken.read_text() + "\nbogus_key = 1\n")
        result = graceful_ctl(
            *self.nodes(fleet), "--token-file", str(fleet.token_file), "--poll-interval", "0.1", "restart"
        )
        fleet.remember_pids()
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        second = fleet.urls()[1]
        self.assertIn(f"restart stopped at {second}: restart failed", result.stderr)
        self.assertIn("bogus_key", result.stderr)
        self.assertIn(f"not restarted: {fleet.urls()[2]}", result.stderr)
        statuses = [fleet.status(i) for i in range(3)]
        self.assertEqual([s["generation"] for s in statuses], [2, 1, 1])
        self.assertFalse(statuses[1]["last_restart"]["ok"])
        self.assertIsNone(statuses[2]["last_restart"])
        self.assertEqual(get(fleet.ports[1], "/")[0], 200)

    def test_errors(self) -> None:
        """
        A wrong token, a URL that is not a graceful admin API, a node that
        is not there: each named, with a non-zero exit.
        """
        fleet = Fleet(self, 1)
        [url] = fleet.urls()
        port = fleet.ports[0]
        dead = f"http://127.0.0.1:{free_port()}/debug/admin"
        cases = [
            (["--node", url, "--token", "wrong"], "status", f"{url}: wrong or missing token (401"),
            (["--node", url], "restart", f"restart stopped at {url}: wrong or missing token (401"),
            (["--node", f"http://127.0.0.1:{port}/", "--token", TOKEN], "status",
             "not a graceful admin API: GET status answered 404"),
            (["--node", f"http://127.0.0.1:{port}/pid", "--token", TOKEN], "list", "not a graceful admin API"),
            (["--node", dead], "status", f"{dead}: unreachable: connection refused"),
            (["--node", url, "--node", dead, "--token", TOKEN], "shutdown", f"{dead}: unreachable"),
        ]
        for options, command, message in cases:
            result = graceful_ctl(*options, command)
            self.assertEqual(result.returncode, 1, (options, command, result.stdout, result.stderr))
            self.assertIn(message, result.stderr, (options, command))
        self.assertEqual(fleet.processes[0].wait_exit(), 0)  # the last case shut it down


# -- over a private admin socket -----------------------------------------------------


class AdminSocketTests(SynchronousTestCase):
    def test_restart_whose_lifespan_startup_fails(self) -> None:
        """
        C{graceful ctl --node unix:PATH restart} for a release whose ASGI
        lifespan startup fails (after a pause, holding the inherited admin
        socket meanwhile): FAILED with the reason and a non-zero exit, every
        time (it was a race), and the old process serves on.
        """
        directory = Path(tempfile.mkdtemp(prefix="gx-", dir="/tmp"))  # a short socket path
        self.addCleanup(shutil.rmtree, directory, True)
        port = free_port()
        admin_socket = directory / "admin.sock"
        (directory / "graceful.toml").write_text(
            "[graceful]\nready_timeout = 10\ndrain_timeout = 5\n"
            f'admin_socket = "{admin_socket}"\n\n'
            "[servers.web]\n"
            'app = "tests.integration.programs.slow_failing_lifespan:app"\n'
            f"ports = [{port}]\n"
        )
        env = child_environment()
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        process = ServerProcess.twistd(
            "--nodaemon", "--pidfile=", "graceful", "--config", "graceful.toml",
            cwd=directory, env=env,
        )
        self.addCleanup(process.stop)
        process.start()
        wait_until(lambda: get(port, "/", timeout=2)[0] == 200, what="the ASGI app to serve")
        first = get(port, "/")[2].strip()
        (directory / "fail-startup").touch()
        for attempt in range(3):
            result = graceful_ctl(
                "--node", f"unix:{admin_socket}", "--poll-interval", "0.05",
                "--restart-timeout", "30", "restart",
            )
            said = result.stdout + result.stderr
            self.assertEqual(result.returncode, 1, (attempt, said))
            self.assertNotIn("ok: generation", result.stdout, (attempt, said))
            self.assertIn("FAILED", result.stdout, (attempt, said))
            self.assertIn("ASGI lifespan startup failed: told to fail", result.stderr, (attempt, said))
        status = graceful_ctl("--node", f"unix:{admin_socket}", "--json", "status")
        [node] = json.loads(status.stdout)
        self.assertEqual((node["generation"], node["last_restart"]["ok"]), (1, False))
        self.assertEqual(get(port, "/")[2].strip(), first)
