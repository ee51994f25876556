"""
Every message on the pipes: one line of kind and JSON, read back the same;
the lines of the release before (key=value words, a bare reason) still
read, and what this release does not know is left alone.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff.messages import (
    Accepted,
    Error,
    Group,
    Need,
    Ready,
    Released,
    RestartRequest,
    Retire,
    ShutdownRequest,
    SlotServes,
    Started,
    Status,
    decode,
    encode,
    WorkersRequest,
)
from graceful._sockets import ListenSpec
from graceful._status import PortStatus, ProcessStatus, ServerStatus, WorkerStatus


class RoundTripTests(SynchronousTestCase):
    def test_every_kind(self) -> None:
        for message in [
            Ready(claimed=["web/http/8100/0"], workers=3),
            Ready(),
            SlotServes(2),
            Started(),
            Error("port 8100 is used twice"),
            Accepted(handoff_seconds=0.25, at=1700000000.5, restarts=3, failed_restarts=1),
            Accepted(restarts=1, history=[{"generation": 2, "old_pid": 4, "started": 1.5}]),
            Released(1700000000.25),
            Released(),
            Need([ListenSpec("web", True, 8443, "127.0.0.1", 1), ListenSpec("web", False, 0, "", 0, "/run/a.sock")]),
            Status(ProcessStatus(pid=5, generation=2, servers=(), role="worker", rss_mib=40.5)),
            Group(
                ProcessStatus(
                    pid=4,
                    generation=2,
                    servers=(ServerStatus("web", (PortStatus(port=8100),), requests=3),),
                    role="master",
                    workers=(WorkerStatus(pid=5, slot=0, generation=2, ready=True),),
                )
            ),
            Group(ProcessStatus(pid=4, generation=2, servers=()), [{"generation": 2}]),
            WorkersRequest(3),
            RestartRequest("/srv/app/current/app"),
            RestartRequest(),
            ShutdownRequest(),
            Retire(),
        ]:
            line = encode(message)
            self.assertTrue(line.endswith(b"\n") and line.count(b"\n") == 1, line)
            self.assertEqual(decode(line.decode()), message)

    def test_one_line_even_for_a_multiline_reason(self) -> None:
        line = encode(Error("first\nsecond"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(decode(line.decode()), Error("first\nsecond"))


class OlderReleaseTests(SynchronousTestCase):
    """
    The first restart into this release is an old process talking to a new
    one: its lines must still be read.
    """

    def test_key_value_words(self) -> None:
        self.assertEqual(
            decode("accepted handoff_seconds=0.5 at=10.25 restarts=3 failed_restarts=1 bad=x"),
            Accepted(handoff_seconds=0.5, at=10.25, restarts=3, failed_restarts=1),
        )
        self.assertEqual(decode("released at=1700000000.250000"), Released(1700000000.25))
        self.assertEqual(decode("released"), Released())

    def test_bare_reason(self) -> None:
        self.assertEqual(decode("error port 8100 is used twice"), Error("port 8100 is used twice"))

    def test_payloads_that_were_json_already(self) -> None:
        self.assertEqual(decode('ready {"claimed": ["a"], "workers": 2}'), Ready(["a"], 2))
        self.assertEqual(decode("ready"), Ready())
        self.assertEqual(
            decode('status {"pid": 5, "generation": 1, "servers": []}'),
            Status(ProcessStatus(pid=5, generation=1, servers=())),
        )
        # A status that is not one is dropped, as a kind this release does not know.
        self.assertIsNone(decode('status {"pid": 5}'))
        self.assertIsNone(decode('group {"status": {"pid": 5, "generation": 1, "servers": 3}}'))
        self.assertEqual(
            decode('need [{"server": "web", "tls": false, "port": 8101}]'),
            Need([ListenSpec("web", False, 8101)]),
        )
        self.assertEqual(decode("retire"), Retire())


class UnknownTests(SynchronousTestCase):
    def test_unknown_kind(self) -> None:
        self.assertIsNone(decode('shout {"loud": true}'))

    def test_unknown_fields_are_ignored(self) -> None:
        self.assertEqual(decode('serves {"slot": 1, "later": "field"}'), SlotServes(1))

    def test_unreadable_fields(self) -> None:
        self.assertIsNone(decode('status ["not", "an", "object"]'))
        self.assertIsNone(decode('need [{"server": "web"}]'))
        self.assertIsNone(decode('serves {"slot": "x", "extra"'))
