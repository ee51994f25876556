"""
wrk, the load generator the integration tests and the benchmarks both
drive: one run in the background, its totals read from a Lua report.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness import processes as _procs

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
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


