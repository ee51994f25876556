"""
Shared pieces of the integration tests: real processes on loopback ports,
real HTTP and TLS clients, and a bounded load generator.

Every process a test starts is cleaned up by pid: the first generation is
started in a session of its own, so every later generation (same process
group) is killed with it, and pids read from pidfiles or pages are killed too.
"""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
CERT = ROOT / "certs" / "server.crt"
KEY = ROOT / "certs" / "server.key"
EXAMPLES = ROOT / "examples"

#: Upper bound of any single wait in these tests.
WAIT = 20.0

#: Read by the processes the tests start as the admin token that graceful
#: would otherwise make (GRACEFUL_ADMIN_TOKEN_FILE, as an older generation
#: passes it on): one known token, and no token file left behind per port.
ADMIN_TOKEN_VARIABLE = "GRACEFUL_ADMIN_TOKEN_FILE"
_token_folder = Path(tempfile.mkdtemp(prefix="graceful-test-token-"))
atexit.register(shutil.rmtree, _token_folder, True)
ADMIN_TOKEN_FILE = _token_folder / "admin.token"
ADMIN_TOKEN_FILE.write_text("test-admin-token-" + os.urandom(8).hex() + "\n")
ADMIN_TOKEN_FILE.chmod(0o600)


def admin_token(source: Any = None) -> str:
    """
    The admin token a test process uses when its config sets none: the one
    in C{source} (a L{ServerProcess}, whose environment names the file, or
    a path), by default the tests' shared one.
    """
    if isinstance(source, ServerProcess):
        source = source.env.get(ADMIN_TOKEN_VARIABLE) or ADMIN_TOKEN_FILE
    return Path(source or ADMIN_TOKEN_FILE).read_text().strip()


def admin_auth(source: Any = None) -> dict[str, str]:
    """
    The header that presents L{admin_token}.
    """
    return {"Authorization": f"Bearer {admin_token(source)}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
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


def child_environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(name, None)
    env[ADMIN_TOKEN_VARIABLE] = str(ADMIN_TOKEN_FILE)
    env.update(extra)
    return env


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(CERT))
    return context


