"""
Unit tests of workers forked from a template (C{preload = true}): the
master starts the template first and forks its workers from it once it is
ready, talks to a forked worker on its pipes as to an exec'd one, hears how
it ended from the template, and falls back to exec when the template fails.
The test plays the template on the other end of the request socket.
"""

from __future__ import annotations

import os
import socket
from typing import Any, cast

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from graceful.handoff.pipes import HANDOFF_VARIABLE
from graceful.lifecycle.core import ProcessCore
from graceful.testing import FakeNewProcess, FakeSpawner, MemoryEnvironment
from graceful.workers.group import WorkerGroup
from graceful.workers.template import (
    REQUEST_FDS,
    TEMPLATE_SOCKET_NAME,
    TEMPLATE_VARIABLE,
    Template,
    hold_forks,
    threads_beside_this_one,
    receive_packet,
    send_packet,
)
from graceful.workers.worker import WORKER_VARIABLE

MASTER = 100
TEMPLATE = 1000


class TemplateSpawner(FakeSpawner):
    """
    A fake spawner that keeps the template's end of the request socket,
    which the master closes once the template is started.
    """

    template_end: socket.socket | None = None

    def __call__(self, reactor: Any, clock: Any, **kwargs: Any) -> FakeNewProcess:
        for passed in kwargs.get("sockets", []):
            if passed.name == TEMPLATE_SOCKET_NAME:
                self.template_end = socket.socket(fileno=os.dup(passed.fd))
        return super().__call__(reactor, clock, **kwargs)


class TemplateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.spawner = TemplateSpawner(next_pid=TEMPLATE)
        self.environment = MemoryEnvironment(spawner=self.spawner)
        self.core = ProcessCore(self.reactor, {}, MASTER, environment=self.environment)
        self.core.settings.worker_timeout = 0
        self.messages: list[str] = []
        self.opened: list[int] = []

        def observe(event: LogEvent) -> None:
            self.messages.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.addCleanup(self._close_all)

    def _close_all(self) -> None:
        for fd in self.opened:
            try:
                os.close(fd)
            except OSError:
                pass
        if self.spawner.template_end is not None:
            self.spawner.template_end.close()

    def group(self, size: int = 1, preload: bool = True) -> WorkerGroup:
        self.core.settings.preload = preload
        group = WorkerGroup(self.core, size)
        group.serve()
        self.addCleanup(group.shutdown)
        return group

    def said(self, text: str) -> bool:
        return any(text in message for message in self.messages)

    def template(self, group: WorkerGroup) -> Template:
        template = group.starter.choice.template
        assert template is not None
        return template

    def request(self) -> tuple[dict[str, Any], list[int]]:
        """
        The template reads the master's next request.
        """
        end = self.spawner.template_end
        assert end is not None
        packet, fds = receive_packet(end)
        assert packet is not None
        self.opened.extend(fds)
        return packet, fds

    def reply(self, template: Template, payload: dict[str, Any]) -> None:
        end = self.spawner.template_end
        assert end is not None
        send_packet(end, payload)
        template._readable()  # the reactor would: the socket is readable

    def forked_and_ready(self) -> tuple[Any, Template]:
        """
        A group whose template is ready and whose first worker, forked as
        pid 4242, has reported ready.
        """
        group = self.group()
        self.spawner.last.report_ready()
        _, fds = self.request()
        template = self.template(group)
        self.reply(template, {"forked": 4242})
        os.write(fds[1], b"ready {}\n")
        self.reader_of(fds[1]).doRead()
        return group, template

    def reader_of(self, fd_target: int) -> Any:
        """
        The master's reader of the pipe whose write end is C{fd_target}.
        """
        inode = os.fstat(fd_target).st_ino
        for reader in self.reactor.readers:
            if os.fstat(reader.fileno()).st_ino == inode:
                return reader
        raise AssertionError("no reader for that pipe")

    def test_preload_off_execs_each_worker_and_says_so(self) -> None:
        """
        Without C{preload}, each worker is exec'd as before, and the log
        says which way workers start.
        """
        self.group(preload=False)
        self.assertEqual(len(self.spawner.calls), 1)
        environ = self.spawner.calls[0]["extra_environ"]
        self.assertEqual(environ[WORKER_VARIABLE], "0")
        self.assertNotIn(TEMPLATE_VARIABLE, environ)
        self.assertTrue(self.said("workers start by exec (preload = false)"), self.messages)

    def test_the_template_starts_first(self) -> None:
        """
        With C{preload}, the master starts the template (a worker's start,
        with the request socket after the listening sockets) and forks no
        worker until the template has imported everything.
        """
        group = self.group()
        self.assertEqual(len(self.spawner.calls), 1)
        call = self.spawner.calls[0]
        self.assertEqual(call["sockets"][-1].name, TEMPLATE_SOCKET_NAME)
        self.assertEqual(call["extra_environ"][TEMPLATE_VARIABLE], "3")
        self.assertNotIn(WORKER_VARIABLE, call["extra_environ"])
        self.assertEqual(group.starter.workers, [])

    def test_workers_fork_from_the_ready_template(self) -> None:
        """
        Once the template is ready, each worker is a fork request carrying
        the worker's variables and its four descriptors; the forked worker
        reports ready on its own pipe and serves its slot.
        """
        group = self.group()
        self.spawner.last.report_ready()
        self.assertTrue(self.said(f"worker template {TEMPLATE} is ready"), self.messages)
        packet, fds = self.request()
        self.assertEqual(len(fds), REQUEST_FDS)
        environ = packet["env"]
        self.assertEqual(environ[WORKER_VARIABLE], "0")
        self.assertEqual(environ["LISTEN_FDS"], "0")
        self.assertIn(f"parent={TEMPLATE}", environ[HANDOFF_VARIABLE])
        self.assertEqual(len(self.spawner.calls), 1, "no exec for the worker")

        template = self.template(group)
        self.reply(template, {"forked": 4242})
        [worker] = group.starter.workers
        self.assertEqual(worker.pid, 4242)
        os.write(fds[1], b"ready {}\n")
        self.reader_of(fds[1]).doRead()
        self.assertTrue(worker.ready)
        self.assertTrue(self.said("worker 4242 (slot 0, generation 1) is ready"), self.messages)

    def test_the_template_says_how_a_worker_ended(self) -> None:
        """
        A forked worker is the template's child: the master hears its end
        from the template, and replaces it as it would an exec'd one.
        """
        group, template = self.forked_and_ready()
        self.reply(template, {"exited": 4242, "code": None, "signal": 9})
        self.assertTrue(self.said("worker 4242 (slot 0) died (signal 9)"), self.messages)
        self.assertEqual(group.starter.workers, [])

    def test_a_roll_forks_from_a_template_of_the_new_code(self) -> None:
        """
        A roll of a master that keeps its own code (PID 1's) starts its
        workers from a new template, which imports the new code, not from
        the one that imported the old.
        """
        group, old = self.forked_and_ready()
        group.restart(None).addErrback(lambda f: None)
        self.assertEqual(len(self.spawner.calls), 2)
        call = self.spawner.calls[1]
        self.assertIn(TEMPLATE_VARIABLE, call["extra_environ"])
        self.assertEqual(call["generation"], 2)
        self.assertIsNot(self.template(group), old)

    def test_a_failed_template_means_exec(self) -> None:
        """
        A template that cannot import the app fails like a worker would;
        the master says so and execs each worker instead.
        """
        self.group()
        self.spawner.last.report_failure("new process 1000 exited with status 1: boom")
        self.assertTrue(self.said("the worker template failed"), self.messages)
        self.assertEqual(len(self.spawner.calls), 2)
        self.assertEqual(self.spawner.calls[1]["extra_environ"][WORKER_VARIABLE], "0")

    def test_a_template_gone_later_means_exec(self) -> None:
        """
        Should the template die after it was ready, the next worker is
        exec'd, and the log says why.
        """
        group = self.group()
        self.spawner.last.report_ready()
        self.request()
        template = self.template(group)
        self.reply(template, {"forked": 4242})
        end = self.spawner.template_end
        assert end is not None
        end.close()
        self.spawner.template_end = None
        template._readable()
        self.assertTrue(template.gone)
        self.assertEqual(len(group.starter.workers), 1)
        group.starter.start(1, 1)
        self.assertTrue(self.said("the worker template failed (it is gone)"), self.messages)
        self.assertEqual(self.spawner.calls[-1]["extra_environ"][WORKER_VARIABLE], "1")


