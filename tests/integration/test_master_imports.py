"""
A workers master holds the sockets and supervises its workers; it serves
no request, so it imports no app (its workers do, or with C{preload = true}
its worker template) and none of twisted.web: each module there is memory
held once more beside N workers.  And an app that will not import still
stops a master's start with one line and exit status 1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from harness.processes import child_environment, listening_pids
from tests.support import ServerProcess, free_port, pid_of, wait_until

PROGRAM = Path(__file__).parent / "programs" / "modules_at_exit.py"
APP_MODULE = "tests.integration.programs.preload_app"


class MasterImportsTests(SynchronousTestCase):
    def serve(self, preload: bool, app: str = f"{APP_MODULE}:app") -> tuple[ServerProcess, Path, int]:
        directory = Path(tempfile.mkdtemp(prefix="graceful-master-imports-"))
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        port = free_port()
        config = directory / "graceful.toml"
        config.write_text(
            f"[graceful]\nworkers = 2\npreload = {str(preload).lower()}\n"
            f'[servers.web]\nports = [{port}]\napp = "{app}"\n'
        )
        proc = ServerProcess(
            [sys.executable, str(PROGRAM), "run", "--config", str(config)],
            env=child_environment(MODULES_DIR=str(directory)),
        )
        return proc, directory, port

    def modules_of(self, preload: bool) -> tuple[set[str], list[set[str]]]:
        """
        The modules of the master, and of each of its other processes,
        once 2 workers served a request each and SIGTERM ended them all.
        """
        master, others, _, _ = self.modules_by_role(preload)
        return master, list(others.values())

    def modules_by_role(
        self, preload: bool
    ) -> tuple[set[str], dict[int, set[str]], set[int], int | None]:
        """
        The master's modules, every other process's by pid, the pids that
        served, and the template's pid (with C{preload}).
        """
        proc, directory, port = self.serve(preload)
        proc.start()
        self.addCleanup(proc.stop)
        wait_until(lambda: "2 workers serve" in proc.log(), what="2 workers to serve")
        workers = {proc.remember(pid_of(port)) for _ in range(20)}
        self.assertNotIn(proc.pid, workers)
        os.kill(proc.pid, signal.SIGTERM)  # the master: it drains its workers, then exits
        self.assertEqual(proc.wait_exit(), 0)
        master = directory / f"modules-{proc.pid}.json"
        others = {int(p.stem.split("-")[1]): set(json.loads(p.read_text()))
                  for p in directory.glob("modules-*.json") if p != master}
        template = [int(line.split("worker template ")[1].split()[0])
                    for line in proc.log().splitlines() if "worker template" in line]
        template_pid = template[0] if template else None
        return set(json.loads(master.read_text())), others, workers, template_pid

    def assertLean(self, master: set[str], others: list[set[str]]) -> None:
        self.assertTrue(any(APP_MODULE in o and "fastapi" in o for o in others), others)
        self.assertIn("graceful.workers.master", master)  # it was the master
        heavy = {m for m in master if m == APP_MODULE or m.split(".")[0] in ("fastapi", "starlette", "pydantic")}
        self.assertEqual(sorted(heavy), [])
        self.assertEqual(sorted(m for m in master if m.startswith("twisted.web")), [])

    def test_master_imports_neither_app_nor_twisted_web(self) -> None:
        self.assertLean(*self.modules_of(preload=False))

    def test_preloading_master_imports_neither_app_nor_twisted_web(self) -> None:
        """
        With C{preload = true} the worker template imports the app.
        """
        self.assertLean(*self.modules_of(preload=True))

    def test_forked_workers_import_nothing_of_their_own(self) -> None:
        """
        What a worker imports as it starts serving, its template imported
        before forking it (so every worker shares it): the modules of
        graceful, Twisted and the app's libraries.  Only what the app
        imports as it answers may come later.
        """
        _, others, workers, template = self.modules_by_role(preload=True)
        self.assertIsNotNone(template)
        assert template is not None
        shared = others[template]
        self.assertTrue(workers)
        for pid in workers:
            own = sorted(m for m in others[pid] - shared if not m.startswith("fastapi.telemetry"))
            self.assertEqual(own, [])

    def test_an_app_that_will_not_import_stops_the_master(self) -> None:
        proc, _, port = self.serve(False, app="tests.integration.programs.no_such_module:app")
        proc.start()
        self.addCleanup(proc.stop)
        self.assertEqual(proc.wait_exit(), 1)
        errors = [line for line in proc.log().splitlines() if "error" in line]
        self.assertEqual(len(errors), 1, proc.log())
        self.assertIn("cannot import 'tests.integration.programs.no_such_module'", errors[0])
        self.assertEqual(listening_pids(port), set())
