"""
Unit tests of L{graceful.workers.worker}: a worker whose master is gone,
through a runtime.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service

from graceful.handoff.messages import Group, Retire
from graceful._status import ProcessStatus
from graceful.process.runtime import runtime_from_environment
from graceful.testing import FakeOldProcess

from ..runtime_case import _environment, PID, OLD_PID, FakeParentDeathSignal, _RuntimeCase


class WorkerMasterGoneTests(_RuntimeCase):
    """
    A worker whose master died (the control pipe's end, or the kernel's
    SIGTERM from PR_SET_PDEATHSIG) drains and exits, with one line.
    """

    def setUp(self) -> None:
        super().setUp()
        self.master = FakeOldProcess()
        self.environment.parent = OLD_PID
        self.runtime = self.make_runtime(
            worker_slot=0, group_status=None, old_process=self.master
        )
        self.service = Service()
        self.runtime.add_service(self.service)
        _, _, self.port = self.serve("s1", 8100, 41)

    def gone_lines(self) -> list[str]:
        return [line for line in self.log if "is gone" in line]

    def test_watch_master_arms_sigterm(self) -> None:
        assert self.runtime.worker is not None
        self.runtime.worker.watch_master()
        self.assertEqual(self.environment.armed, [signal.SIGTERM])

    def test_armed_for_workers_only(self) -> None:
        fakes: list[FakeParentDeathSignal] = []

        def make() -> FakeParentDeathSignal:
            fakes.append(FakeParentDeathSignal())
            return fakes[-1]

        self.patch(_environment, "parent_death_signal", make)
        runtime_from_environment({"GRACEFUL_WORKER": "1"}, self.reactor)
        runtime_from_environment({}, self.reactor)
        self.assertEqual([fake.armed for fake in fakes], [[signal.SIGTERM], []])

    def test_serves_while_the_master_lives(self) -> None:
        self.runtime.serving_started()
        self.assertEqual(self.master.reported, ["ready"])
        self.assertFalse(self.runtime.draining)
        self.assertTrue(self.port.listening)
        self.master.release()
        self.assertTrue(self.service.running)

    def test_drains_and_exits_on_master_eof(self) -> None:
        self.runtime.serving_started()
        self.master.close()
        self.assertTrue(self.runtime.draining)
        self.assertFalse(self.port.listening)
        self.assertFalse(self.service.running)  # the master never released
        self.assertTrue(self.exited)
        self.assertEqual(
            self.gone_lines(), [f"{PID}: the master {OLD_PID} is gone; draining and exiting"]
        )

    def test_forked_worker_names_the_master_not_its_template(self) -> None:
        """
        A worker forked from a template has the template for its parent
        and old process; the master it names is the one the group status
        gives.
        """
        assert self.runtime.worker is not None
        self.runtime.worker.group_status = ProcessStatus(pid=4321, generation=1, servers=())
        self.runtime.serving_started()
        self.master.close()
        self.assertEqual(
            self.gone_lines(), [f"{PID}: the master 4321 is gone; draining and exiting"]
        )

    def test_retired_by_a_roll_drains_as_replaced(self) -> None:
        self.runtime.serving_started()
        self.master.tell(Retire())
        self.assertTrue(self.runtime.draining)
        self.assertFalse(self.port.listening)
        self.assertEqual(self.worker_status()["drain"]["reason"], "restart")
        self.assertEqual(self.gone_lines(), [])

    def test_sigterm_alone_drains_as_shutdown(self) -> None:
        self.runtime.serving_started()
        self.runtime.install_signal_handlers()
        self.environment.handlers[signal.SIGTERM]()
        self.reactor.advance(0)
        self.assertEqual(self.worker_status()["drain"]["reason"], "shutdown")

    def test_master_died_before_the_signal_was_armed(self) -> None:
        self.environment.parent = 1  # reparented already
        self.runtime.serving_started()
        self.assertTrue(self.runtime.draining)
        self.master.close()  # the pipe tells it too: still one line
        self.assertEqual(len(self.gone_lines()), 1)
        self.assertTrue(self.exited)

    def worker_status(self) -> dict[str, Any]:
        assert self.runtime.worker is not None
        return self.runtime.worker.own_status().to_json()

    def test_sigterm_from_the_kernel(self) -> None:
        self.runtime.serving_started()
        self.environment.parent = 1
        self.environment.send_signal(signal.SIGTERM)
        self.reactor.advance(0)
        self.assertTrue(self.runtime.draining)
        self.assertEqual(
            self.gone_lines(), [f"{PID}: the master {OLD_PID} is gone; draining and exiting"]
        )

    def test_sigterm_from_the_master(self) -> None:
        """
        A roll retires this worker: a plain drain, no word of a lost master.
        """
        self.runtime.serving_started()
        self.environment.send_signal(signal.SIGTERM)
        self.reactor.advance(0)
        self.assertTrue(self.runtime.draining)
        self.assertEqual(self.gone_lines(), [])


class WorkerHistoryTests(_RuntimeCase):
    """
    A worker answers its admin page's C{history} with its master's, as the
    master last pushed it.
    """

    def test_master_history_mirrored(self) -> None:
        master = FakeOldProcess()
        self.environment.parent = OLD_PID
        runtime = self.make_runtime(worker_slot=0, group_status=None, old_process=master)
        runtime.serving_started()
        status = ProcessStatus(pid=OLD_PID, generation=2, servers=())
        record = {"generation": 2, "old_pid": 1, "new_pid": OLD_PID, "started": 5.0, "outcome": "ok"}
        master.tell(Group(status, [record]))
        [mirrored] = runtime.core.history.log.records
        self.assertEqual((mirrored.new_pid, mirrored.outcome), (OLD_PID, "ok"))
        master.tell(Group(status, [{"generation": "bad"}]))  # kept: the last readable one
        self.assertEqual(runtime.core.history.log.records, [mirrored])
