"""
C{preload = true}: the workers of C{graceful run} with a FastAPI app are
forked from a template that imported the app; a killed worker is replaced
by a new fork, a SIGUSR1 upgrade under a bounded request loop loses no
request and brings a new template, and SIGTERM leaves no process behind and
no zombie on the way.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import cast

from twisted.trial.unittest import SynchronousTestCase


from harness.processes import alive, script
from tests.support import ServerProcess, free_port, get, pid_of, wait_until, zombies

APP = "tests.integration.programs.preload_app:app"


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


class PreloadCase(SynchronousTestCase):
    """
    C{graceful run} with 2 workers forked from a template of C{app}.
    """

    app = APP

    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="graceful-preload-")
        self.addCleanup(directory.cleanup)
        self.port = free_port()
        config = Path(directory.name) / "graceful.toml"
        config.write_text(
            f'[graceful]\nworkers = 2\npreload = true\n'
            f'[servers.web]\nports = [{self.port}]\napp = "{self.app}"\n'
        )
        self.proc = ServerProcess(
            [sys.executable, script("graceful"), "run", "--config", str(config)]
        ).start()
        self.addCleanup(self.proc.stop)
        wait_until(lambda: "2 workers serve" in self.proc.log(), what="2 workers to serve")

    def template(self, master: int) -> int:
        line = [l for l in self.proc.log().splitlines()
                if f"{master}: worker template" in l and "is ready" in l][-1]
        return self.proc.remember(int(line.split("worker template ")[1].split()[0]))

    def serving(self, count: int = 20) -> set[int]:
        return {self.proc.remember(pid_of(self.port)) for _ in range(count)}

    def assert_prompt(self) -> None:
        """
        40 requests one after the other take well under 4 s: a forked
        worker whose loop misses its wake-ups answers a thread's result
        (FastAPI runs a plain def in one) on its next 0.5 s report only.
        """
        started = time.monotonic()
        self.serving(40)
        self.assertLess(time.monotonic() - started, 4.0)


class PreloadTests(PreloadCase):
    def test_workers_are_forks_of_the_template(self) -> None:
        """
        Both workers serve, and each is a child of the template, itself
        the master's child; the log says that workers fork.
        """
        master = self.proc.pid
        template = self.template(master)
        self.assertEqual(parent_of(template), master)
        pids = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(self.serving()),
                          what="both workers to answer")
        for pid in pids:
            self.assertEqual(parent_of(pid), template)
        self.assert_prompt()
        self.assertIn("workers fork from it (preload = true)", self.proc.log())
        self.assertNotIn("workers start by exec", self.proc.log())
        # Each runs on the loop the process chose, as an exec'd worker does.
        loop = "uvloop" if "on uvloop" in self.proc.log() else "asyncio.unix_events"
        loops = {urllib.request.urlopen(f"http://127.0.0.1:{self.port}/loop", timeout=10)
                 .read().decode().strip() for _ in range(10)}
        self.assertEqual(loops, {loop})

    def test_a_killed_worker_is_forked_again(self) -> None:
        """
        A killed worker is replaced by a new fork of the template, which
        reaps the dead one (no zombie).
        """
        master = self.proc.pid
        template = self.template(master)
        pids = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(self.serving()),
                          what="both workers to answer")
        victim = min(pids)
        self.proc.signal(victim, signal.SIGKILL)
        killed = time.monotonic()
        replaced = wait_until(
            lambda: (lambda s: s if len(s) == 2 and victim not in s else None)(self.serving()),
            what="a replacement to serve")
        took = time.monotonic() - killed
        [new] = replaced - pids
        self.assertEqual(parent_of(new), template)
        self.assertEqual(zombies(template), [])
        self.assertEqual(zombies(master), [])
        # The refill waits 0.5 s first; a fork serves well within a second more.
        self.assertLess(took, 3.0, self.proc.log())

    def test_the_template_ignores_a_group_signal(self) -> None:
        """
        What SIGUSR1, SIGUSR2, SIGTTIN or SIGTTOU to the whole group
        (kill -USR2 -PGID) means is the master's and the workers' business;
        the template ignores them (SIGUSR2's default would end it) and
        forks the next worker still.
        """
        master = self.proc.pid
        template = self.template(master)
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
            self.proc.signal(template, signum)
        pids = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(self.serving()),
                          what="both workers to answer")
        victim = min(pids)
        self.proc.signal(victim, signal.SIGKILL)
        replaced = wait_until(
            lambda: (lambda s: s if len(s) == 2 and victim not in s else None)(self.serving()),
            what="a replacement to serve")
        [new] = replaced - pids
        self.assertEqual(parent_of(new), template)
        self.assertNotIn("the worker template failed", self.proc.log())

    def test_upgrade_under_load_loses_nothing(self) -> None:
        """
        SIGUSR1: the new master starts a new template, forks its workers from
        it, and no request of a bounded loop running meanwhile fails; the old
        master, its template and its workers are gone, leaving no zombie.
        """
        master = self.proc.pid
        old_template = self.template(master)
        old_workers = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(self.serving()),
                                 what="both workers to answer")
        failures: list[str] = []
        done = threading.Event()
        count = [0]

        def load() -> None:
            deadline = time.monotonic() + 60
            while not done.is_set() and count[0] < 5000 and time.monotonic() < deadline:
                try:
                    code, _, _ = get(self.port, "/pid")
                    if code != 200:
                        failures.append(f"status {code}")
                except Exception as e:
                    failures.append(repr(e))
                count[0] += 1

        thread = threading.Thread(target=load)
        thread.start()
        try:
            self.proc.signal(master, signal.SIGUSR1)
            self.proc.wait_gone(master, timeout=30)
        finally:
            done.set()
            thread.join(70)
        self.assertEqual(failures, [])
        self.assertGreater(count[0], 10)
        for pid in [old_template, *old_workers]:
            wait_until(lambda: not alive(pid), what=f"old process {pid} to leave")
        new_master = int([l for l in self.proc.log().splitlines() if "is ready after" in l][-1]
                         .split("process ")[1].split()[0])
        new_template = self.template(new_master)
        self.assertNotEqual(new_template, old_template)
        for pid in wait_until(lambda: (lambda s: s if len(s) == 2 else None)(self.serving()),
                              what="the new workers to answer"):
            self.assertEqual(parent_of(pid), new_template)
        self.assert_prompt()
        self.assertEqual(zombies(new_master), [])
        self.assertEqual(zombies(new_template), [])

    def test_sigterm_leaves_nothing_behind(self) -> None:
        """
        SIGTERM to the master: its workers drain, the template leaves with
        them, and no process of the group is left.
        """
        master = self.proc.pid
        template = self.template(master)
        workers = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(self.serving()),
                             what="both workers to answer")
        self.proc.signal(master, signal.SIGTERM)
        self.assertIsNotNone(self.proc.wait_exit(30))
        for pid in [template, *workers]:
            wait_until(lambda: not alive(pid), timeout=10, what=f"process {pid} to leave")
        self.assertEqual(self.proc.members(), {})


class PreloadedReactorTests(PreloadCase):
    """
    A twisted.web app whose module holds the reactor it imported in the
    template (C{from twisted.internet import reactor}).
    """

    app = "tests.integration.programs.pages:root"

    def slow(self, result: dict[str, object]) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: result.update(answer=get(self.port, "/slow?seconds=1", timeout=15))
        )
        thread.start()
        return thread

    def test_the_imported_reactor_runs_in_the_worker(self) -> None:
        """
        A forked worker's reactor is the one the app's module imported: a
        timed call on it fires.
        """
        result: dict[str, object] = {}
        self.slow(result).join(15)
        self.assertEqual(cast(tuple[int, object, bytes], result["answer"])[0], 200)

    def test_sigterm_to_the_group_finishes_in_flight(self) -> None:
        """
        SIGTERM to the whole process group (as systemd or ^C sends it): the
        template ignores it and leaves last, so a request in flight on a
        worker is answered.
        """
        result: dict[str, object] = {}
        thread = self.slow(result)
        time.sleep(0.3)  # the request reaches a worker
        os.killpg(self.proc.pgid, signal.SIGTERM)
        thread.join(15)
        self.assertEqual(cast(tuple[int, object, bytes], result.get("answer", (0,)))[0], 200)
        self.assertIsNotNone(self.proc.wait_exit(30))
        wait_until(lambda: self.proc.members() == {}, what="every process to leave")
