"""
Processes the integration tests and the benchmarks start, and facts about
processes read from /proc.

Every process is started in a session (and so a process group) of its own:
whatever it spawns later -- graceful's next generations and workers,
gunicorn's and nginx's workers and re-executed masters -- stays in that
group, and L{Process.kill} kills the whole group and every pid it ever saw.
L{cleanup} kills whatever is still running; the benchmarks run it at exit,
on Ctrl-C and on SIGTERM (L{install_cleanup}).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
from signal import SIGTERM, SIGUSR1
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Self, Sequence

#: The repository: on the path of every Python process started here.
ROOT = Path(__file__).resolve().parent.parent
CERT = ROOT / "certs" / "server.crt"
KEY = ROOT / "certs" / "server.key"
EXAMPLES = ROOT / "examples"
PROGRAMS = Path(__file__).resolve().parent / "programs"

#: Upper bound of any single wait.
WAIT = 20.0

#: What a parent graceful (or systemd) may have set that must not leak into
#: a process started here: it would try to adopt sockets it was not given.
_INHERITED = (
    "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
    "GRACEFUL_HANDOFF", "GRACEFUL_GENERATION", "GRACEFUL_PIDFILE",
)

_started: list[Process] = []


def free_port() -> int:
    """
    A free loopback port.
    """
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """
    C{n} distinct free loopback ports (all bound at once, so distinct).
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


def child_environment(extra: dict[str, str] | None = None, **more: str) -> dict[str, str]:
    """
    The environment of every Python process started here: the working tree
    first on the path, unbuffered output, no inherited socket-passing
    variables; then C{extra} and C{more}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    for name in _INHERITED:
        env.pop(name, None)
    env.update(extra or {})
    env.update(more)
    return env


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """
    Poll C{predicate} every 50 ms until it returns something true (which is
    returned); exceptions count as not yet (a server may not be up).

    @raise AssertionError: not within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as e:
            last_error = e
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


# -- /proc -------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    "Fields of /proc/PID/stat after the command name (state is [0])."
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def state(pid: int) -> str | None:
    """
    The process's state letter (C{"Z"} for a zombie), None when gone.
    """
    fields = _stat(pid)
    return fields[0] if fields else None


def alive(pid: int) -> bool:
    "Alive and not a zombie."
    return state(pid) not in (None, "Z")


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


def _processes(zombies: bool = False) -> Iterable[tuple[int, list[str]]]:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or (fields[0] == "Z" and not zombies):
            continue
        yield int(entry.name), fields


def group(pgid: int) -> dict[int, int]:
    "Live (non-zombie) members of process group C{pgid}: pid -> parent pid."
    return {pid: int(fields[1]) for pid, fields in _processes() if int(fields[2]) == pgid}


def group_members(pgid: int) -> list[int]:
    "Live (non-zombie) members of process group C{pgid}."
    return list(group(pgid))


def children(pid: int, zombies: bool = False) -> set[int]:
    """
    The children of C{pid}; with C{zombies}, also those that exited and
    that it has not reaped yet.
    """
    return {child for child, fields in _processes(zombies) if int(fields[1]) == pid}


