"""
Shared pieces of the integration tests: the process harness (harness/,
shared with the benchmarks) with the tests' admin token in every process's
environment, and a bounded load generator.

Every process a test starts is cleaned up by pid: the first generation is
started in a session of its own, so every later generation (same process
group) is killed with it, and pids read from pidfiles or pages are killed too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from harness import processes
from harness.probes import answers, connection, get, pid_of, refuses, tls_context
from harness.processes import (
    CERT,
    EXAMPLES,
    KEY,
    PROGRAMS,
    ROOT,
    WAIT,
    accepting_pids,
    fd_count,
    free_port,
    free_ports,
    group_members,
    listening_pids,
    settled_descriptors,
    wait_until,
    zombies,
)
from harness.processes import alive as process_alive

__all__ = [
    "CERT", "EXAMPLES", "KEY", "PROGRAMS", "ROOT", "WAIT", "accepting_pids", "answers",
    "connection", "fd_count", "free_port", "free_ports", "get", "group_members",
    "listening_pids", "pid_of", "process_alive", "refuses", "settled_descriptors", "tls_context",
    "wait_until", "zombies",
    "ADMIN_TOKEN_FILE", "ADMIN_TOKEN_VARIABLE", "Load", "ServerProcess", "admin_auth",
    "admin_token", "child_environment",
]

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


def child_environment(**extra: str) -> dict[str, str]:
    """
    The harness's environment for a test process, naming the tests' admin
    token file (then C{extra}).
    """
    return processes.child_environment({ADMIN_TOKEN_VARIABLE: str(ADMIN_TOKEN_FILE)}, **extra)


class ServerProcess(processes.Process):
    """
    A graceful program started for a test, with every generation it
    spawns: a harness process whose environment is, unless given,
    L{child_environment}.
    """

    def __init__(
        self, args: list[str], cwd: Path | str = ROOT, env: dict[str, str] | None = None, **kw: Any
    ) -> None:
        super().__init__(args, cwd, env if env is not None else child_environment(), **kw)


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
