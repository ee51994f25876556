"""
Unit tests for L{graceful.ctl.roll}: the rolling restart's logic against
fake nodes (in order, one at a time, stopping at the first failure) and its
verdicts.  The HTTP client and the whole command against real processes are
in tests/integration/test_ctl.py.
"""

from __future__ import annotations

import io
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from graceful.ctl import output, roll as ctl
from graceful.ctl.client import NodeError, NodeStatus
from graceful.ctl.roll import RollOptions, Verdict


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
    C{"hang"} (never comes back), C{"unreachable-then-ok"}, or
    C{"early-then-fail"} (the new process answers once, before it is ready,
    then its start fails and the old process answers again).
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
        if self.outcome == "early-then-fail" and self.pending == 1:
            # The new process, not yet told it took over: no record of it.
            return status_json(self.pid + 1, self.generation + 1, None)
        if self.pending > 0 or self.outcome == "hang":
            return status_json(self.pid, self.generation, self.last_restart, restarting=True)
        self.pending = None
        if self.outcome in ("fail", "early-then-fail"):
            self.failed_restarts += 1
            self.last_restart = {"ok": False, "error": "unknown key 'graceful.bogus'", "at": 5.0}
        else:
            self.pid += 1
            self.generation += 1
            # The new process's record of the handoff that made it.
            self.last_restart = {"ok": True, "error": None, "at": 6.0, "handoff_seconds": 0.2}
        return status_json(self.pid, self.generation, self.last_restart, failed_restarts=self.failed_restarts)

    def restart(self) -> dict[str, Any]:
        if self.outcome == "refuse":
            raise NodeError(self.name, "a restart is already running there (409 Conflict)")
        if self.outcome == "coalesced":
            return {"restarting": False, "coalesced": True, "generation": self.generation}
        self.pending = self.polls + (1 if self.outcome == "unreachable-then-ok" else 0)
        return {"restarting": True, "generation": self.generation}


class FakeClient:
    def __init__(self, *nodes: FakeNode) -> None:
        self.nodes = {node.name: node for node in nodes}
        self.calls: list[tuple[str, str]] = []

    def status(self, node: str) -> NodeStatus:
        self.calls.append(("status", node))
        return NodeStatus.from_json(node, self.nodes[node].status())

    def restart(self, node: str) -> dict[str, Any]:
        self.calls.append(("restart", node))
        return self.nodes[node].restart()

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

    def test_new_process_answers_before_it_is_ready(self) -> None:
        """
        A new process that answers before it was told it took over, and
        then fails its start: the restart is a failure, not a success.
        """
        client = FakeClient(FakeNode("a", "early-then-fail", polls=3))
        progress, clock, go = roll(client, ["a"])
        error = self.assertRaises(NodeError, go)
        self.assertIn("restart failed, the old process still serves", error.reason)
        self.assertEqual(progress.events, [("begin", "a"), ("failed", "a"), ("finish", "")])

    def test_coalesced(self) -> None:
        """
        A node that answers that its restart of a moment ago covers this
        one is done at once, and the roll goes on.
        """
        client = FakeClient(FakeNode("a", "coalesced"), FakeNode("b"))
        progress, clock, go = roll(client, ["a", "b"])
        results = go()
        self.assertEqual([r.generation for r in results], [1, 2])
        self.assertEqual(clock.sleeps, 2)  # b's polls only
        out = io.StringIO()
        status = NodeStatus.from_json("a", status_json())
        output.PlainProgress(out).done(0, 1, "a", status, status, 0.0)
        self.assertIn("a: ok: generation 1 (pid 100) was restarted a moment ago", out.getvalue())

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
        A moved generation is done once the process answering reports the
        good restart that made it; before that it may still fail its start.
        """
        before = status_json(100, 1)
        self.assertEqual(self.judge(before, status_json(101, 2))[0], Verdict.WAITING)
        ok = {"ok": True, "error": None, "at": 9.0, "handoff_seconds": 0.3}
        self.assertEqual(self.judge(before, status_json(101, 2, ok))[0], Verdict.DONE)
        before = status_json(100, 1, ok)
        self.assertEqual(self.judge(before, status_json(101, 2, ok))[0], Verdict.WAITING)
        later = {**ok, "at": 12.0}
        self.assertEqual(self.judge(before, status_json(101, 2, later))[0], Verdict.DONE)

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
