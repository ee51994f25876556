"""
The admin pages and the health page on real processes, on 127.0.0.1: what
section 5 of the contract promises, end to end.  The details (every refusal,
escaping, metrics values) are unit tests in admin/test_resource.py.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from harness.processes import script
from tests.support import (
    ADMIN_TOKEN_VARIABLE,
    ServerProcess,
    admin_auth,
    child_environment,
    answers,
    connection,
    free_ports,
    get,
    group_members,
    process_alive,
    refuses,
    wait_until,
)

#: A program with two servers: s1 (admin at /ops, health at /healthz) and s2
#: (admin at the default /debug/admin).  A new generation waits
#: ADMIN_TEST_SLOW_START seconds before it starts, so a test can ask for a
#: second restart while the first one runs.
PROGRAM = """
import os, sys, time

if os.environ.get("GRACEFUL_GENERATION"):
    time.sleep(float(os.environ.get("ADMIN_TEST_SLOW_START", "0")))

from twisted.internet import reactor, task

import graceful as g

s1 = g.server("s1")
s1.route("/pid", lambda request: f"{os.getpid()}\\n")

@s1.route("/slow")
async def slow(request):
    await task.deferLater(reactor, float(request.args[b"seconds"][0]), lambda: None)
    return f"{os.getpid()}\\n"

s1.set_host("127.0.0.1")
s1.set_port(int(sys.argv[1]))
s1.enable_admin("/ops")
s1.enable_health("/healthz")

s2 = g.server("s2")
s2.route("/", lambda request: "s2\\n")
s2.set_host("127.0.0.1")
s2.set_port(int(sys.argv[2]))
s2.enable_admin()

g.set_ready_timeout(10)
s1.start()
s2.start()
g.wait()
"""

APP = """
import os
import graceful as g

def root():
    pages = g.Router()
    pages.route("/pid", lambda request: f"{os.getpid()}\\n")
    return pages
"""

CONFIG = """
[graceful]
allowed_executables = [{twistd}]
ready_timeout = 10.0

[servers.web]
app = "admin_app:root"
host = "127.0.0.1"
ports = [{port}]
admin = "/admin"
admin_token_file = "admin.token"
health = "/healthz"
"""

TOKEN = "integration-token-7f3a"

#: No admin token configured: graceful makes one.
NO_TOKEN_CONFIG = """
[graceful]
ready_timeout = 10.0

