"""
C{graceful ctl}: the rolling restart's logic against fake nodes (in order, one
at a time, stopping at the first failure), the HTTP client's error messages
against a fake server, and the whole command against three real graceful
processes on loopback.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from graceful import _ctl as ctl
from graceful._ctl import NodeError, NodeStatus, RollOptions, Verdict

from .support import (
    ROOT,
    Load,
    ServerProcess,
    child_environment,
    free_port,
    free_ports,
    get,
    wait_until,
)

# -- fakes ----------------------------------------------------------------------


def status_json(
    pid: int = 100,
    generation: int = 1,
    last_restart: dict[str, Any] | None = None,
    draining: bool = False,
    restarting: bool = False,
    failed_restarts: int = 0,
) -> dict[str, Any]:
    return {
        "pid": pid,
        "generation": generation,
        "started_at": 1000.0 + generation,
        "draining": draining,
        "restarting": restarting,
        "servers": [{"name": "web", "ports": [{"port": 8100, "tls": False}], "in_flight": 1}],
        "last_restart": last_restart,
        "failed_restarts": failed_restarts,
    }


class FakeNode:
    """
    A node whose restart takes C{polls} status requests to come out as
    C{outcome}: C{"ok"}, C{"fail"} (old process goes on, with the error),
    C{"hang"} (never comes back) or C{"unreachable-then-ok"}.
    """

    def __init__(self, name: str, outcome: str = "ok", polls: int = 2) -> None:
        self.name = name
        self.outcome = outcome
        self.polls = polls
        self.pid = 100
        self.generation = 1
        self.last_restart: dict[str, Any] | None = None
        self.failed_restarts = 0
        self.pending: int | None = None

    def status(self) -> dict[str, Any]:
        if self.pending is None:
            return status_json(self.pid, self.generation, self.last_restart, failed_restarts=self.failed_restarts)
        self.pending -= 1
        if self.outcome == "unreachable-then-ok" and self.pending == 0:
            raise NodeError(self.name, "unreachable: connection refused", transient=True)
        if self.pending > 0 or self.outcome == "hang":
            return status_json(self.pid, self.generation, self.last_restart, restarting=True)
        self.pending = None
        if self.outcome == "fail":
            self.failed_restarts += 1
            self.last_restart = {"ok": False, "error": "unknown key 'graceful.bogus'", "at": 5.0}
        else:
            self.pid += 1
            self.generation += 1
            self.last_restart = None  # the new process's own record
        return status_json(self.pid, self.generation, self.last_restart, failed_restarts=self.failed_restarts)

    def restart(self) -> None:
        if self.outcome == "refuse":
            raise NodeError(self.name, "a restart is already running there (409 Conflict)")
        self.pending = self.polls + (1 if self.outcome == "unreachable-then-ok" else 0)


class FakeClient:
    def __init__(self, *nodes: FakeNode) -> None:
        self.nodes = {node.name: node for node in nodes}
        self.calls: list[tuple[str, str]] = []

    def status(self, node: str) -> NodeStatus:
        self.calls.append(("status", node))
        return NodeStatus.from_json(node, self.nodes[node].status())

    def restart(self, node: str) -> None:
        self.calls.append(("restart", node))
        self.nodes[node].restart()

    def shutdown(self, node: str) -> None:
        self.calls.append(("shutdown", node))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


class Recorder:
    """
    A L{ctl.Progress} that remembers the events.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def begin(self, index: int, total: int, node: str, before: NodeStatus) -> None:
        self.events.append(("begin", node))

    def waiting(self, index: int, total: int, node: str, elapsed: float) -> None:
        pass

    def done(self, index: int, total: int, node: str, before: NodeStatus, after: NodeStatus, elapsed: float) -> None:
        self.events.append(("done", node))

    def failed(self, index: int, total: int, node: str, reason: str) -> None:
        self.events.append(("failed", node))

    def finish(self) -> None:
        self.events.append(("finish", ""))


