"""
Processes the benchmark starts, and facts about processes read from /proc.

Every server is started in a session (and so a process group) of its own:
whatever it spawns later -- graceful's next generations, gunicorn's and
nginx's workers and re-executed masters -- stays in that group, and
L{cleanup} kills the whole group and every pid it ever saw.  L{cleanup} runs
at exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Sequence

_started: list["Proc"] = []


def free_ports(n: int) -> list[int]:
    """
    C{n} distinct free loopback ports.
    """
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stat(pid: int) -> list[str] | None:
    "Fields of /proc/PID/stat after the command name (state is [0])."
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    "Alive and not a zombie."
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int) -> float:
    "User + system CPU time the process has used."
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # utime and stime are fields 14 and 15 of stat, [11] and [12] here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    "Resident set size (VmRSS) in MiB; 0 when gone."
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        ).strip()
    except OSError:
        return ""


def group(pgid: int) -> dict[int, int]:
    "Live members of process group C{pgid}: pid -> parent pid."
    members = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or fields[0] == "Z":
            continue
        if int(fields[2]) == pgid:
            members[int(entry.name)] = int(fields[1])
    return members


def children(pid: int, pgid: int) -> set[int]:
    return {p for p, parent in group(pgid).items() if parent == pid}


class Proc:
    """
    A process started in its own session, with everything it spawns.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log: Path,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        stdout: int | IO[bytes] | None = None,
    ) -> None:
        self.name = name
        self.args = [str(a) for a in args]
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")
        self.seen: set[int] = set()
        self.popen = subprocess.Popen(
            self.args,
            cwd=str(cwd) if cwd else None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        #: The process group to watch and kill: a daemon that leaves it
        #: (nginx) is adopted with L{adopt_group}.
        self.pgid = self.pid
        self.seen.add(self.pid)
        _started.append(self)

    def adopt_group(self, pgid: int) -> None:
        """
        Watch and kill group C{pgid} from now on: the group a daemon made
        for itself when it left ours.
        """
        self.pgid = pgid
        self.seen.add(pgid)

    def members(self) -> dict[int, int]:
        self.popen.poll()  # reap the first process once it exits
        found = group(self.pgid)
        self.seen.update(found)
        return found

    def running(self) -> bool:
        return bool(self.members())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace: float = 3.0, signum: int = signal.SIGTERM) -> None:
        """
        Ask the group to stop, then kill whatever is left after C{grace}.
        """
        pids = set(self.members()) | self.seen
        try:
            os.killpg(self.pgid, signum)
        except OSError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids | set(self.members())):
            time.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        pids = set(self.members()) | self.seen
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except OSError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()
        if self in _started:
            _started.remove(self)


def cleanup() -> None:
    "Kill every process the benchmark started, and all they spawned."
    for proc in list(_started):
        try:
            proc.kill()
        except Exception:
            pass


def install_cleanup() -> None:
    """
    Kill everything at exit, and turn SIGTERM and SIGHUP into
    KeyboardInterrupt so the same clean-up runs.
    """
    atexit.register(cleanup)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    # Ctrl-C too, even when started with SIGINT ignored (as `cmd &` in a
    # script is), where Python would not turn it into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