class HoldForksTests(SynchronousTestCase):
    def test_not_a_template(self) -> None:
        """
        A process the master did not start as its template goes on at once.
        """
        reported: list[bool] = []
        self.assertFalse(hold_forks({}, lambda: reported.append(True)))
        self.assertEqual(reported, [])


class ThreadsAtForkTests(SynchronousTestCase):
    """
    A template whose app started threads as it was imported does not fork:
    it says which, and the master execs its workers.
    """

    def test_none(self) -> None:
        import threading

        self.assertEqual(
            threads_beside_this_one(lambda: [threading.current_thread()], "/nonexistent"), []
        )

    def test_python_threads_by_name_and_others_counted(self) -> None:
        import threading

        class Running:
            def __init__(self, name: str) -> None:
                self.name = name

            def is_alive(self) -> bool:
                return True

        task = self.mktemp()
        os.makedirs(task)
        for tid in ("1", "2", "3", "4"):
            os.makedirs(os.path.join(task, tid))
        found = threads_beside_this_one(
            lambda: [threading.current_thread(), Running("poller")], task
        )
        self.assertEqual(found, ["poller", "2 started outside Python"])

    def test_template_with_threads_reports_and_exits(self) -> None:
        reported: list[str] = []
        ready: list[bool] = []
        exits: list[int] = []

        def exit(code: int) -> None:
            exits.append(code)
            raise SystemExit(code)

        self.patch(os, "_exit", exit)
        with self.assertRaises(SystemExit):
            hold_forks(
                {TEMPLATE_VARIABLE: "99"}, lambda: ready.append(True), reported.append,
                threads=lambda: ["poller"],
            )
        self.assertEqual(exits, [1])
        self.assertEqual(ready, [])
        self.assertEqual(
            reported, ["the app started threads as it was imported (poller), which a fork would not have"]
        )