def zombies(parent: int) -> list[int]:
    """
    The children of C{parent} that exited and that it has not reaped (state
    Z): a parent that reaps its children has none for long.
    """
    return sorted(child for child, fields in _processes(zombies=True)
                  if int(fields[1]) == parent and fields[0] == "Z")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _fd_targets(pid: int) -> dict[int, str]:
    """
    What each descriptor of C{pid} points to; descriptors closed while we
    look are left out (a busy server opens and closes them all the time).
    """
    targets = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    for name in names:
        try:
            targets[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except (OSError, ValueError):
            continue
    return targets


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _socket_fds(targets: dict[int, str], inodes: set[str]) -> set[int]:
    return {
        fd for fd, target in targets.items()
        if target.startswith("socket:[") and target[8:-1] in inodes
    }


def listening_pids(port: int) -> set[int]:
    """
    The pids holding a listening socket on C{port}, from /proc.
    """
    inodes = _listening_inodes(port)
    return {pid for pid, _ in _processes() if _socket_fds(_fd_targets(pid), inodes)}


def accepting_pids(port: int, among: Iterable[int] | None = None) -> set[int]:
    """
    The processes accepting connections on C{port} right now: they hold its
    listening socket and have it registered in their epoll set (a process
    still starting, or one that stopped accepting to drain, has not).

    @param among: the candidate pids (default: every process listening).
    """
    inodes = _listening_inodes(port)
    accepting = set()
    for pid in listening_pids(port) if among is None else among:
        targets = _fd_targets(pid)
        socket_fds = _socket_fds(targets, inodes)
        for fd, target in targets.items():
            if target != "anon_inode:[eventpoll]":
                continue
            try:
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            registered = {
                int(line.split()[1]) for line in info.splitlines() if line.startswith("tfd:")
            }
            if registered & socket_fds:
                accepting.add(pid)
    return accepting


def _listening_socket_inodes() -> set[str]:
    "Every listening socket: TCP (state 0A) and UNIX (flag __SO_ACCEPTCON)."
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        inodes.update(fields[9] for fields in map(str.split, lines) if fields[3] == "0A")
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        lines = []
    inodes.update(
        fields[6] for fields in map(str.split, lines) if len(fields) > 6 and fields[3] == "00010000"
    )
    return inodes


def loose_ends(pid: int) -> list[str]:
    """
    The descriptors C{pid} still holds although its peer let go: every
    socket that does not listen (a client closed it; meant for a process
    that no client is connected to), and every pipe whose other end no
    process holds (the process at the other end exited).  A process closes
    them once it runs and reads the end of them; one that never does leaks.
    """
    targets = _fd_targets(pid)
    # Reads the whole TCP tables: 0.3 s with 43,000 TIME_WAIT entries left
    # by benchmarks on this host, milliseconds on a quiet one.
    listening = _listening_socket_inodes()
    loose = [
        t for t in targets.values() if t.startswith("socket:[") and t[8:-1] not in listening
    ]
    pipes = Counter(t for t in targets.values() if t.startswith("pipe:["))
    alone = {t for t, holders in pipes.items() if holders == 1}  # both ends: a self-pipe
    if alone:
        for other, _ in _processes():
            if other != pid:
                alone -= set(_fd_targets(other).values())
    return sorted(loose + list(alone))


def settled_descriptors(pid: int, timeout: float = WAIT) -> Counter[str]:
    """
    What C{pid}'s descriptors are, by kind (C{socket}, C{pipe}, a file's
    path...), read once it has no L{loose_ends}: a count read earlier, just
    after a client closed, still has that connection in it for as long as
    a busy machine keeps the process from running.

    @raise AssertionError: loose ends still held after C{timeout} seconds.
    """
    try:
        wait_until(lambda: not loose_ends(pid), timeout, f"process {pid} to close its loose ends")
    except AssertionError as e:
        raise AssertionError(f"{e}; still open: {', '.join(loose_ends(pid))}") from None
    return Counter(
        target.split(":[", 1)[0] if target.startswith(("socket:[", "pipe:[")) else target
        for target in _fd_targets(pid).values()
    )


# -- processes ---------------------------------------------------------------------


def script(name: str) -> str:
    """
    A console script (twistd, twist) of this Python's environment.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    assert found, f"{name} not found"
    return found


class Process:
    """
    A process started in a session of its own, with everything it spawns.

    @ivar args: the command line.
    @ivar cwd: where it runs.
    @ivar env: its environment.
    @ivar name: what messages call it.
    @ivar log_path: where its output goes.
    @ivar known_pids: every pid seen in its group or told with
        L{remember}: all are killed by L{kill}.
    @ivar pidfiles: files whose pid L{kill} kills too (a daemon's).
    @ivar process: the first process, once started.
    @ivar pgid: the process group to watch and kill: a daemon that leaves it
        (nginx) is adopted with L{adopt_group}.
    """

    def __init__(
        self,
        args: Sequence[str | Path],
        cwd: Path | str = ROOT,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.cwd = str(cwd)
        self.env = env if env is not None else child_environment()
        self.name = name or Path(self.args[0]).name
        if log is None:
            handle, path = tempfile.mkstemp(prefix="graceful-test-", suffix=".log")
            os.close(handle)
            log = Path(path)
        self.log_path = log
        self.known_pids: set[int] = set()
        self.pidfiles: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.pgid = 0
        self._log: IO[bytes] | None = None

    @classmethod
    def python(cls, program: Path | str, *args: str, **kw: Any) -> Self:
        """
        C{python PROGRAM ARGS...} with this interpreter.
        """
        return cls([sys.executable, str(program), *args], **kw)

    @classmethod
    def twistd(cls, *args: str, **kw: Any) -> Self:
        return cls([sys.executable, script("twistd"), *args], **kw)

    @classmethod
    def twist(cls, *args: str, **kw: Any) -> Self:
        return cls([sys.executable, script("twist"), *args], **kw)

    def start(self, stdout: int | IO[bytes] | None = None, **popen: Any) -> Self:
        """
        Start the first process; its output (and its stdout, unless
        C{stdout} says where) goes to L{log_path}; C{popen} adds Popen
        options (such as the descriptors a socket-activated start passes).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log if stdout is not None else subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )
        self.pgid = self.process.pid
        self.known_pids.add(self.process.pid)
        _started.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def adopt_group(self, pgid: int) -> None:
        """
        Watch and kill group C{pgid} from now on: the group a daemon made
        for itself when it left ours.
        """
        self.pgid = pgid
        self.known_pids.add(pgid)

    def members(self) -> dict[int, int]:
        """
        The live members of its group (pid -> parent pid), remembered.
        """
        if self.process is not None:
            self.process.poll()  # reap the first process once it exits
        found = group(self.pgid) if self.pgid else {}
        self.known_pids.update(found)
        return found

    def running(self) -> bool:
        return bool(self.members())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def remember(self, pid: int) -> int:
        self.known_pids.add(pid)
        return pid

    def signal(self, pid: int, signum: int = SIGUSR1) -> None:
        self.remember(pid)
        os.kill(pid, signum)

    def wait_exit(self, timeout: float = WAIT) -> int | None:
        """
        Wait for the first process to exit; its status, None if it did not.
        """
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_gone(self, pid: int, timeout: float = WAIT) -> None:
        wait_until(lambda: not alive(pid), timeout, f"process {pid} to exit")

    def stop(self, grace: float = 0.0, signum: int = SIGTERM) -> None:
        """
        With a C{grace}, ask the group to stop with C{signum} and wait that
        long; then L{kill} whatever is left.
        """
        if grace > 0 and self.process is not None:
            pids = set(self.members()) | self.known_pids
            try:
                os.killpg(self.pgid, signum)
            except OSError:
                pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(alive(p) for p in pids | set(self.members())):
                time.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        """
        SIGKILL the group, every known pid and the pids in L{pidfiles}; reap
        the first process.
        """
        pids = set(self.known_pids)
        for pidfile in self.pidfiles:
            try:
                pids.add(int(Path(pidfile).read_text().strip()))
            except (OSError, ValueError):
                pass
        if self.process is not None:
            pids.update(self.members())
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except OSError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.process is not None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self._log is not None and not self._log.closed:
            self._log.close()
        if self in _started:
            _started.remove(self)


def cleanup() -> None:
    "Kill every process started here that is still running, and all they spawned."
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
