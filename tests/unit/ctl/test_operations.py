"""
Unit tests of L{graceful.ctl.operations}: C{graceful ctl history} prints
one line per restart per node, C{graceful ctl workers N} asks each node,
through C{main} with a fake client.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful._history import RestartRecord, VerifyResult
from graceful.ctl import cli, client
from graceful.ctl.cli import NodeError, parse_arguments, run
from graceful.ctl.operations import history_line

A, B = "http://127.0.0.1:8100/debug/admin", "http://127.0.0.1:8200/debug/admin"
STARTED = 1_700_000_000.0


def _record(**kwargs: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(generation=2, old_pid=100, started=STARTED, new_pid=200)
    fields.update(kwargs)
    return RestartRecord(**fields).to_json()


class FakeClient:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    def history(self, node: str) -> Any:
        answer = self.answers[node]
        if isinstance(answer, NodeError):
            raise answer
        return answer

    def workers(self, node: str, count: int) -> Any:
        self.asked.append((node, count))
        answer = self.answers[node]
        if isinstance(answer, NodeError):
            raise answer
        return {"workers": count, "pid": 100}


def ctl(client: FakeClient, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    arguments = parse_arguments(["--node", A, "--node", B, *argv])
    code = run(arguments, client, [A, B], out, err, cli.PlainProgress(out))  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


class HistoryTests(SynchronousTestCase):
    def test_one_line_per_restart_per_node(self) -> None:
        failed = _record(outcome="failed", reason="new process 200 exited with status 1: boom")
        ok = _record(
            generation=2, new_pid=201, started=STARTED + 60, ready=STARTED + 60.8,
            handed_over=STARTED + 60.81, released=STARTED + 61, exited=STARTED + 62.5,
            outcome="ok", verify=VerifyResult(True, "s1 /healthz"),
        )
        client = FakeClient({A: {"history": [failed, ok]}, B: {"history": []}})
        code, out, err = ctl(client, "history")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].startswith(f"{A}  gen 2  100 -> 200  FAILED  "), lines[0])
        self.assertTrue(lines[0].endswith("reason: new process 200 exited with status 1: boom"))
        self.assertIn(
            "100 -> 201  ok", lines[1]
        )
        self.assertTrue(
            lines[1].endswith(
                "ready +0.80s  handed over +0.81s  released +1.00s  exited +2.50s  verify ok"
            ),
            lines[1],
        )
        self.assertEqual(lines[2], f"{B}  no restart yet")

    def test_started_in_local_time(self) -> None:
        line = history_line(A, RestartRecord(2, 100, STARTED))
        self.assertIn(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(STARTED)), line)
        self.assertIn("100 -> ?  running", line)

    def test_roll_and_failed_verify_shown(self) -> None:
        record = RestartRecord(
            3, 1, STARTED, new_pid=1, kind="roll", outcome="failed",
            verify=VerifyResult(False, "verify s1 /healthz answered 503"),
            reason="verify s1 /healthz answered 503",
        )
        line = history_line(A, record)
        self.assertIn("gen 3  roll  1 -> 1  FAILED", line)
        self.assertIn("verify failed", line)

    def test_canary_ratios_shown(self) -> None:
        canary = {"old_error_ratio": 0.0, "new_error_ratio": 0.4998, "passed": False}
        record = RestartRecord(3, 1, STARTED, outcome="failed", canary=canary, reason="canary")
        self.assertIn("canary failed, error ratio 0.4998 against 0.0000", history_line(A, record))
        canary = {"old_error_ratio": 0.01, "new_error_ratio": 0.0, "passed": True}
        record = RestartRecord(3, 1, STARTED, outcome="ok", canary=canary)
        self.assertIn("canary passed, error ratio 0.0000 against 0.0100", history_line(A, record))

    def test_a_node_that_fails_is_named(self) -> None:
        client = FakeClient({A: NodeError(A, "wrong or missing token (401 Unauthorized)"), B: {"history": []}})
        code, out, err = ctl(client, "history")
        self.assertEqual(code, 1)
        self.assertEqual(err, f"graceful ctl: {A}: wrong or missing token (401 Unauthorized)\n")
        self.assertEqual(out, f"{B}  no restart yet\n")

    def test_not_a_history(self) -> None:
        client = FakeClient({A: {"pid": 1}, B: {"history": [{"generation": "x"}]}})
        code, out, err = ctl(client, "history")
        self.assertEqual(code, 1)
        self.assertIn(f"{A}: not a history", err)
        self.assertIn(f"{B}: history[0].generation: expected a whole number", err)

    def test_json(self) -> None:
        client = FakeClient({A: {"history": [_record()]}, B: {"history": []}})
        code, out, err = ctl(client, "--json", "history")
        self.assertEqual(json.loads(out)[0]["history"][0]["new_pid"], 200)
        self.assertEqual(json.loads(out)[1], {"node": B, "history": []})


class WorkersTests(SynchronousTestCase):
    def test_every_node_asked(self) -> None:
        client = FakeClient({A: {}, B: {}})
        code, out, err = ctl(client, "workers", "3")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(client.asked, [(A, 3), (B, 3)])
        self.assertEqual(out, f"{A}: 3 worker(s) asked for (master 100)\n{B}: 3 worker(s) asked for (master 100)\n")

    def test_refusal_named(self) -> None:
        client = FakeClient({A: NodeError(A, "refused (409): workers: a restart is running"), B: {}})
        code, out, err = ctl(client, "workers", "3")
        self.assertEqual(code, 1)
        self.assertEqual(err, f"graceful ctl: {A}: refused (409): workers: a restart is running\n")

    def test_count_needed(self) -> None:
        code, out, err = ctl(FakeClient({}), "workers")
        self.assertEqual(code, 2)
        self.assertIn("workers needs a count", err)

    def test_bad_count_is_usage(self) -> None:
        err = io.StringIO()
        code = cli.main(["--node", A, "workers", "0"], out=io.StringIO(), err=err)
        self.assertEqual(code, 2)

    def test_refusal_explained(self) -> None:
        self.assertEqual(
            client._explain_http_error("POST", "workers", 404, "workers: this process serves alone"),
            "refused (404): workers: this process serves alone",
        )