def roll(client: FakeClient, nodes: list[str], timeout: float = 10.0) -> tuple[Recorder, FakeClock, Callable[[], Any]]:
    clock = FakeClock()
    progress = Recorder()

    def go() -> Any:
        return ctl.rolling_restart(
            client, nodes, progress, RollOptions(restart_timeout=timeout, poll_interval=0.5),
            sleep=clock.sleep, clock=clock,
        )

    return progress, clock, go


# -- the rolling restart's logic ------------------------------------------------------


class RollingRestartTests(SynchronousTestCase):
    def test_one_node_at_a_time_in_order(self) -> None:
        """
        Each node is restarted only once the one before it reports a moved
        generation.
        """
        client = FakeClient(FakeNode("a"), FakeNode("b"), FakeNode("c"))
        progress, clock, go = roll(client, ["a", "b", "c"])
        results = go()
        self.assertEqual([r.generation for r in results], [2, 2, 2])
        restarts = [i for i, call in enumerate(client.calls) if call[0] == "restart"]
        self.assertEqual([client.calls[i][1] for i in restarts], ["a", "b", "c"])
        for i, name in zip(restarts[1:], ["a", "b"]):
            # Before b's (c's) restart, a's (b's) last status showed generation 2.
            earlier = [call for call in client.calls[:i] if call[1] == name]
            self.assertEqual(earlier[-1][0], "status")
            self.assertEqual(client.nodes[name].generation, 2)
        self.assertEqual(
            progress.events,
            [("begin", "a"), ("done", "a"), ("begin", "b"), ("done", "b"),
             ("begin", "c"), ("done", "c"), ("finish", "")],
        )

    def test_stops_at_first_failure(self) -> None:
        """
        A node whose restart fails stops the roll; the nodes after it are not
        even asked for their status.
        """
        client = FakeClient(FakeNode("a"), FakeNode("b", "fail"), FakeNode("c"))
        progress, clock, go = roll(client, ["a", "b", "c"])
        error = self.assertRaises(NodeError, go)
        self.assertEqual(error.node, "b")
        self.assertIn("restart failed, the old process still serves", error.reason)
        self.assertIn("unknown key 'graceful.bogus'", error.reason)
        self.assertNotIn("c", {node for _, node in client.calls})
        self.assertEqual(client.nodes["a"].generation, 2)
        self.assertEqual(client.nodes["b"].generation, 1)
        self.assertEqual(progress.events[-2:], [("failed", "b"), ("finish", "")])

    def test_timeout(self) -> None:
        """
        A node whose generation does not move in time fails the roll, after a
        bounded number of polls.
        """
        client = FakeClient(FakeNode("a", "hang"), FakeNode("b"))
        progress, clock, go = roll(client, ["a", "b"], timeout=3.0)
        error = self.assertRaises(NodeError, go)
        self.assertEqual(error.node, "a")
        self.assertIn("did not move from 1 within 3s", error.reason)
        self.assertLessEqual(clock.now, 3.0)
        self.assertLessEqual(clock.sleeps, 7)
        self.assertNotIn("b", {node for _, node in client.calls})

    def test_unreachable_blip_while_waiting(self) -> None:
        """
        A node that does not answer one poll during its restart is polled
        again until the deadline.
        """
        client = FakeClient(FakeNode("a", "unreachable-then-ok"))
        progress, clock, go = roll(client, ["a"])
        [result] = go()
        self.assertEqual(result.generation, 2)

    def test_errors_while_waiting(self) -> None:
        """
        A server error (5xx) during the restart is polled through, as a
        node's old process may give one while it hands over; a wrong token
        or a foreign answer ends the node at once.
        """
        for error, fails in (
            (NodeError("a", "GET status answered 500", transient=True), False),
            (NodeError("a", "wrong or missing token (401 Unauthorized)"), True),
        ):
            node = FakeNode("a")
            real_status = node.status
            raised: list[NodeError] = []

            def status(error: NodeError = error) -> dict[str, Any]:
                if node.pending is not None and not raised:
                    raised.append(error)
                    raise error
                return real_status()

            node.status = status  # type: ignore[method-assign]
            progress, clock, go = roll(FakeClient(node), ["a"])
            if fails:
                self.assertIs(self.assertRaises(NodeError, go), error)
            else:
                self.assertEqual(go()[0].generation, 2)

    def test_refused(self) -> None:
        """
        A 409 on the restart request fails the node at once.
        """
        client = FakeClient(FakeNode("a", "refuse"), FakeNode("b"))
        progress, clock, go = roll(client, ["a", "b"])
        error = self.assertRaises(NodeError, go)
        self.assertIn("409", error.reason)
        self.assertEqual(clock.sleeps, 0)

    def test_already_restarting_or_draining(self) -> None:
        """
        A node that is restarting or shutting down is not asked to restart.
        """
        for flags, words in (({"restarting": True}, "already running"), ({"draining": True}, "shutting down")):
            node = FakeNode("a")
            node.status = lambda flags=flags: status_json(**flags)  # type: ignore[method-assign,misc]
            client = FakeClient(node)
            progress, clock, go = roll(client, ["a"])
            error = self.assertRaises(NodeError, go)
            self.assertIn(words, error.reason)
            self.assertNotIn(("restart", "a"), client.calls)


