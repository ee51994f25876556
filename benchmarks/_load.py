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

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_report.lua"
WRK_ERRORS = ("connect", "read", "write", "timeout", "status")


def wrk_path() -> str | None:
    return shutil.which("wrk")


class Wrk:
    """
    One wrk run in the background; L{result} waits for its totals.
    """

    def __init__(
        self,
        url: str,
        duration: float,
        connections: int,
        log: Path,
        close: bool = False,
        threads: int = 1,
        timeout: float = 5.0,
    ) -> None:
        exe = wrk_path()
        if exe is None:
            raise RuntimeError("wrk is not installed: run benchmarks/setup")
        args = [
            exe, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            f"--timeout={int(timeout)}s", "-s", str(WRK_SCRIPT),
        ]
        if close:
            args += ["-H", "Connection: close"]
        args.append(url)
        self.duration = duration
        self.started = time.monotonic()
        self.proc = _procs.Process(args, log=log, name="wrk").start(stdout=subprocess.PIPE)

    def stop(self) -> None:
        """
        End the run now: wrk stops on SIGINT and still reports its totals.
        """
        if self.proc.wait_exit(0) is None:
            try:
                self.proc.signal(self.proc.pid, signal.SIGINT)
            except OSError:
                pass

    def result(self) -> dict | None:
        try:
            assert self.proc.process is not None
            out, _ = self.proc.process.communicate(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        self.proc.kill()  # nothing is left; closes the log
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("WRK_JSON "):
                data = json.loads(line[9:])
                data["failed"] = sum(data[k] for k in WRK_ERRORS)
                data["rps"] = data["requests"] / max(data["duration_us"] / 1e6, 1e-9)
                return data
        return None


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
