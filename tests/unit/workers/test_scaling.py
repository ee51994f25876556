"""
Unit tests of L{graceful.workers.scaling}: the worker count without a
restart, by SIGTTIN and SIGTTOU and by a worker's admin page, on a master
with L{graceful.testing}'s fakes.
"""

from __future__ import annotations

import signal

from twisted.trial.unittest import SynchronousTestCase

from graceful._errors import WorkerCountRefused
from graceful.handoff.messages import Retire, WorkersRequest
from graceful.lifecycle.roles import MAX_WORKERS, check_count
from graceful.testing import FakeOldProcess

from ..runtime_case import PID, ThreadedMemoryReactor, _RuntimeCase
from .test_master import MASTER, MasterCase


class CountTests(SynchronousTestCase):
    def test_good(self) -> None:
        self.assertEqual([check_count(v) for v in (1, "3", MAX_WORKERS)], [1, 3, MAX_WORKERS])

    def test_bad(self) -> None:
        for value in (0, -1, "x", "", 2.5, True, None, MAX_WORKERS + 1):
            error = self.assertRaises(WorkerCountRefused, check_count, value)
            self.assertEqual(error.code, 400)
            self.assertIn("count must be", str(error))


class ScalingTests(MasterCase):
    def setUp(self) -> None:
        super().setUp()
        self.reactor = ThreadedMemoryReactor()
        self.reactor.running = True

    def serving(self, workers: int = 2):  # type: ignore[no-untyped-def]
        runtime, role = self.master(workers)
        self.workers_up()
        runtime.install_signal_handlers()
        return runtime, role

    def signal(self, name: str) -> None:
        self.environment.send_signal(getattr(signal, name))
        self.reactor.advance(0)

    def serving_slots(self, runtime) -> list[int]:  # type: ignore[no-untyped-def]
        return sorted(w["slot"] for w in runtime.status().to_json()["workers"] if not w["draining"])

    def test_sigttin_adds_a_worker_in_a_new_slot(self) -> None:
        runtime, role = self.serving()
        self.signal("SIGTTIN")
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(self.environment.spawner.calls[2]["extra_environ"]["GRACEFUL_WORKER"], "2")
        self.workers_up()
        self.assertEqual(self.serving_slots(runtime), [0, 1, 2])
        self.assertIn(f"{MASTER}: workers: 2 -> 3 (SIGTTIN)", self.messages)

    def test_sigttou_retires_the_highest_slot_never_the_last(self) -> None:
        runtime, role = self.serving(workers=2)
        first, second = self.spawned
        self.signal("SIGTTOU")
        self.assertIn(Retire(), second.sent)
        self.assertNotIn(Retire(), first.sent)
        second.exit()
        self.assertEqual(self.serving_slots(runtime), [0])
        self.signal("SIGTTOU")  # never below 1
        self.assertNotIn(Retire(), first.sent)
        self.assertIn(
            f"{MASTER}: SIGTTOU ignored: count must be from 1 to {MAX_WORKERS}, got 0",
            self.messages,
        )
        self.assertEqual(len(self.spawned), 2)  # the retired one is not replaced

    def test_refused_while_a_restart_runs(self) -> None:
        runtime, role = self.serving()
        runtime.restart()
        error = self.assertRaises(WorkerCountRefused, runtime.set_workers, 4)
        self.assertEqual((error.code, str(error)), (409, "a restart is running"))
        self.signal("SIGTTIN")
        self.assertIn(f"{MASTER}: SIGTTIN ignored: a restart is running", self.messages)

    def test_refused_while_starting(self) -> None:
        runtime, role = self.master()
        error = self.assertRaises(WorkerCountRefused, runtime.set_workers, 4)
        self.assertEqual(error.code, 409)

    def test_set_by_count(self) -> None:
        runtime, role = self.serving(workers=2)
        self.assertEqual(runtime.set_workers(4), 4)
        self.workers_up()
        self.assertEqual(self.serving_slots(runtime), [0, 1, 2, 3])
        self.assertEqual(runtime.set_workers(1), 1)
        self.assertEqual(sum(Retire() in w.sent for w in self.spawned), 3)

    def test_a_starting_worker_of_a_removed_slot_is_stopped(self) -> None:
        runtime, role = self.serving(workers=2)
        runtime.set_workers(3)
        starting = self.spawned[2]
        runtime.set_workers(2)
        self.assertEqual(starting.kills, 1)

    def test_a_workers_request(self) -> None:
        """
        A worker passes on what its admin page was asked; the master
        checks it again.
        """
        runtime, role = self.serving(workers=2)
        worker = self.spawned[0]
        worker.say(WorkersRequest(3))
        self.assertEqual(len(self.spawned), 3)
        worker.say(WorkersRequest(0))
        self.assertIn(
            f"{MASTER}: worker count change refused: count must be from 1 to {MAX_WORKERS}, got 0",
            self.messages,
        )


class ServingAloneTests(_RuntimeCase):
    def test_signal_ignored_with_a_line(self) -> None:
        self.runtime.install_signal_handlers()
        self.environment.send_signal(signal.SIGTTIN)
        self.reactor.advance(0)
        self.assertLogged(
            f"{PID}: SIGTTIN ignored: this process serves alone (workers = 1): "
            "it has no workers to change"
        )
        self.assertEqual(self.spawner.calls, [])
        error = self.assertRaises(WorkerCountRefused, self.runtime.set_workers, 2)
        self.assertEqual(error.code, 404)


class WorkerTests(_RuntimeCase):
    def test_passes_the_request_to_its_master(self) -> None:
        master = FakeOldProcess()
        runtime = self.make_runtime(worker_slot=1, group_status=None, old_process=master)
        self.assertEqual(runtime.set_workers(3), 3)
        self.assertEqual(master.sent, [WorkersRequest(3)])
        runtime.install_signal_handlers()
        self.environment.send_signal(signal.SIGTTOU)
        self.reactor.advance(0)
        self.assertLoggedPart("SIGTTOU ignored: a worker has no workers: signal the master")


class HeldWhileStartingTests(_RuntimeCase):
    def test_held_from_the_start(self) -> None:
        from graceful.handoff.pipes import HELD_SIGNALS

        self.assertTrue({signal.SIGTTIN, signal.SIGTTOU} <= HELD_SIGNALS)

    def test_one_that_arrived_while_starting_is_dropped(self) -> None:
        """
        A worker count signal sent to the whole group while this process
        started was meant for its master: dropped with a line, and the next
        one is handled.
        """
        self.environment.held.add(signal.SIGTTIN)
        self.runtime.install_signal_handlers()
        self.assertIn(signal.SIGTTIN, self.environment.released)
        self.assertIn(signal.SIGTTOU, self.environment.released)
        self.assertLogged(f"{PID}: SIGTTIN ignored: it arrived while this process was starting")
        self.environment.send_signal(signal.SIGTTIN)
        self.reactor.advance(0)
        self.assertLoggedPart(f"{PID}: SIGTTIN ignored: this process serves alone")
