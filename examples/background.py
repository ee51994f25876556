"""
Background work that hands over across restarts without running twice.

    python examples/background.py [PORT [SPOOL_DIR]]

Two Twisted services run beside the web server:

- a scheduled job (a LoopingCall every 0.5 s) that writes one line per run
  to SPOOL_DIR/journal: the pid that ran it, when it started and ended;
- a spool consumer: drop files in SPOOL_DIR/incoming; it takes one at a time
  (rename to processing/), works on it, and acknowledges it (rename to
  done/), writing one line per job to SPOOL_DIR/ledger.

Send SIGUSR1 while jobs flow in: the new process starts its services only
once the old one's have stopped (each finishes the job in hand first), so no
job runs twice and none is lost.  The same services can be named in a
config: ``services = ["examples.background:scheduler"]`` (SPOOL_DIR then
comes from the GRACEFUL_SPOOL environment variable).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, succeed

import graceful as g


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line + "\n")


def _spool_dir() -> Path:
    return Path(os.environ.get("GRACEFUL_SPOOL", "spool")).absolute()


def scheduler(spool: Path | None = None, every: float = 0.5, work: float = 0.2) -> TimerService:
    """
    A job run every C{every} seconds, taking C{work} seconds; each run is
    journaled as "pid start end".  TimerService's stopService waits for the
    run in progress, so no run is cut short.
    """
    journal = (spool or _spool_dir()) / "journal"
    journal.parent.mkdir(parents=True, exist_ok=True)

    def run() -> Deferred[None]:
        started = time.time()
        d = task.deferLater(reactor, work, lambda: None)
        d.addCallback(lambda _: _append(journal, f"{os.getpid()} {started:.6f} {time.time():.6f}"))
        return d

    return TimerService(every, run)


class SpoolConsumer(Service):
    """
    Takes jobs from C{spool/incoming} one at a time: take (rename to
    processing/), process, acknowledge (rename to done/).  Stopping waits for
    the job in hand.
    """

    def __init__(self, spool: Path, work: float = 0.1, poll: float = 0.05) -> None:
        self.spool = spool
        self.work = work
        self.poll = poll
        self._loop: task.LoopingCall | None = None
        self._in_hand: Deferred[None] | None = None
        for folder in ("incoming", "processing", "done"):
            (spool / folder).mkdir(parents=True, exist_ok=True)

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self._take)
        self._loop.start(self.poll)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._in_hand if self._in_hand is not None else succeed(None)

    def _take(self) -> None:
        if self._in_hand is not None:
            return
        for job in sorted((self.spool / "incoming").iterdir()):
            taken = self.spool / "processing" / job.name
            try:
                job.rename(taken)
            except FileNotFoundError:
                continue  # someone else took it
            self._in_hand = task.deferLater(reactor, self.work, self._acknowledge, taken)
            return

    def _acknowledge(self, taken: Path) -> None:
        _append(self.spool / "ledger", f"{taken.name} {os.getpid()}")
        taken.rename(self.spool / "done" / taken.name)
        self._in_hand = None


def spool_consumer() -> SpoolConsumer:
    return SpoolConsumer(_spool_dir())


if __name__ == "__main__":
    spool = Path(sys.argv[2] if len(sys.argv) > 2 else "spool").absolute()
    g.add_service(scheduler(spool))
    g.add_service(SpoolConsumer(spool))
    g.on_drain(lambda: print(f"{os.getpid()}: leaving; services finish their job in hand"))
    s = g.server()
    s.route("/pid", lambda request: f"{os.getpid()}\n")
    s.enable_admin()
    s.set_port(int(sys.argv[1]) if len(sys.argv) > 1 else 8199)
    s.run()
