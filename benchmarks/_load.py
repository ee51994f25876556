"""
Load generators: wrk for throughput, the sampler for latency over time
(one-request probes are in harness.probes).
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import processes as _procs

from harness.wrk import WRK_ERRORS, WRK_SCRIPT, Wrk, wrk_path  # noqa: F401  (the benchmarks' wrk)

HERE = Path(__file__).resolve().parent


@dataclass
class Sample:
    start: float
    latency: float
    outcome: str
    pid: int
    port: int
    kind: str

    @property
    def end(self) -> float:
        return self.start + self.latency

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class Sampler:
    """
    The latency-sampling client (benchmarks/sampler.py) in its own process.
    """

    def __init__(
        self,
        python: str,
        ports: list[int],
        mix: str,
        duration: float,
        out: Path,
        env: dict[str, str],
        log: Path,
        interval: float = 0.01,
    ) -> None:
        self.out = out
        self.duration = duration
        args = [
            python, "-m", "benchmarks.sampler", "--ports", ",".join(map(str, ports)),
            "--mix", mix, "--duration", str(duration), "--interval", str(interval),
            "--out", str(out),
        ]
        self.proc = _procs.Process(args, log=log, name="sampler", cwd=HERE.parent, env=env).start()

    def stop(self) -> None:
        "End the run now: the sampler writes what it has on SIGTERM."
        if self.proc.wait_exit(0) is None:
            try:
                self.proc.signal(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass

    def result(self) -> list[Sample]:
        self.proc.wait_exit(self.duration + 30)
        self.proc.kill()
        return read_samples(self.out)


def read_samples(path: Path) -> list[Sample]:
    samples = []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                samples.append(
                    Sample(float(row["start"]), float(row["latency"]), row["outcome"],
                           int(row["pid"]), int(row["port"]), row["kind"])
                )
    except OSError:
        return []
    samples.sort(key=lambda s: s.start)
    return samples


def interpreter() -> str:
    return sys.executable