[servers.web]
app = "admin_app:root"
host = "127.0.0.1"
ports = [{port}]
admin = "/debug/admin"
"""


def read_json(port: int, path: str, headers: dict[str, str] | None = None) -> Any:
    code, response_headers, body = get(port, path, headers=admin_auth() if headers is None else headers)
    assert code == 200, (code, body)
    assert response_headers["content-type"] == "application/json", response_headers
    return json.loads(body)


def post(
    port: int, path: str, fields: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = urlencode(fields or {}).encode()
    if headers is None and "token" not in (fields or {}):
        headers = admin_auth()
    return get(
        port,
        path,
        method="POST",
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )


def metrics(port: int, path: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    code, response_headers, body = get(port, path, headers=admin_auth() if headers is None else headers)
    assert code == 200, (code, body)
    assert response_headers["content-type"].startswith("text/plain"), response_headers
    return {
        f"{sample.name}{sorted(sample.labels.items()) if sample.labels else ''}": sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


class AdminIntegrationTests(TestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="graceful-admin-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def launch(self, proc: ServerProcess) -> ServerProcess:
        self.addCleanup(proc.stop)
        return proc.start()

    def program(self, slow_start: float = 0.0) -> tuple[ServerProcess, int, int]:
        script = self.directory / "admin_program.py"
        script.write_text(PROGRAM)
        port1, port2 = free_ports(2)
        proc = ServerProcess.python(script, str(port1), str(port2))
        proc.env["ADMIN_TEST_SLOW_START"] = str(slow_start)
        self.launch(proc)
        wait_until(lambda: answers(port1, "/pid") and answers(port2, "/"), what="both servers")
        return proc, port1, port2

    def test_pages_and_a_restart_through_the_api(self) -> None:
        """
        Status, page, metrics and health answer; GET on an action is 405; a
        restart through the API is 202 and moves the generation; a second
        restart while the first runs is 409, through either server's admin
        and either name.
        """
        proc, port1, port2 = self.program(slow_start=1.0)
        status = read_json(port1, "/ops/status")
        old = status["pid"]
        proc.remember(old)
        self.assertEqual(status["generation"], 1)
        self.assertIsInstance(status["started_at"], float)
        self.assertIs(status["draining"], False)
        self.assertIsNone(status["last_restart"])
        self.assertEqual(
            [(s["name"], s["ports"]) for s in status["servers"]],
            [("s1", [{"port": port1, "tls": False}]), ("s2", [{"port": port2, "tls": False}])],
        )
        self.assertEqual([s["in_flight"] for s in status["servers"]], [1, 0])
        self.assertEqual(read_json(port2, "/debug/admin/status")["pid"], old)

        code, headers, page = get(port1, "/ops", headers={**admin_auth(), "Accept": "text/html"})
        self.assertEqual((code, headers["content-type"]), (200, "text/html; charset=utf-8"))
        self.assertIn(f'<dd id="pid">{old}</dd>'.encode(), page)
        self.assertIn(b'<dd id="generation">1</dd>', page)

        before = metrics(port1, "/ops/metrics")
        self.assertEqual(before["graceful_generation"], 1)
        self.assertEqual(before["graceful_restarts_total"], 0)
        self.assertEqual(get(port1, "/healthz"), (200, unittest_any, b"ok\n"))

        for path in ("/ops/restart", "/ops/reload", "/ops/shutdown"):
            code, headers, _ = get(port1, path, headers=admin_auth())
            self.assertEqual((code, headers.get("allow")), (405, "POST"), path)

        code, _, body = post(port1, "/ops/restart")
        self.assertEqual(code, 202, body)
        self.assertEqual(json.loads(body)["restarting"], True)
        # The new generation takes a second to start: this one still serves.
        for port, path in ((port2, "/debug/admin/reload"), (port1, "/ops/restart")):
            code, _, body = post(port, path)
            self.assertEqual(code, 409, body)
            self.assertIn("already running", json.loads(body)["error"])
        self.assertEqual(read_json(port1, "/ops/status")["restarting"], True)

        def moved() -> Any:
            status = read_json(port1, "/ops/status")
            return status if status["generation"] == 2 and status["last_restart"] else None

        status = wait_until(moved, what="generation 2 to serve")
        proc.remember(status["pid"])
        self.assertNotEqual(status["pid"], old)
        self.assertEqual(status["last_restart"]["ok"], True)
        self.assertIsNone(status["last_restart"]["error"])
        proc.wait_gone(old)
        after = metrics(port1, "/ops/metrics")
        self.assertEqual(after["graceful_generation"], 2)
        self.assertEqual(after["graceful_restarts_total"], 1)
        self.assertGreaterEqual(after["graceful_last_handoff_seconds"], 1.0)
        code, _, page = get(port2, "/debug/admin", headers={**admin_auth(), "Accept": "text/html"})
        self.assertIn(b'<dd id="generation">2</dd>', page)

        log = proc.log()
        self.assertIn(f"{old}: admin restart asked for by 127.0.0.1:", log)
        self.assertIn(f"{old}: admin reload asked for by 127.0.0.1:", log)

    def test_shutdown_drains_and_exits(self) -> None:
        """
        POST shutdown is 202; the process stops accepting, health turns 503
        on the connections it still holds, the request in flight finishes,
        and the process exits 0.
        """
        proc, port1, port2 = self.program()
        held = connection(port1)
        self.addCleanup(held.close)
        held.request("GET", "/healthz")
        response = held.getresponse()
        self.assertEqual((response.status, response.read()), (200, b"ok\n"))

        slow: dict[str, Any] = {}

        def slow_request() -> None:
            try:
                slow["answer"] = get(port1, "/slow?seconds=2", timeout=15)
            except Exception as e:  # reported below
                slow["error"] = e

        thread = threading.Thread(target=slow_request, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 15)
        wait_until(
            lambda: read_json(port2, "/debug/admin/status")["servers"][0]["in_flight"] == 1,
            what="the slow request to be in flight",
        )
        code, _, body = post(port2, "/debug/admin/shutdown")
        self.assertEqual(code, 202, body)
        self.assertEqual(json.loads(body)["shutting_down"], True)

        # The held keep-alive connection gets a short grace: health says 503
        # (and Connection: close) once the process drains.
        deadline = time.monotonic() + 0.8
        health = None
        while time.monotonic() < deadline:
            held.request("GET", "/healthz")
            response = held.getresponse()
            health = (response.status, response.read(), response.getheader("connection"))
            if health[0] != 200:
                break
            time.sleep(0.05)
        self.assertEqual(health, (503, b"draining\n", "close"))
        wait_until(lambda: refuses(port1) and refuses(port2), what="both ports to close")

        thread.join(15)
        self.assertNotIn("error", slow)
        self.assertEqual(slow["answer"][0], 200)
        self.assertEqual(proc.wait_exit(), 0)
        self.assertIn(": admin shutdown asked for by 127.0.0.1:", proc.log())

    def test_token_and_allowed_executables_from_the_config(self) -> None:
        """
        twistd with admin_token_file and allowed_executables: no or a wrong
        token is 401, the right one is served, health needs none; an
        executable not allowed is 403 and runs nothing; an allowed one
        restarts into the next generation.
        """
        (self.directory / "admin_app.py").write_text(APP)
        (self.directory / "admin.token").write_text(TOKEN + "\n")
        [port] = free_ports(1)
        twistd = script("twistd")
        config = self.directory / "graceful.toml"
        config.write_text(CONFIG.format(twistd=json.dumps(twistd), port=port))
        proc = ServerProcess.twistd("-n", "graceful", "--config", str(config), cwd=self.directory)
        proc.pidfiles.append(self.directory / "twistd.pid")
        self.launch(proc)
        wait_until(lambda: answers(port, "/pid"), what="twistd to serve")
        auth = {"Authorization": f"Bearer {TOKEN}"}

        for headers in ({}, {"Authorization": "Bearer nope"}):
            for method, path in (("GET", "/admin/status"), ("GET", "/admin"),
                                 ("GET", "/admin/metrics"), ("POST", "/admin/restart")):
                code, response_headers, body = get(port, path, method=method, headers=headers)
                self.assertEqual(code, 401, (path, headers))
                self.assertIn('realm="graceful admin"', response_headers["www-authenticate"])
                self.assertNotIn(TOKEN.encode(), body)
        self.assertEqual(get(port, "/healthz")[0], 200)
        status = read_json(port, "/admin/status", auth)
        old = proc.remember(status["pid"])
        self.assertEqual(status["generation"], 1)
        self.assertEqual(metrics(port, "/admin/metrics", auth)["graceful_generation"], 1)
        code, _, page = get(port, "/admin", headers={**auth, "Accept": "text/html"})
        self.assertEqual(code, 200)
        self.assertIn(f'name="token" value="{TOKEN}"'.encode(), page)

        code, _, body = post(port, "/admin/restart", {"executable": "/bin/sh"}, auth)
        self.assertEqual(code, 403, body)
        self.assertIn("allowed_executables", json.loads(body)["error"])
        status = read_json(port, "/admin/status", auth)
        self.assertEqual((status["pid"], status["restarting"]), (old, False))
        self.assertEqual(
            [pid for pid in group_members(proc.pgid) if pid != old], [],
            "a process was started for an executable that is not allowed",
        )

        # A flood of wrong tokens is counted, and logged in aggregate.
        flood = 300
        for _ in range(flood):
            self.assertEqual(get(port, "/admin/status", headers={"Authorization": "Bearer x"})[0], 401)
        counted = metrics(port, "/admin/metrics", auth)
        self.assertGreaterEqual(
            counted["graceful_admin_refused_total[('reason', 'wrong_token')]"], flood
        )
        aggregate = [line for line in proc.log().splitlines() if ": admin refused " in line]
        self.assertLessEqual(len(aggregate), 3, aggregate)

        # The page's form: the token as a field, and an executable named by
        # a path of the client's that resolves to the allowed one: what runs
        # is the configured path, never the client's string.
        link = self.directory / "my-twistd"
        link.symlink_to(twistd)
        code, _, body = post(port, "/admin/reload", {"executable": str(link), "token": TOKEN})
        self.assertEqual(code, 202, body)

        def moved() -> Any:
            status = read_json(port, "/admin/status", auth)
            return status if status["generation"] == 2 and status["last_restart"] else None

        status = wait_until(moved, what="generation 2 to serve")
        proc.remember(status["pid"])
        self.assertEqual(status["last_restart"]["ok"], True)
        command = Path(f"/proc/{status['pid']}/cmdline").read_bytes().split(b"\0")
        self.assertIn(twistd.encode(), command)
        self.assertNotIn(str(link).encode(), command)
        wait_until(lambda: not process_alive(old), what="the old process to exit")
        log = proc.log()
        self.assertIn(f"{old}: admin reload asked for by 127.0.0.1:", log)
        self.assertIn("refused", log)
        proc.signal(status["pid"], signal.SIGTERM)


class GeneratedTokenIntegrationTests(TestCase):
    def test_token_made_kept_and_required_behind_a_proxy(self) -> None:
        """
        twistd with no admin_token: a plain request from loopback (what
        nginx's default proxy_pass sends), with or without X-Forwarded-For,
        is 401; the token file beside the pidfile is owner-only and its
        token works, for graceful ctl too; after SIGUSR1 the same token
        still works.
        """
        directory = Path(tempfile.mkdtemp(prefix="graceful-admin-token-"))
        self.addCleanup(shutil.rmtree, directory, True)
        (directory / "admin_app.py").write_text(APP)
        [port] = free_ports(1)
        config = directory / "graceful.toml"
        config.write_text(NO_TOKEN_CONFIG.format(port=port))
        env = child_environment()
        env.pop(ADMIN_TOKEN_VARIABLE)  # where a user's process keeps it
        proc = ServerProcess.twistd(
            "-n", "--pidfile", "app.pid", "graceful", "--config", str(config),
            cwd=directory, env=env,
        )
        proc.pidfiles.append(directory / "app.pid")
        self.addCleanup(proc.stop)
        proc.start()
        wait_until(lambda: answers(port, "/pid"), what="twistd to serve")

        for headers in ({}, {"X-Forwarded-For": "203.0.113.7"}, {"X-Real-IP": "203.0.113.7"}):
            for method, path in (("GET", "/debug/admin/status"), ("POST", "/debug/admin/shutdown")):
                code, _, _ = get(port, path, method=method,
                                 headers={"Host": f"127.0.0.1:{port}", **headers})
                self.assertEqual(code, 401, (method, headers))

        token_file = directory / "app.admin-token"
        info = os.lstat(token_file)
        self.assertTrue(stat.S_ISREG(info.st_mode))
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o600)
        self.assertEqual(info.st_uid, os.geteuid())
        token = token_file.read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        status = read_json(port, "/debug/admin/status", auth)
        old = proc.remember(status["pid"])
        self.assertEqual(status["generation"], 1)
        log = proc.log()
        self.assertIn(f"admin token made and kept in {token_file}", log)
        self.assertIn(f"http://127.0.0.1:{port}/debug/admin/?token={token}", log)

        ctl = subprocess.run(
            [sys.executable, "-m", "graceful", "ctl", "status", "--token-file", str(token_file),
             "--node", f"http://127.0.0.1:{port}/debug/admin"],
            env=child_environment(), capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        self.assertIn(str(old), ctl.stdout)

        proc.signal(old, signal.SIGUSR1)

        def moved() -> Any:
            status = read_json(port, "/debug/admin/status", auth)
            return status if status["generation"] == 2 and status["last_restart"] else None

        status = wait_until(moved, what="generation 2 to serve with the same token")
        proc.remember(status["pid"])
        self.assertNotEqual(status["pid"], old)
        self.assertEqual(token_file.read_text().strip(), token)
        self.assertEqual(get(port, "/debug/admin/status")[0], 401)
        # The token is logged once, when made; the restart says where it is.
        self.assertEqual(proc.log().count(token), 1)
        proc.signal(status["pid"], signal.SIGTERM)
        proc.wait_exit()


class AccessLogIntegrationTests(TestCase):
    def test_sign_in_url_redacted(self) -> None:
        """
        A browser (curl here) opens the sign-in URL graceful logged: the
        access log records it, and the Referer that carries it, with
        C{token=REDACTED}; the process log has the token once, where it was
        made.
        """
        directory = Path(tempfile.mkdtemp(prefix="graceful-access-"))
        self.addCleanup(shutil.rmtree, directory, True)
        (directory / "admin_app.py").write_text(APP)
        [port] = free_ports(1)
        config = directory / "graceful.toml"
        config.write_text(
            NO_TOKEN_CONFIG.format(port=port).replace(
                "[graceful]\n", '[graceful]\naccess_log = "access.log"\n'
            )
        )
        env = child_environment()
        env.pop(ADMIN_TOKEN_VARIABLE)
        proc = ServerProcess.twistd(
            "-n", "--pidfile", "app.pid", "graceful", "--config", str(config),
            cwd=directory, env=env,
        )
        proc.pidfiles.append(directory / "app.pid")
        self.addCleanup(proc.stop)
        proc.start()
        wait_until(lambda: answers(port, "/pid"), what="twistd to serve")
        token = (directory / "app.admin-token").read_text().strip()
        url = f"http://127.0.0.1:{port}/debug/admin/?token={token}"
        curl = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
             "-e", url, url],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        self.assertEqual(curl.stdout, "303", curl.stderr)
        access = directory / "access.log"
        wait_until(lambda: "/debug/admin/" in access.read_text(), what="the access-log line")
        line = access.read_text()
        self.assertNotIn(token, line)
        self.assertIn('"GET /debug/admin/?token=REDACTED HTTP/1.1" 303', line)
        self.assertIn(f'"http://127.0.0.1:{port}/debug/admin/?token=REDACTED"', line)
        self.assertEqual(proc.log().count(token), 1)


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


unittest_any = _Any()
