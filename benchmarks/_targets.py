"""
The servers the benchmark runs, each with its own graceful operation.

A target starts on one loopback port (plain HTTP or TLS), serves C{/} and
C{/pid}, and knows how to restart itself the way its users do:

- C{graceful}: C{kill -USR1} (examples/basic.py, examples/https.py);
- C{gunicorn-hup}: C{kill -HUP} the master (new workers, old ones stop);
- C{gunicorn-usr2}: the binary upgrade: C{USR2}, then C{TERM} to the old
  master once the new one serves (gunicorn's documented sequence: its
  C{WINCH} only acts when daemonized and its C{QUIT} is a quick shutdown);
- C{nginx-reload}: C{nginx -s reload};
- C{nginx-usr2}: the binary upgrade: C{USR2}, then C{WINCH} and C{QUIT} to
  the old master once the new one serves;
- C{twisted-restart}: plain twisted.web, stopped with SIGTERM and started
  again: what a restart costs without graceful.

Every restart is timed the same way: C{signal} is when the first signal (or
command) is sent, C{handoff} how long until a fresh connection's C{/pid}
answers with a pid of the new generation, and C{old_gone} how long until every
process of the old generation has exited.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import processes as _procs
from harness.probes import probe_pid, wait_answering

ROOT = Path(__file__).resolve().parent.parent
CERT = ROOT / "certs" / "server.crt"
KEY = ROOT / "certs" / "server.key"

#: Bounds of every wait in a restart.
HANDOFF_LIMIT = 30.0
GONE_LIMIT = 40.0


@dataclass
class Context:
    python: str
    workdir: Path
    tick: Callable[[], None] = lambda: None

    def env(self, **extra: str) -> dict[str, str]:
        return _procs.child_environment(extra)


@dataclass
class Restart:
    signal: float
    handoff: float | None = None
    old_gone: float | None = None
    old_pids: list[int] = field(default_factory=list)
    new_pid: int | None = None
    rss_old_mb: float = 0.0
    #: CPU seconds the new generation's processes had used when the first
    #: of them answered: the cost of starting, which a busy machine does
    #: not change the way it changes the wall-clock handoff.
    new_cpu: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.handoff is not None and self.old_gone is not None

    @property
    def window_end(self) -> float:
        spans = [s for s in (self.handoff, self.old_gone) if s is not None]
        return self.signal + (max(spans) if spans else GONE_LIMIT)

    def as_dict(self) -> dict:
        return {
            "signal": self.signal,
            "handoff": self.handoff,
            "old_gone": self.old_gone,
            "old_pids": self.old_pids,
            "new_pid": self.new_pid,
            "rss_old_mb": round(self.rss_old_mb, 1),
            "new_cpu": self.new_cpu,
            "ok": self.ok,
            "error": self.error,
        }


class Target:
    """
    One server of the comparison, on one port.
    """

    name = ""
    operation = ""
    #: What serves: for the tables.
    software = ""

    def __init__(self, ctx: Context, port: int, tls: bool) -> None:
        self.ctx = ctx
        self.port = port
        self.tls = tls
        self.procs: list[_procs.Process] = []

    # -- lifecycle ------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self._launch()

    def _launch(self) -> _procs.Process:
        n = len(self.procs)
        proc = _procs.Process(
            self.command(),
            log=self.ctx.workdir / f"{self.name}{'-tls' if self.tls else ''}-{self.port}-{n}.log",
            name=self.name,
            cwd=self.cwd(),
            env=self.ctx.env(),
        ).start()
        self.procs.append(proc)
        wait_answering(self.port, self.tls, 30.0, proc)
        return proc

    def cwd(self) -> Path:
        return ROOT

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(grace=3.0)

    @property
    def proc(self) -> _procs.Process:
        return self.procs[-1]

    def generation(self) -> set[int]:
        "The processes of the serving generation."
        return set(self.proc.members())

    def rss_mb(self) -> float:
        return sum(_procs.rss_mb(p) for p in self.generation())

    def log_text(self) -> str:
        return "\n".join(p.log() for p in self.procs)

    # -- restarting -------------------------------------------------------------

    def restart(self) -> Restart:
        raise NotImplementedError

    def _timed(
        self,
        send: Callable[[], None],
        old: set[int],
        to_exit: set[int],
        after_new: Callable[[int], None] | None = None,
    ) -> Restart:
        """
        Send the restart; time the new generation's first answer and the old
        one's exit.  C{after_new(new_pid)} runs the rest of a multi-step
        operation once the new generation answers.
        """
        record = Restart(signal=0.0, old_pids=sorted(old))
        record.rss_old_mb = sum(_procs.rss_mb(p) for p in old)
        record.signal = time.monotonic()
        try:
            send()
            record.new_pid, at = self._wait_new(old, record.signal + HANDOFF_LIMIT)
            if record.new_pid is None:
                record.error = f"no new process answered within {HANDOFF_LIMIT:g}s"
                return record
            record.handoff = at - record.signal
            fresh = {record.new_pid}
            parent = _parent(record.new_pid)
            if parent and parent not in old and parent not in (1, os.getpid()):
                fresh.add(parent)  # a new master (binary upgrades)
            record.new_cpu = sum(_procs.cpu_seconds(p) for p in fresh)
            if after_new is not None:
                after_new(record.new_pid)
            gone = self._wait_gone(to_exit, record.signal + GONE_LIMIT)
            if gone is None:
                record.error = f"old processes still running after {GONE_LIMIT:g}s"
            else:
                record.old_gone = gone - record.signal
        except Exception as e:  # a failed step is a result, not a crash
            record.error = f"{type(e).__name__}: {e}"
        return record

    def _wait_new(self, old: set[int], deadline: float) -> tuple[int | None, float]:
        while time.monotonic() < deadline:
            pid = probe_pid(self.port, self.tls, timeout=1.0)
            now = time.monotonic()
            if pid and pid not in old:
                return pid, now
            self.ctx.tick()
            time.sleep(0.002)
        return None, time.monotonic()

    def _wait_gone(self, pids: set[int], deadline: float) -> float | None:
        while time.monotonic() < deadline:
            self.proc.members()  # reaps a first process that exited
            if not any(_procs.alive(p) for p in pids):
                return time.monotonic()
            self.ctx.tick()
            time.sleep(0.005)
        return None

    def _wait_for(self, what: str, predicate: Callable[[], bool], limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if predicate():
                return
            self.ctx.tick()
            time.sleep(0.01)
        raise RuntimeError(f"{self.name}: timed out waiting for {what}")


class Graceful(Target):
    name = "graceful"
    operation = "SIGUSR1"
    software = "graceful (examples/basic.py, examples/https.py)"

    def __init__(self, ctx: Context, port: int, tls: bool) -> None:
        super().__init__(ctx, port, tls)
        self.serving: int | None = None

    def command(self) -> list[str]:
        script = "https.py" if self.tls else "basic.py"
        return [self.ctx.python, str(ROOT / "examples" / script), str(self.port)]

    def start(self) -> None:
        super().start()
        self.serving = probe_pid(self.port, self.tls)

    def generation(self) -> set[int]:
        return {self.serving} if self.serving else set()

    def restart(self) -> Restart:
        old = self.serving
        assert old is not None
        self.proc.remember(old)
        record = self._timed(lambda: os.kill(old, signal.SIGUSR1), {old}, {old})
        if record.new_pid:
            self.serving = record.new_pid
            self.proc.remember(record.new_pid)
        return record


class MasterAndWorkers(Target):
    """
    A server run by a master process with workers (gunicorn, nginx): a
    generation is the master and its children.
    """

    master: int = 0

    def workers(self) -> set[int]:
        return {p for p, parent in self.proc.members().items() if parent == self.master}

    def generation(self) -> set[int]:
        return {self.master} | self.workers()


class Gunicorn(MasterAndWorkers):
    name = "gunicorn-hup"
    operation = "SIGHUP"
    software = "gunicorn, 1 sync worker"

    def command(self) -> list[str]:
        args = [
            self.ctx.python, "-m", "gunicorn", "benchmarks.apps.hello:wsgi",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--worker-class", "sync",
            "--pid", str(self.pidfile), "--log-level", "warning", "--graceful-timeout", "30",
        ]
        if self.tls:
            args += ["--certfile", str(CERT), "--keyfile", str(KEY)]
        return args

    @property
    def pidfile(self) -> Path:
        return self.ctx.workdir / f"{self.name}{'-tls' if self.tls else ''}-{self.port}.pid"

    def start(self) -> None:
        self.master = self._launch().pid

    def restart(self) -> Restart:
        workers = self.workers()
        return self._timed(
            lambda: os.kill(self.master, signal.SIGHUP), workers | {self.master}, workers
        )


class GunicornUpgrade(Gunicorn):
    name = "gunicorn-usr2"
    operation = "USR2, then TERM to the old master"

    def restart(self) -> Restart:
        old_master = self.master
        # A new master accepts USR2 only once it has taken over the pidfile
        # (its old master is gone): wait for that, as a deploy script would.
        self._wait_for("gunicorn to take over its pidfile", lambda: self._pidfile() == old_master)
        old = self.generation()

        def finish(new_pid: int) -> None:
            new_master = _parent(new_pid)
            if new_master and new_master not in old:
                self.master = new_master
            os.kill(old_master, signal.SIGTERM)

        return self._timed(lambda: os.kill(old_master, signal.SIGUSR2), old, old, finish)

    def _pidfile(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None


class Nginx(MasterAndWorkers):
    name = "nginx-reload"
    operation = "nginx -s reload"
    software = "nginx, 1 worker"

    def __init__(self, ctx: Context, port: int, tls: bool) -> None:
        super().__init__(ctx, port, tls)
        self.prefix = ctx.workdir / f"{self.name}{'-tls' if tls else ''}-{port}"
        self.conf = self.prefix / "nginx.conf"
        self.binary = nginx_path() or "nginx"

    def command(self) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf),
                "-e", str(self.prefix / "error.log")]

    def start(self) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(nginx_conf(self.prefix, self.port, self.tls))
        # nginx runs as a daemon, as in production: a binary upgrade (USR2)
        # is ignored by a master whose parent is the one that started it.
        proc = _procs.Process(
            self.command(), log=self.prefix / "launch.log", name=self.name, cwd=self.prefix
        ).start()
        self.procs.append(proc)
        proc.wait_exit(10)  # the launcher, once nginx has daemonized
        self._wait_for("nginx's pidfile", lambda: bool(self._pidfile()))
        self.master = self._pidfile() or 0
        proc.adopt_group(self.master)
        wait_answering(self.port, self.tls, 30.0, proc)

    def _pidfile(self) -> int | None:
        try:
            return int((self.prefix / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def log_text(self) -> str:
        try:
            return (self.prefix / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def restart(self) -> Restart:
        workers = self.workers()

        def reload() -> None:
            subprocess.run(
                [*self.command(), "-s", "reload"], check=True, timeout=10,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

        return self._timed(reload, workers | {self.master}, workers)


class NginxUpgrade(Nginx):
    name = "nginx-usr2"
    operation = "USR2, then WINCH and QUIT to the old master"

    def restart(self) -> Restart:
        old_master = self.master
        old_workers = self.workers()
        old = old_workers | {old_master}

        def finish(new_pid: int) -> None:
            new_master = _parent(new_pid)
            if new_master and new_master not in old:
                self.master = new_master
            os.kill(old_master, signal.SIGWINCH)
            self._wait_for(
                "the old workers to finish",
                lambda: not any(_procs.alive(p) for p in old_workers),
                GONE_LIMIT,
            )
            os.kill(old_master, signal.SIGQUIT)

        return self._timed(lambda: os.kill(old_master, signal.SIGUSR2), old, old, finish)


class TwistedRestart(Target):
    name = "twisted-restart"
    operation = "SIGTERM, then start again"
    software = "plain twisted.web"

    def command(self) -> list[str]:
        args = [self.ctx.python, "-m", "benchmarks.apps.plain_twisted", str(self.port)]
        return args + (["--tls"] if self.tls else [])

    def generation(self) -> set[int]:
        return {self.proc.pid} if self.proc.running() else set()

    def restart(self) -> Restart:
        old = self.proc

        def send() -> None:
            os.kill(old.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while old.running() and time.monotonic() < deadline:
                time.sleep(0.005)
            # Starting again is part of the operation: launch without
            # waiting, the timing loop sees the new pid answer.
            proc = _procs.Process(
                self.command(),
                log=self.ctx.workdir
                / f"{self.name}{'-tls' if self.tls else ''}-{self.port}-{len(self.procs)}.log",
                name=self.name, cwd=ROOT, env=self.ctx.env(),
            ).start()
            self.procs.append(proc)

        return self._timed(send, {old.pid}, {old.pid})


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def nginx_path() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )


def nginx_conf(prefix: Path, port: int, tls: bool) -> str:
    listen = f"127.0.0.1:{port}" + (" ssl" if tls else "")
    ssl_lines = (
        f"ssl_certificate {CERT};\n        ssl_certificate_key {KEY};" if tls else ""
    )
    temp = "\n    ".join(
        f"{name}_temp_path {prefix}/{name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""# Generated by benchmarks/: hello world on one worker, no access log.
{user}
worker_processes 1;
daemon on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temp}
    server {{
        listen {listen};
        {ssl_lines}
        location = /pid {{ default_type "text/plain; charset=utf-8"; return 200 "$pid\\n"; }}
        location / {{ default_type "text/plain; charset=utf-8"; return 200 "Hello!\\n"; }}
    }}
}}
"""


