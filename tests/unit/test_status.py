"""
The status classes: they write exactly the admin API's JSON (a public
format), read the JSON of nodes of older versions, and refuse wrong shapes
with one line that names the field.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from graceful.http.site import DrainingSite
from graceful.process.runtime import Runtime
from graceful.http.server import Listener
from graceful._sockets import ListenSpec
from graceful._status import (
    DrainStatus,
    LastRestart,
    PortStatus,
    ProcessStatus,
    ServerStatus,
    StatusError,
    WorkerStatus,
)

#: A process serving alone, draining after a restart (as graceful writes it).
SINGLE: dict[str, Any] = {
    "pid": 4242,
    "role": "single",
    "generation": 3,
    "started_at": 1796176165.0304258,
    "uptime": 5.021102666854858,
    "draining": True,
    "restarting": False,
    "servers": [
        {
            "name": "web",
            "ports": [{"port": 8100, "tls": False}, {"port": 8443, "tls": True}],
            "in_flight": 2,
            "requests": 117,
            "connections": {"http/1.1": 1, "h2": 0, "websocket": 2, "stream": 0},
            "refused": {"limit_concurrency": 4},
        },
        {
            "name": "private",
            "ports": [{"unix": "/run/app.sock", "tls": False}],
            "in_flight": 0,
            "requests": 0,
            "connections": {"http/1.1": 0, "h2": 0, "websocket": 0, "stream": 0},
        },
    ],
    "drain": {"reason": "restart", "elapsed": 1.5, "spread": 5.0, "timeout": 30, "connections_left": 3},
    "last_restart": {"ok": True, "error": None, "at": 1796176185.3140175, "handoff_seconds": 0.25},
    "restarts": 2,
    "failed_restarts": 1,
}

#: A master in the middle of a roll, taken from a real one: slot 1 shows its
#: old worker draining and its successor serving.
MASTER: dict[str, Any] = {
    "pid": 17837,
    "role": "master",
    "generation": 2,
    "started_at": 1796176177.485767,
    "uptime": 7.828622817993164,
    "draining": False,
    "restarting": True,
    "servers": [
        {"name": "web", "ports": [{"port": 59155, "tls": False}], "in_flight": 0, "requests": 83}
    ],
    "drain": None,
    "last_restart": {"ok": True, "error": None, "at": 1796176185.3140175, "handoff_seconds": 4.249249696731567},
    "restarts": 1,
    "failed_restarts": 0,
    "workers": [
        {"pid": 17919, "slot": 0, "generation": 2, "ready": True, "draining": False, "in_flight": 0,
         "requests": 19, "rss_mib": 51.3, "last_heartbeat": 0.208, "last_replaced_reason": "roll",
         "started_at": 1796176181.07846},
        {"pid": 17851, "slot": 1, "generation": 1, "ready": True, "draining": True, "in_flight": 0,
         "requests": 64, "rss_mib": 51.5, "last_heartbeat": 0.111, "last_replaced_reason": "roll",
         "started_at": 1796176177.5078108},
        {"pid": 17935, "slot": 1, "generation": 2, "ready": False, "draining": False, "in_flight": 0,
         "requests": 0, "rss_mib": None, "last_heartbeat": None, "last_replaced_reason": "died",
         "started_at": 1796176183.100735},
    ],
    "worker_deaths": 1,
    "worker_recycles": 0,
    "worker_timeouts": 0,
    "last_replaced_reason": {"0": "roll", "1": "died"},
}

#: What a worker answers: its master's status, with its own pid.
WORKER: dict[str, Any] = {**copy.deepcopy(MASTER), "worker": 17919}


class _Port:
    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8100)


def text(data: dict[str, Any]) -> str:
    # The admin API writes the dict as it is: key order is part of the text.
    return json.dumps(data, indent=1)


class RoundTripTests(SynchronousTestCase):
    """
    C{from_json} then C{to_json} gives back what graceful wrote, key for
    key and in the same order, for each of the three shapes.
    """

    def check(self, data: dict[str, Any]) -> ProcessStatus:
        status = ProcessStatus.from_json(copy.deepcopy(data))
        self.assertEqual(text(status.to_json()), text(data))
        self.assertEqual(ProcessStatus.from_json(status.to_json()), status)
        return status

    def test_single(self) -> None:
        status = self.check(SINGLE)
        self.assertIsNone(status.workers)
        self.assertEqual(status.state, "draining")
        self.assertEqual(status.in_flight, 2)
        self.assertEqual(
            status.servers[0].ports, (PortStatus(port=8100), PortStatus(port=8443, tls=True))
        )
        self.assertEqual(status.servers[1].ports[0].where, "unix:/run/app.sock")
        self.assertEqual(
            status.drain,
            DrainStatus(reason="restart", elapsed=1.5, spread=5.0, timeout=30, connections_left=3),
        )
        self.assertNotIn("workers", status.to_json())

    def test_master(self) -> None:
        status = self.check(MASTER)
        assert status.workers is not None
        self.assertEqual([(w.slot, w.state) for w in status.workers],
                         [(0, "serving"), (1, "draining"), (1, "starting")])
        self.assertEqual(status.last_replaced_reason, {0: "roll", 1: "died"})
        self.assertIsNone(status.worker)
        self.assertIsNone(status.servers[0].connections)
        self.assertNotIn("connections", status.to_json()["servers"][0])

    def test_worker(self) -> None:
        status = self.check(WORKER)
        self.assertEqual(status.worker, 17919)
        self.assertEqual(list(status.to_json())[-1], "worker")

    def test_new_fields_only_when_set(self) -> None:
        """
        The master's own generation and the counts by reason appear only
        when a master says them; today's JSON has neither.
        """
        status = ProcessStatus.from_json(MASTER)
        self.assertNotIn("master_generation", status.to_json())
        upgraded = ProcessStatus.from_json(
            {**MASTER, "master_generation": 4, "worker_replacements": {"roll": 3, "died": 1}}
        )
        self.assertEqual(upgraded.master_generation, 4)
        self.assertEqual(upgraded.to_json()["worker_replacements"], {"roll": 3, "died": 1})

    def test_what_the_runtime_writes(self) -> None:
        """
        The JSON a serving runtime writes comes back the same.
        """
        runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=77)
        server = runtime.server("s1")
        server.site = DrainingSite(server.router, server_name="s1", reactor=runtime.reactor)
        server.listeners.append(Listener(ListenSpec("s1", False, 8100, "", 0), _Port()))  # type: ignore[arg-type]
        runtime.core.history.last = LastRestart(False, "the new process exited", 1000.0)
        written = runtime.status().to_json()
        status = ProcessStatus.from_json(written)
        self.assertEqual(text(status.to_json()), text(written))
        self.assertEqual(runtime.status().pid, 77)
        self.assertEqual(status.last_restart, LastRestart(ok=False, error="the new process exited", at=1000.0))
        self.assertEqual(status.servers[0].connections, {"http/1.1": 0, "h2": 0, "websocket": 0, "stream": 0})

    def test_built_by_hand(self) -> None:
        """
        A status built in code writes the JSON a reader expects.
        """
        status = ProcessStatus(
            pid=1,
            generation=2,
            servers=(ServerStatus("web", (PortStatus(port=80),), in_flight=1, requests=5),),
            started_at=10.0,
            uptime=1.0,
            workers=(WorkerStatus(pid=11, slot=0, generation=2, ready=True),),
        )
        data = status.to_json()
        self.assertEqual(data["servers"], [{"name": "web", "ports": [{"port": 80, "tls": False}], "in_flight": 1, "requests": 5}])
        self.assertEqual(data["workers"][0]["rss_mib"], None)
        self.assertEqual(data["last_replaced_reason"], {})
        self.assertEqual(ProcessStatus.from_json(data), status)


class OlderNodeTests(SynchronousTestCase):
    """
    A node of an older version writes fewer keys: they take their defaults.
    """

    def test_the_first_status(self) -> None:
        status = ProcessStatus.from_json(
            {
                "pid": 5,
                "generation": 1,
                "servers": [{"name": "web", "ports": [{"port": 8100}], "in_flight": 0}],
                "last_restart": {"ok": False, "error": "boom"},
                "unknown_to_us": [1, 2],
            }
        )
        self.assertEqual(status.role, "single")
        self.assertIsNone(status.started_at)
        self.assertFalse(status.draining)
        self.assertEqual(status.state, "serving")
        self.assertEqual((status.restarts, status.failed_restarts), (0, 0))
        self.assertEqual(status.servers[0], ServerStatus("web", (PortStatus(port=8100),), 0))
        self.assertIsNone(status.servers[0].requests)
        self.assertEqual(status.last_restart, LastRestart(ok=False, error="boom"))
        self.assertIsNone(status.workers)
        # Written again: only what it knows, nothing made up.
        self.assertNotIn("requests", status.to_json()["servers"][0])
        self.assertNotIn("started_at", status.to_json())

    def test_an_older_master(self) -> None:
        data = copy.deepcopy(MASTER)
        for key in ("worker_recycles", "worker_timeouts", "last_replaced_reason"):
            del data[key]
        for worker in data["workers"]:
            for key in ("rss_mib", "last_heartbeat", "last_replaced_reason", "requests"):
                del worker[key]
        status = ProcessStatus.from_json(data)
        assert status.workers is not None
        self.assertEqual(status.worker_timeouts, 0)
        self.assertEqual(status.last_replaced_reason, {})
        self.assertEqual(status.workers[0].requests, 0)
        self.assertIsNone(status.workers[0].rss_mib)


class BadShapeTests(SynchronousTestCase):
    """
    Wrong shapes raise L{StatusError} (a L{ValueError}), its message naming
    the field.
    """

    def error(self, data: Any) -> str:
        error = self.assertRaises(StatusError, ProcessStatus.from_json, data)
        self.assertIsInstance(error, ValueError)
        message = str(error)
        self.assertNotIn("\n", message)
        return message

    def test_not_a_status(self) -> None:
        data: Any
        for data in ([], "ok", None, {"hello": 1}, {"pid": 1, "generation": 1}):
            self.assertIn("pid, a generation and servers", self.error(data))

    def test_wrong_values(self) -> None:
        def bad(**changes: Any) -> dict[str, Any]:
            return {**copy.deepcopy(SINGLE), **changes}

        cases = [
            (bad(pid="x"), "pid: expected a whole number, got 'x'"),
            (bad(generation=True), "generation: expected a whole number"),
            (bad(servers={}), "servers: expected a list"),
            (bad(servers=[{"ports": []}]), "servers[0]: name is missing"),
            (bad(servers=[{"name": "w", "ports": 3}]), "servers[0].ports: expected a list, got 3"),
            (bad(servers=[{"name": "w", "ports": [{"tls": True}]}]), "servers[0].ports[0]: neither port nor unix"),
            (bad(servers=[{"name": "w", "ports": [{"port": "eighty"}]}]), "servers[0].ports[0].port"),
            (bad(servers=[{"name": "w", "connections": {"h2": "many"}}]), "servers[0].connections.h2"),
            (bad(draining="yes"), "draining: expected true or false"),
            (bad(last_restart={"error": "x"}), "last_restart: ok is missing"),
            (bad(last_restart=[]), "last_restart: expected an object"),
            (bad(drain={"elapsed": "long"}), "drain.elapsed: expected a number"),
            (bad(workers=[{"pid": 1, "slot": 0}]), "workers[0]: generation is missing"),
            (bad(workers=[{"pid": 1, "slot": "first", "generation": 1}]), "workers[0].slot"),
            (bad(last_replaced_reason={"0": 5}), "last_replaced_reason.0: expected a string"),
        ]
        for data, wanted in cases:
            self.assertIn(wanted, self.error(data))