class JudgeTests(SynchronousTestCase):
    def judge(self, before: dict[str, Any], now: dict[str, Any]) -> tuple[Verdict, str]:
        return ctl.judge(NodeStatus.from_json("n", before), NodeStatus.from_json("n", now))

    def test_new_generation(self) -> None:
        """
        A moved generation is done, whether the new process reports no
        restart yet or the one that made it.
        """
        before = status_json(100, 1)
        self.assertEqual(self.judge(before, status_json(101, 2))[0], Verdict.DONE)
        ok = {"ok": True, "error": None, "at": 9.0, "handoff_seconds": 0.3}
        self.assertEqual(self.judge(before, status_json(101, 2, ok))[0], Verdict.DONE)

    def test_old_process_still_answering(self) -> None:
        """
        The old process, restarting or already handing over (draining, with
        a good restart recorded), means: wait.
        """
        before = status_json(100, 1)
        self.assertEqual(self.judge(before, status_json(100, 1, restarting=True))[0], Verdict.WAITING)
        ok = {"ok": True, "error": None, "at": 9.0}
        self.assertEqual(self.judge(before, status_json(100, 1, ok, draining=True))[0], Verdict.WAITING)

    def test_failed(self) -> None:
        """
        A failure newer than the one before is a failure; the old one is not.
        """
        old_failure = {"ok": False, "error": "old", "at": 1.0}
        before = status_json(100, 1, old_failure, failed_restarts=1)
        self.assertEqual(self.judge(before, before)[0], Verdict.WAITING)
        new_failure = {"ok": False, "error": "bad config", "at": 2.0}
        verdict, reason = self.judge(before, status_json(100, 1, new_failure, failed_restarts=2))
        self.assertEqual(verdict, Verdict.FAILED)
        self.assertIn("bad config", reason)

    def test_shut_down_or_replaced(self) -> None:
        before = status_json(100, 1)
        self.assertEqual(self.judge(before, status_json(100, 1, draining=True))[0], Verdict.FAILED)
        self.assertEqual(self.judge(before, status_json(555, 1))[0], Verdict.FAILED)

    def test_not_graceful(self) -> None:
        data: Any
        for data in ({"hello": 1}, [], {"pid": 1, "generation": 1, "servers": [{"ports": 3}]}):
            error = self.assertRaises(NodeError, NodeStatus.from_json, "n", data)
            self.assertIn("not a graceful admin API", error.reason)


# -- arguments, tables, output ---------------------------------------------------