RESTART_TARGETS: dict[str, type[Target]] = {
    cls.name: cls
    for cls in (Graceful, Gunicorn, GunicornUpgrade, Nginx, NginxUpgrade, TwistedRestart)
}


# -- the overhead comparison: one process each, no restarts ------------------


class Plain(TwistedRestart):
    name = "twisted.web"
    software = "plain twisted.web (reactor.listenTCP + Site)"


class GracefulHello(Target):
    name = "graceful"
    software = "graceful, route() handlers"
    variant = "route"

    def command(self) -> list[str]:
        return [self.ctx.python, "-m", "benchmarks.apps.graceful_hello", str(self.port), self.variant]


class GracefulResource(GracefulHello):
    name = "graceful-resource"
    software = "graceful serving the plain twisted.web resource"
    variant = "resource"


class Uvicorn(Target):
    name = "uvicorn"
    software = "uvicorn (uvloop, httptools), 1 worker"

    def command(self) -> list[str]:
        return [
            self.ctx.python, "-m", "uvicorn", "benchmarks.apps.hello:asgi",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--no-access-log", "--log-level", "warning", "--lifespan", "off",
        ]


class GunicornHello(Gunicorn):
    name = "gunicorn"


OVERHEAD_TARGETS: dict[str, type[Target]] = {
    cls.name: cls for cls in (Plain, GracefulHello, GracefulResource, Uvicorn, GunicornHello)
}
