"""
Workers forked from a template (C{preload = true}) against exec'd ones
(C{preload = false}), side by side in one run, serving the FastAPI hello
app with C{workers = 4}:

- memory: the PSS (proportional set size: shared pages split among the
  processes that share them) of the whole tree, and of the workers alone,
  after a short wrk load; granian --workers 4 and gunicorn (uvicorn
  workers, with and without --preload) beside it when installed;
- replacement: a worker is killed; the time from the master's decision to
  replace it (its back-off over) to the new worker's C{ready} in the log;
- upgrade: SIGUSR1 under wrk load; the time from the new generation's
  template being ready to
  its C{4 workers serve} (without preload, from the SIGUSR1), and the
  requests wrk saw fail.

    python -m benchmarks.preload [--workers 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness import processes as _procs

ROOT = Path(__file__).resolve().parents[1]
APP = "benchmarks.apps.fastapi_hello:app"
STAMP = re.compile(r"^\S+")


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(root: int) -> list[int]:
    found, todo = [root], [root]
    while todo:
        parent = todo.pop()
        for child in _procs.children(parent):
            found.append(child)
            todo.append(child)
    return found


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.005) -> float:
    """
    Poll until C{predicate} is true; the monotonic time it first was.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    raise SystemExit(f"timed out waiting for {what}")


def wrk(port: int, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["wrk", "-t1", "-c16", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def wrk_errors(output: str) -> int:
    errors = 0
    for line in output.splitlines():
        if "errors" in line or "Non-2xx" in line:
            print(f"    wrk: {line.strip()}")
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors += sum(int(g) for g in match.groups()) if match else 0
    return errors


class Graceful:
    def __init__(self, workers: int, preload: bool, folder: Path) -> None:
        self.port = _procs.free_port()
        self.preload = preload
        self.workers = workers
        config = folder / f"preload-{preload}.toml"
        config.write_text(
            f"[graceful]\nworkers = {workers}\npreload = {str(preload).lower()}\n"
            f'[servers.web]\nports = [{self.port}]\napp = "{APP}"\n'
        )
        self.log = folder / f"preload-{preload}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "graceful", "run", "--config", str(config)],
            cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True, env=_procs.child_environment(),
        )
        wait_for(lambda: self.lines(f"{workers} workers serve"), 60, "the workers", 0.05)

    def lines(self, text: str) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if text in line]

    def master(self) -> int:
        ready = self.lines("is ready after")
        return int(ready[-1].split("process ")[1].split()[0]) if ready else self.proc.pid

    def memory(self) -> tuple[int, int]:
        load = wrk(self.port, 2)
        load.communicate()
        master = self.master()
        pids = tree(master)
        template = {int(line.split("worker template ")[1].split()[0])
                    for line in self.lines(f"{master}: worker template")}
        workers = [p for p in pids if p != master and p not in template]
        return sum(pss_kib(p) for p in pids), sum(pss_kib(p) for p in workers)

    def replacement(self) -> float:
        master = self.master()
        victim = [p for p in tree(master) if p != master and _procs.children(p) == set()][-1]
        before = len(self.lines("is ready"))
        died = len(self.lines("died"))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(self.lines("died")) > died, 10, "the death")
        # The master decides at once and waits out its back-off (0.5 s, then longer).
        delay = float(self.lines("died")[-1].rsplit(" in ", 1)[1].rstrip("s"))
        decided = wait_for(lambda: len(self.lines("died")) > died, 10, "the death") + delay
        ready = wait_for(lambda: len(self.lines("is ready")) > before, 10, "the replacement")
        return ready - decided

    def upgrade(self) -> tuple[float, int]:
        master = self.master()
        load = wrk(self.port, 6)
        time.sleep(1)
        seen = len(self.lines(""))
        started = time.monotonic()
        os.kill(master, signal.SIGUSR1)

        def others(text: str) -> list[str]:
            # This upgrade's lines only: not the old master's, nor an earlier round's.
            lines = self.log.read_text(errors="replace").splitlines()[seen:]
            return [line for line in lines if text in line and line.split()[2] != f"{master}:"]

        if self.preload:
            started = wait_for(lambda: others("is ready: workers fork"), 30, "the template", 0.002)
        served = wait_for(lambda: others(f"{self.workers} workers serve"), 30, "the workers", 0.002)
        output = load.communicate()[0].decode(errors="replace")
        wait_for(lambda: self.master() != master, 30, "the hand-over", 0.05)
        return served - started, wrk_errors(output)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def peer(command: list[str], workers: int) -> tuple[int, int] | None:
    """
    Another server's PSS, the whole tree and its workers (all but the root).
    """
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        return None
    port = _procs.free_port()
    argv = [a.replace("PORT", str(port)) for a in command]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=_procs.child_environment())
    try:
        wait_for(lambda: len(tree(proc.pid)) > workers, 60, argv[0], 0.05)
        wait_for(lambda: subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/"],
                                        capture_output=True).returncode == 0, 60, argv[0], 0.1)
        wrk(port, 2).communicate()
        pids = tree(proc.pid)
        return sum(pss_kib(p) for p in pids), sum(pss_kib(p) for p in pids[1:])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    n = options.workers
    folder = Path(tempfile.mkdtemp(prefix="graceful-preload-bench-"))
    bin_dir = Path(sys.executable).parent
    print(f"workers = {n}, FastAPI hello ({APP}); logs in {folder}")
    rows: list[tuple[str, tuple[int, int] | None]] = []
    for preload in (False, True):
        server = Graceful(n, preload, folder)
        try:
            rows.append((f"graceful preload={str(preload).lower()}", server.memory()))
            replaced = [server.replacement() for _ in range(options.rounds)]
            upgrades = [server.upgrade() for _ in range(options.rounds)]
        finally:
            server.stop()
        print(f"graceful preload={str(preload).lower()}: replacement after the decision "
              f"{', '.join(f'{r * 1000:.0f} ms' for r in replaced)}; upgrade (new "
              f"{'template ready' if preload else 'SIGUSR1'} -> {n} workers serve) "
              f"{', '.join(f'{u:.2f} s' for u, _ in upgrades)}; wrk errors during upgrades "
              f"{sum(e for _, e in upgrades)}")
    rows.append(("granian --workers", peer(
        [str(bin_dir / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", "PORT",
         "--workers", str(n), APP], n)))
    for preload in ([], ["--preload"]):
        rows.append((f"gunicorn -k uvicorn {' '.join(preload)}".strip(), peer(
            [str(bin_dir / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "-w", str(n),
             "-b", "127.0.0.1:PORT", *preload, APP], n)))
    print(f"{'server':32} {'PSS tree MiB':>13} {'PSS workers MiB':>16}")
    for name, pss in rows:
        if pss is None:
            print(f"{name:32} {'not installed':>13}")
        else:
            print(f"{name:32} {pss[0] / 1024:13.1f} {pss[1] / 1024:16.1f}")


if __name__ == "__main__":
    main()