def connection(port: int, tls: bool = False, timeout: float = 10.0) -> http.client.HTTPConnection:
    if tls:
        return http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=tls_context()
        )
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def get(
    port: int,
    path: str = "/",
    tls: bool = False,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """
    One request on a fresh connection; returns status, headers, body.
    """
    conn = connection(port, tls, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as e:  # the server may not be up yet
            last_error = e
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def answers(port: int, path: str = "/", tls: bool = False) -> bool:
    try:
        status, _, _ = get(port, path, tls=tls, timeout=2)
        return status < 500
    except OSError:
        return False


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def pid_of(port: int, path: str = "/pid", tls: bool = False) -> int:
    status, _, body = get(port, path, tls=tls)
    assert status == 200, (status, body)
    return int(body.split()[0])


def process_alive(pid: int) -> bool:
    """
    Alive and not a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening_pids(port: int) -> set[int]:
    """
    The pids holding a listening socket on C{port}, from /proc.
    """
    inodes = _listening_inodes(port)
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _socket_fds(int(proc.name), inodes):
            pids.add(int(proc.name))
    return pids


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


def _socket_fds(pid: int, inodes: set[str]) -> set[int]:
    return {
        fd
        for fd, target in _fd_targets(pid).items()
        if target.startswith("socket:[") and target[8:-1] in inodes
    }


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def group_members(pgid: int) -> list[int]:
    """
    Live (non-zombie) processes of process group C{pgid}.
    """
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        after = stat.rsplit(")", 1)[1].split()
        state, group = after[0], int(after[2])
        if group == pgid and state != "Z":
            members.append(int(proc.name))
    return members


class ServerProcess:
    """
    A graceful program started for a test, with every generation it spawns.
    """

    def __init__(
        self,
        args: list[str],
        cwd: Path | str = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = args
        self.cwd = str(cwd)
        self.env = env if env is not None else child_environment()
        self.output = tempfile.NamedTemporaryFile(
            prefix="graceful-test-", suffix=".log", delete=False
        )
        self.known_pids: set[int] = set()
        self.pidfiles: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def python(cls, script: Path | str, *args: str, **kw: Any) -> ServerProcess:
        return cls([sys.executable, str(script), *args], **kw)

    @classmethod
    def twistd(cls, *args: str, **kw: Any) -> ServerProcess:
        return cls([sys.executable, _script("twistd"), *args], **kw)

    @classmethod
    def twist(cls, *args: str, **kw: Any) -> ServerProcess:
        return cls([sys.executable, _script("twist"), *args], **kw)

    def start(self, **popen: Any) -> ServerProcess:
        """
        Start the first process; C{popen} adds Popen options (such as the
        descriptors a socket-activated start passes).
        """
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )
        self.known_pids.add(self.process.pid)
        return self

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return Path(self.output.name).read_text(errors="replace")

    def remember(self, pid: int) -> int:
        self.known_pids.add(pid)
        return pid

    def signal(self, pid: int, signum: int = signal.SIGUSR1) -> None:
        self.remember(pid)
        os.kill(pid, signum)

    def wait_exit(self, timeout: float = WAIT) -> int | None:
        """
        Wait for the first process to exit; its status.
        """
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_gone(self, pid: int, timeout: float = WAIT) -> None:
        wait_until(lambda: not process_alive(pid), timeout, f"process {pid} to exit")

    def stop(self) -> None:
        """
        Kill every process this test started: the group, and every known pid.
        """
        pids = set(self.known_pids)
        for pidfile in self.pidfiles:
            try:
                pids.add(int(Path(pidfile).read_text().strip()))
            except (OSError, ValueError):
                pass
        if self.process is not None:
            pids.update(group_members(self.pgid))
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
        self.output.close()


def _script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    assert found, f"{name} not found"
    return found


class Load:
    """
    Clients requesting in a loop from threads until stopped, bounded in time
    and count.  Kinds: C{"keepalive"} (one HTTP/1.1 connection reused),
    C{"close"} (C{Connection: close}, a new connection each time),
    C{"tls"} (HTTPS, kept alive) and C{"tls-close"}.
    """

    def __init__(
        self,
        targets: Iterable[tuple[str, int]],
        path: str = "/pid",
        max_seconds: float = 120.0,
        max_requests: int = 200_000,
    ) -> None:
        self.targets = list(targets)
        self.path = path
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.ok = 0
        self.failures: list[str] = []
        self.pids: Counter[int] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        for kind, port in self.targets:
            thread = threading.Thread(target=self._run, args=(kind, port), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _more(self) -> bool:
        return (
            not self._stop.is_set()
            and time.monotonic() < self.deadline
            and self.ok + len(self.failures) < self.max_requests
        )

    def _run(self, kind: str, port: int) -> None:
        tls = kind.startswith("tls")
        close = kind.endswith("close")
        headers = {"Connection": "close"} if close else {}
        conn = connection(port, tls, timeout=15)
        while self._more():
            try:
                if close:
                    conn = connection(port, tls, timeout=15)
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}: {body[:100]!r}")
                with self._lock:
                    self.ok += 1
                    try:
                        self.pids[int(body.split()[0])] += 1
                    except (ValueError, IndexError):
                        pass
                if close:
                    conn.close()
            except Exception as e:
                with self._lock:
                    self.failures.append(f"{kind}:{port}: {type(e).__name__}: {e}")
                conn.close()
                conn = connection(port, tls, timeout=15)
                time.sleep(0.01)
        conn.close()

    def wait_for(self, count: int, timeout: float = WAIT) -> None:
        start = self.ok
        wait_until(lambda: self.ok >= start + count, timeout, f"{count} more answered requests")


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
        socket_fds = {
            fd for fd, target in targets.items()
            if target.startswith("socket:[") and target[8:-1] in inodes
        }
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
