"""
Load generators and probes: wrk for throughput, the sampler for latency
over time, and one-request probes on fresh connections.
"""

from __future__ import annotations

import csv
import http.client
import json
import shutil
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import _procs
from .sampler import CERT

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
        self.proc = _procs.Proc("wrk", args, log, stdout=subprocess.PIPE)

    def stop(self) -> None:
        """
        End the run now: wrk stops on SIGINT and still reports its totals.
        """
        if self.proc.popen.poll() is None:
            try:
                self.proc.popen.send_signal(signal.SIGINT)
            except OSError:
                pass

    def result(self) -> dict | None:
        try:
            out, _ = self.proc.popen.communicate(timeout=self.duration + 30)
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
        self.proc = _procs.Proc("sampler", args, log, cwd=HERE.parent, env=env)

    def stop(self) -> None:
        "End the run now: the sampler writes what it has on SIGTERM."
        if self.proc.popen.poll() is None:
            try:
                self.proc.popen.terminate()
            except OSError:
                pass

    def result(self) -> list[Sample]:
        try:
            self.proc.popen.wait(self.duration + 30)
        except subprocess.TimeoutExpired:
            pass
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


_tls_context: ssl.SSLContext | None = None


def probe_pid(port: int, tls: bool = False, timeout: float = 1.0, path: str = "/pid") -> int | None:
    """
    The pid a fresh connection's C{GET /pid} answers with, or None.
    """
    global _tls_context
    if tls:
        if _tls_context is None:
            _tls_context = ssl.create_default_context(cafile=str(CERT))
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=_tls_context
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        return int(body.split()[0])
    except (OSError, http.client.HTTPException, ValueError, IndexError):
        return None
    finally:
        conn.close()


def wait_answering(port: int, tls: bool, timeout: float, proc: _procs.Proc | None = None) -> int:
    """
    Wait until the port answers C{/pid}; the pid.  Fails early when C{proc}
    has exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = probe_pid(port, tls)
        if pid:
            return pid
        if proc is not None and not proc.running():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_text()[-2000:]}")
        time.sleep(0.05)
    tail = proc.log_text()[-2000:] if proc is not None else ""
    raise RuntimeError(f"port {port} did not answer within {timeout:g}s\n{tail}")


def python_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """
    The environment of every Python server: the working tree first on the
    path, unbuffered output, no inherited socket-passing variables.
    """
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = ":".join(
        [str(root)] + [p for p in env.get("PYTHONPATH", "").split(":") if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                 "GRACEFUL_HANDOFF", "GRACEFUL_GENERATION", "GRACEFUL_PIDFILE"):
        env.pop(name, None)
    if extra:
        env.update(extra)
    return env


def interpreter() -> str:
    return sys.executable
