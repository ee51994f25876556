"""
Unit tests of L{graceful._history}: the restart history's records, kept
to the newest L{HISTORY_LENGTH}, written and read back as JSON.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graceful._history import HISTORY_LENGTH, RestartLog, RestartRecord, VerifyResult
from graceful._status import StatusError


class RestartLogTests(SynchronousTestCase):
    def test_keeps_the_newest(self) -> None:
        log = RestartLog()
        for generation in range(2, HISTORY_LENGTH + 12):
            log.begin(RestartRecord(generation, 100, float(generation)))
        self.assertEqual(len(log.records), HISTORY_LENGTH)
        self.assertEqual(log.records[-1].generation, HISTORY_LENGTH + 11)
        self.assertEqual(log.records[0].generation, 12)

    def test_failed_marks_the_running_one(self) -> None:
        log = RestartLog()
        log.begin(RestartRecord(2, 100, 1.0))
        log.failed("verify s1 /healthz answered 503")
        [record] = log.records
        self.assertEqual((record.outcome, record.reason), ("failed", "verify s1 /healthz answered 503"))
        self.assertEqual(record.verify, VerifyResult(False, "verify s1 /healthz answered 503"))
        log.failed("again")  # nothing runs: nothing changes
        self.assertEqual(record.reason, "verify s1 /healthz answered 503")

    def test_json_round_trip(self) -> None:
        log = RestartLog()
        record = log.begin(RestartRecord(2, 100, 1.5, new_pid=200, ready=2.0, handed_over=2.1))
        record.outcome = "ok"
        record.verify = VerifyResult(True, "s1 /healthz")
        data = log.to_json()
        self.assertEqual(
            data[0],
            {
                "generation": 2, "kind": "handover", "old_pid": 100, "new_pid": 200,
                "started": 1.5, "ready": 2.0, "handed_over": 2.1, "released": None,
                "exited": None, "outcome": "ok", "reason": None,
                "verify": {"ok": True, "detail": "s1 /healthz"}, "canary": None,
            },
        )
        self.assertEqual(RestartLog.from_json(data), log)

    def test_reads_what_an_older_node_leaves_out(self) -> None:
        [record] = RestartLog.from_json([{"generation": 3, "old_pid": 7, "started": 1}]).records
        self.assertEqual((record.outcome, record.new_pid, record.verify), ("running", None, None))

    def test_wrong_shape_named(self) -> None:
        error = self.assertRaises(
            StatusError, RestartLog.from_json, [{"generation": 2, "old_pid": 1, "started": "soon"}]
        )
        self.assertEqual(str(error), "history[0].started: expected a number, got 'soon'")
        error = self.assertRaises(
            StatusError,
            RestartLog.from_json,
            [{"generation": 2, "old_pid": 1, "started": 1, "outcome": "great"}],
        )
        self.assertIn("history[0].outcome", str(error))