class CommandLineTests(SynchronousTestCase):
    def test_nodes_from_options_and_files(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("# the fleet\nhttp://10.0.0.6:8100/debug/admin/   # second\n\nhttps://10.0.0.7:8100/admin/status\n")
        self.addCleanup(os.unlink, f.name)
        nodes = ctl.read_nodes(["http://10.0.0.5:8100/debug/admin"], [f.name])
        self.assertEqual(
            nodes,
            ["http://10.0.0.5:8100/debug/admin", "http://10.0.0.6:8100/debug/admin", "https://10.0.0.7:8100/admin"],
        )
        self.assertRaises(ctl.UsageError, ctl.read_nodes, [], [])
        self.assertRaises(ctl.UsageError, ctl.read_nodes, ["10.0.0.5:8100"], [])
        self.assertRaises(ctl.UsageError, ctl.read_nodes, ["http://a/x", "http://a/x/"], [])
        self.assertRaises(ctl.UsageError, ctl.read_nodes, [], ["/nonexistent/nodes"])

    def test_token(self) -> None:
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("s3cret\n")
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(ctl.read_token(None, f.name, {}), "s3cret")
        self.assertEqual(ctl.read_token("t", None, {}), "t")
        self.assertEqual(ctl.read_token(None, None, {ctl.TOKEN_VARIABLE: "env"}), "env")
        self.assertIsNone(ctl.read_token(None, None, {}))
        Path(f.name).write_text("\n")
        self.assertRaises(ctl.UsageError, ctl.read_token, None, f.name, {})

    def test_usage_errors(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(ctl.main(["--node", "ftp://x", "status"], out, err), ctl.USAGE)
        self.assertIn("http:// or https://", err.getvalue())
        self.assertEqual(ctl.main(["status"], out, io.StringIO()), ctl.USAGE)
        self.assertEqual(ctl.main(["--node", "http://x/a", "--timeout", "0", "status"], out, io.StringIO()), ctl.USAGE)

    def test_table(self) -> None:
        table = ctl.format_table(["NAME", "N"], [["a", "1"], ["longer", "100"]])
        self.assertEqual(table, "NAME      N\na         1\nlonger  100\n")

    def test_status_table(self) -> None:
        good = NodeStatus.from_json(
            "http://h1/a",
            status_json(100, 3, {"ok": True, "error": None, "at": 1000.0, "handoff_seconds": 0.25}),
        )
        bad = NodeError("http://h2/a", "unreachable: connection refused")
        lines = ctl.status_table([good, bad], now=1100.0).splitlines()
        self.assertEqual(lines[0].split(), ["NODE", "PID", "GEN", "UPTIME", "STATE", "IN-FLIGHT", "LAST", "RESTART"])
        self.assertEqual(lines[1].split()[:6], ["http://h1/a", "100", "3", "1m37s", "serving", "1"])
        self.assertIn("ok in 0.25s, 1m40s ago", lines[1])
        self.assertIn("ERROR", lines[2])
        self.assertIn("unreachable: connection refused", lines[2])
        # Aligned: every column starts at the same offset on every line.
        self.assertEqual(lines[0].index("PID") + 3, lines[1].index("100") + 3)

    def test_durations(self) -> None:
        self.assertEqual(
            [ctl.duration(s) for s in (5, 75, 7500, 90000)], ["5s", "1m15s", "2h05m", "1d01h"]
        )

    def test_progress_bar_and_plain(self) -> None:
        before = NodeStatus.from_json("n", status_json(100, 1))
        after = NodeStatus.from_json("n", status_json(101, 2))
        for kind in (ctl.PlainProgress, ctl.BarProgress):
            out = io.StringIO()
            progress = kind(out)
            progress.begin(0, 2, "n", before)
            progress.waiting(0, 2, "n", 0.5)
            progress.done(0, 2, "n", before, after, 0.7)
            progress.failed(1, 2, "m", "why")
            progress.finish()
            text = out.getvalue()
            self.assertIn("[1/2] n: ok: generation 1 -> 2, pid 100 -> 101, 0.7s\n", text)
            self.assertIn("[2/2] m: FAILED: why\n", text)
            self.assertEqual("\r" in text, kind is ctl.BarProgress)

    def test_restart_output_names_the_failed_node(self) -> None:
        client = FakeClient(FakeNode("a"), FakeNode("b", "fail"), FakeNode("c"))
        arguments = ctl.parse_arguments(["restart", "--poll-interval", "0.01"])
        out, err = io.StringIO(), io.StringIO()
        status = ctl.run(arguments, client, ["a", "b", "c"], out, err, ctl.PlainProgress(out))
        self.assertEqual(status, ctl.FAILED)
        self.assertIn("restart stopped at b: restart failed", err.getvalue())
        self.assertIn("not restarted: c", err.getvalue())


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
