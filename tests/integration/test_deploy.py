"""
Deploying releases (issue 8): the atomic release switch through a `current`
symlink, and background services that hand over across restarts without
running in two generations at once.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    ROOT,
    Load,
    ServerProcess,
    free_port,
    get,
    pid_of,
    wait_until,
)
from tests.integration.test_restart import restart, status

BACKGROUND = ROOT / "tests" / "integration" / "programs" / "background_app.py"

RELEASE_APP = '''
import graceful as g

RELEASE = {release}


def root():
    pages = g.Router()
    pages.route("/release", lambda request: f"{{RELEASE}}\\n")
    pages.route("/pid", lambda request: __import__("os").getpid().__str__() + "\\n")
    return pages
'''

RELEASE_CONFIG = """
[graceful]
directory = "{current}"
ready_timeout = 10.0

[servers.web]
app = "release_app:root"
host = "127.0.0.1"
ports = [{port}]
admin = "/debug/admin"
"""


def _tempdir(case: SynchronousTestCase) -> Path:
    directory = tempfile.TemporaryDirectory(prefix="graceful-deploy-")
    case.addCleanup(directory.cleanup)
    return Path(directory.name)


class ReleaseSwitchTests(SynchronousTestCase):
    """
    releases/1, releases/2 and a `current` symlink: after `ln -nsf` and one
    SIGUSR1, new requests are served by the other release.
    """

    def test_switch_releases_under_load(self) -> None:
        base = _tempdir(self)
        port = free_port()
        current = base / "current"
        for release in (1, 2):
            folder = base / "releases" / str(release)
            folder.mkdir(parents=True)
            (folder / "release_app.py").write_text(RELEASE_APP.format(release=release))
            (folder / "graceful.toml").write_text(
                RELEASE_CONFIG.format(current=current, port=port)
            )
        current.symlink_to(base / "releases" / "1")
        # Started the way a deploy script would: from inside `current`, whose
        # resolved path is releases/1 -- the trap a naive re-exec falls into.
        proc = ServerProcess.twistd(
            "-n", "--pidfile=", "graceful", "--config", "graceful.toml", cwd=current
        ).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(port), what="release 1 to serve")
        self.assertEqual(get(port, "/release")[2], b"1\n")

        def switch_to(release: int) -> None:
            link = base / "current.new"
            link.symlink_to(base / "releases" / str(release))
            os.replace(link, current)  # what `ln -nsf` does, atomically
            restart(proc, port)

        with Load([("keepalive", port), ("close", port)], path="/release") as load:
            load.wait_for(50)
            for release in (2, 1, 2):
                switch_to(release)
                self.assertEqual(get(port, "/release")[2], f"{release}\n".encode())
                load.wait_for(50)
        self.assertEqual(load.failures, [])
        self.assertEqual(set(load.pids), {1, 2}, "both releases answered")


def _journal(spool: Path) -> list[tuple[int, float, float]]:
    runs = []
    for line in (spool / "journal").read_text().splitlines():
        pid, start, end = line.split()
        runs.append((int(pid), float(start), float(end)))
    return runs


def _check_runs(case: SynchronousTestCase, spool: Path) -> list[tuple[int, float, float]]:
    """
    Every scheduled run: none overlaps another, none was cut short.
    """
    runs = sorted(_journal(spool), key=lambda run: run[1])
    for (pid_a, start_a, end_a), (pid_b, start_b, _) in zip(runs, runs[1:]):
        case.assertGreaterEqual(
            start_b, end_a, f"run of {pid_b} started before run of {pid_a} ended"
        )
    for _, start, end in runs:
        case.assertGreaterEqual(end - start, 0.14, "a run was cut short")
    return runs


class BackgroundServiceTests(SynchronousTestCase):
    """
    A scheduled job and a spool consumer across restarts: never two
    generations at once, no run cut short, every job exactly once, and a
    failed restart leaves the old services running.
    """

    def test_services_hand_over_across_restarts(self) -> None:
        spool = _tempdir(self)
        port = free_port()
        proc = ServerProcess.python(BACKGROUND, str(port), str(spool)).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(port), what="the server to answer")
        wait_until(lambda: (spool / "journal").exists(), what="the first scheduled run")
        jobs = 0

        def add_jobs(count: int) -> None:
            nonlocal jobs
            for _ in range(count):
                job = spool / "incoming" / f"job-{jobs:05d}"
                temporary = spool / f".job-{jobs:05d}"
                temporary.write_text("work\n")
                temporary.rename(job)
                jobs += 1

        pids = [pid_of(port)]
        for _ in range(10):
            add_jobs(8)
            _, new = restart(proc, port)
            pids.append(new)
            add_jobs(4)
            time.sleep(0.3)  # let the new generation run its services a little

        # A failing new process: the old one keeps its services running.
        (spool / "fail-start").write_text("")
        serving = pids[-1]
        # The restart that made `serving` is reported once the handoff is confirmed.
        before = wait_until(lambda: status(port)["last_restart"], what="the last handoff")
        proc.signal(serving, signal.SIGUSR1)
        wait_until(
            lambda: status(port)["last_restart"] != before, what="the failed restart report"
        )
        self.assertFalse(status(port)["last_restart"]["ok"])
        runs_before = len(_journal(spool))
        add_jobs(5)
        wait_until(
            lambda: len(_journal(spool)) > runs_before + 2, what="the old scheduler to go on"
        )
        self.assertEqual(_journal(spool)[-1][0], serving)
        wait_until(
            lambda: len(list((spool / "done").iterdir())) == jobs,
            what="every job to be done",
        )

        runs = _check_runs(self, spool)
        self.assertEqual({pid for pid, _, _ in runs}, set(pids))
        longest_pause = max(b[1] - a[2] for a, b in zip(runs, runs[1:]))
        print(f"\nlongest pause between scheduled runs across 10 restarts: {longest_pause:.3f}s")

        ledger = (spool / "ledger").read_text().split("\n")
        processed = sorted(line.split()[0] for line in ledger if line)
        self.assertEqual(processed, sorted(f"job-{n:05d}" for n in range(jobs)))
        self.assertEqual(list((spool / "incoming").iterdir()), [])
        self.assertEqual(list((spool / "processing").iterdir()), [])


class WorkerServiceTests(SynchronousTestCase):
    """
    With workers, only slot 0 runs the services, and a roll hands them from
    the old slot-0 worker to the new one without overlap.
    """

    def test_services_hand_over_between_workers(self) -> None:
        spool = _tempdir(self)
        port = free_port()
        proc = ServerProcess.python(BACKGROUND, str(port), str(spool), "2").start()
        self.addCleanup(proc.stop)
        wait_until(lambda: (spool / "journal").exists(), what="the first scheduled run")
        for _ in range(3):
            now = wait_until(
                lambda: (lambda s: s if not s["restarting"] and not s["draining"] else None)(
                    status(port)
                ),
                what="no restart under way",
            )
            before = now["generation"]
            # The master of the moment: each restart makes a new one.
            proc.signal(proc.remember(now["pid"]), signal.SIGUSR1)
            wait_until(
                lambda: (lambda s: s["generation"] > before and not s["restarting"])(status(port)),
                what="the roll to end",
            )
            time.sleep(0.5)
        group = wait_until(
            lambda: (
                lambda s: s
                if not s["restarting"]
                and not s["draining"]
                and [w for w in s["workers"] if w["slot"] == 0 and not w["draining"]]
                else None
            )(status(port)),
            what="the serving master's view",
        )
        slot0 = [w["pid"] for w in group["workers"] if w["slot"] == 0 and not w["draining"]]
        # The services pass from the old slot-0 worker, through both masters,
        # to the new one: wait for its first run.
        wait_until(
            lambda: sorted(_journal(spool), key=lambda run: run[1])[-1][0] == slot0[0],
            what="the new slot-0 worker to run the services",
        )
        runs = _check_runs(self, spool)
        self.assertEqual(runs[-1][0], slot0[0], "the new slot-0 worker runs the services")
        self.assertEqual(len({pid for pid, _, _ in runs}), 4, "one runner per generation")
