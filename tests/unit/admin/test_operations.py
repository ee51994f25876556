"""
Unit tests of L{graceful.admin.operations}: C{GET history} and C{POST
workers} beside the admin's other pages, with its token rules, through a
runtime on a memory environment.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from graceful.workers.master import MasterRole

from .test_resource import PREFIX, TOKEN, ask, build


class HistoryTests(SynchronousTestCase):
    def test_lists_the_restarts(self) -> None:
        runtime, server = build(token=TOKEN)
        failed = runtime.restart()
        runtime.new_process_failed("new process 5555 exited with status 1: boom")
        answer = ask(server, "GET", PREFIX + "/history")
        self.assertEqual(answer.code, 200)
        [record] = answer.json()["history"]
        self.assertEqual(
            (record["generation"], record["old_pid"], record["outcome"], record["reason"]),
            (2, 4242, "failed", "new process 5555 exited with status 1: boom"),
        )
        self.assertIsNone(record["canary"])
        self.failureResultOf(failed)

    def test_empty_before_any_restart(self) -> None:
        runtime, server = build(token=TOKEN)
        self.assertEqual(ask(server, "GET", PREFIX + "/history").json(), {"history": []})

    def test_token_needed(self) -> None:
        runtime, server = build(token=TOKEN)
        answer = ask(server, "GET", PREFIX + "/history", auth=False)
        self.assertEqual(answer.code, 401)
        self.assertNotIn(b"history", answer.body)

    def test_needs_get(self) -> None:
        runtime, server = build(token=TOKEN)
        answer = ask(server, "POST", PREFIX + "/history")
        self.assertEqual((answer.code, answer.header("allow")), (405, "GET, HEAD"))


class WorkersTests(SynchronousTestCase):
    def master(self):  # type: ignore[no-untyped-def]
        runtime, server = build(token=TOKEN)
        runtime.settings.workers = 2
        role = runtime._the_role()
        assert isinstance(role, MasterRole)
        changes: list[int] = []
        role.set_workers = lambda count, step=0, why="": changes.append(count) or count  # type: ignore[assignment,method-assign,func-returns-value]
        return runtime, server, changes

    def test_form_count(self) -> None:
        runtime, server, changes = self.master()
        answer = ask(server, "POST", PREFIX + "/workers", form={"count": "3"})
        self.assertEqual(answer.code, 202)
        self.assertEqual(answer.json(), {"workers": 3, "pid": 4242})
        self.assertEqual(changes, [3])

    def test_json_count(self) -> None:
        runtime, server, changes = self.master()
        answer = ask(
            server, "POST", PREFIX + "/workers",
            content=("application/json", json.dumps({"count": 4}).encode()),
        )
        self.assertEqual((answer.code, changes), (202, [4]))

    def test_bad_count(self) -> None:
        runtime, server, changes = self.master()
        for form in ({"count": "zero"}, {"count": "0"}, {}):
            answer = ask(server, "POST", PREFIX + "/workers", form=form)
            self.assertEqual(answer.code, 400, form)
            self.assertIn("count", answer.json()["error"])
        self.assertEqual(changes, [])

    def test_conflict_while_starting(self) -> None:
        """
        The real role: its workers have not started yet, so the count
        cannot change now.
        """
        runtime, server = build(token=TOKEN)
        runtime.settings.workers = 2
        answer = ask(server, "POST", PREFIX + "/workers", form={"count": "3"})
        self.assertEqual(answer.code, 409)
        self.assertEqual(answer.json()["error"], "workers: the workers are still starting")

    def test_serving_alone(self) -> None:
        runtime, server = build(token=TOKEN)
        answer = ask(server, "POST", PREFIX + "/workers", form={"count": "3"})
        self.assertEqual(answer.code, 404)
        self.assertIn("serves alone", answer.json()["error"])

    def test_token_and_method(self) -> None:
        runtime, server, changes = self.master()
        self.assertEqual(ask(server, "POST", PREFIX + "/workers", form={"count": "3"}, auth=False).code, 401)
        answer = ask(server, "GET", PREFIX + "/workers")
        self.assertEqual((answer.code, answer.header("allow")), (405, "POST"))
        self.assertEqual(changes, [])

    def test_cross_site_refused(self) -> None:
        runtime, server, changes = self.master()
        answer = ask(
            server, "POST", PREFIX + "/workers", form={"count": "3"},
            headers={"Origin": "https://evil.example", "Authorization": f"Bearer {TOKEN}"},
        )
        self.assertEqual(answer.code, 403)
        self.assertEqual(changes, [])
