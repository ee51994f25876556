"""
Zero-downtime restarts, proven on real processes and real sockets (issue 3).

Every test runs a bounded load of keep-alive, Connection: close and TLS
clients on 127.0.0.1 while it restarts, and counts failed requests.
"""

from __future__ import annotations

import datetime
import os
import json
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from harness.processes import children
from tests.support import (
    CERT,
    KEY,
    ROOT,
    Load,
    ServerProcess,
    admin_auth,
    free_ports,
    get,
    group_members,
    listening_pids,
    pid_of,
    process_alive,
    refuses,
    settled_descriptors,
    wait_until,
    zombies,
)

WEB = ROOT / "tests" / "integration" / "programs" / "web.py"


def status(port: int, tls: bool = False) -> dict[str, Any]:
    code, _, body = get(port, "/debug/admin/status", tls=tls, headers=admin_auth())
    assert code == 200, (code, body)
    return json.loads(body)  # type: ignore[no-any-return]


def restart(proc: ServerProcess, port: int, tls: bool = False) -> tuple[int, int]:
    """
    SIGUSR1 the process serving C{port}; returns (old pid, new pid) once the
    new one answers.
    """
    old = pid_of(port, tls=tls)
    proc.signal(old, signal.SIGUSR1)
    new = wait_until(
        lambda: (lambda p: p if p != old else None)(pid_of(port, tls=tls)),
        what=f"a new process to replace {old}",
    )
    return old, proc.remember(new)


#: Restarts of the leak test: enough for a leak per restart to show;
#: hostile testing ran 300.
LEAK_RESTARTS = max(10, int(os.environ.get("GRACEFUL_LEAK_RESTARTS", "40")))


class CodeAPIRestartTests(SynchronousTestCase):
    """
    A program written with the code API (tests/integration/programs/web.py), restarted
    with SIGUSR1.
    """

    def start_web(self) -> tuple[ServerProcess, int, int]:
        http_port, https_port = free_ports(2)
        proc = ServerProcess.python(WEB, str(http_port), str(https_port)).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(http_port), what="the server to answer")
        return proc, http_port, https_port

    def test_back_to_back_restarts_under_load(self) -> None:
        """
        10 restarts in a row under keep-alive, Connection: close and TLS load:
        no request fails, every restart gives a new pid, and only the newest
        process is left listening.
        """
        proc, http_port, https_port = self.start_web()
        first = pid_of(http_port)
        pids = [first]
        targets = [
            ("keepalive", http_port),
            ("keepalive", http_port),
            ("close", http_port),
            ("tls", https_port),
            ("tls-close", https_port),
        ]
        with Load(targets, path="/pid", max_seconds=120) as load:
            load.wait_for(100)
            for _ in range(10):
                old, new = restart(proc, http_port)
                self.assertEqual(old, pids[-1])
                pids.append(new)
                load.wait_for(20)
        self.assertEqual(load.failures, [])
        self.assertEqual(len(set(pids)), 11, "every restart gives a new pid")
        self.assertGreater(len(load.pids), 10, "the load was answered across generations")
        newest = pids[-1]
        for port in (http_port, https_port):
            wait_until(
                lambda: listening_pids(port) == {newest},
                what=f"only {newest} to listen on {port}",
            )
        self.assertEqual(pid_of(https_port, tls=True), newest)

    def test_request_in_flight_finishes_in_the_old_process(self) -> None:
        """
        A 3-second request started before a restart completes with 200,
        answered by the old process with Connection: close, while new
        requests reach the new process.
        """
        proc, http_port, _ = self.start_web()
        old = pid_of(http_port)
        result: dict[str, Any] = {}

        def slow_request() -> None:
            result["answer"] = get(http_port, "/slow?seconds=3", timeout=15)

        thread = threading.Thread(target=slow_request)
        thread.start()
        wait_until(
            lambda: status(http_port)["servers"][0]["in_flight"] >= 1,
            what="the slow request to be in flight",
        )
        _, new = restart(proc, http_port)
        self.assertTrue(thread.is_alive(), "the slow request is still in flight")
        self.assertEqual(pid_of(http_port), new)
        thread.join(15)
        code, headers, body = result["answer"]
        self.assertEqual((code, int(body)), (200, old))
        self.assertEqual(headers.get("connection"), "close")
        proc.wait_gone(old)

    def test_restart_signal_to_the_whole_group(self) -> None:
        """
        SIGUSR1 to every process of the group (C{kill -USR1 -PGID}) while a
        new process is starting: the restarting one refuses, the starting
        one holds the signal back (the default action would kill it), drops
        it with one line once its handlers are in place, and takes over; no
        third generation is started.
        """
        proc, http_port, _ = self.start_web()
        old = pid_of(http_port)
        proc.signal(old, signal.SIGUSR1)
        new = None
        deadline = time.monotonic() + 10
        while new is None and time.monotonic() < deadline:
            started = children(old)
            new = min(started) if started else None
            time.sleep(0.005)
        self.assertIsNotNone(new, "the new process to start")
        assert new is not None
        proc.remember(new)
        os.killpg(proc.pgid, signal.SIGUSR1)
        wait_until(lambda: pid_of(http_port) == new, what=f"{new} to take over")
        proc.wait_gone(old)
        wait_until(
            lambda: f"{new}: restart refused: SIGUSR1 arrived while this process was starting"
            in proc.log(),
            what="the new process to say it dropped the signal",
        )
        self.assertEqual(group_members(proc.pgid), [new])
        self.assertEqual(children(new), set())

    def test_restarts_leak_nothing(self) -> None:
        """
        LEAK_RESTARTS restarts in a row: the serving process's open
        descriptors and the number of processes stay flat; no generation
        that restarted leaves a child unreaped (its one child is its
        successor, which outlives it: a zombie would be a child graceful
        started and lost).  The count is exact, so one descriptor leaked per
        restart shows at once; set GRACEFUL_LEAK_RESTARTS for a longer soak.
        The descriptors are counted once the process has closed what its
        peers let go of (our probes' connections, the pipes of the
        generation before): read earlier, on a busy machine, the count
        still had the last probe's connection in it.
        """
        proc, http_port, _ = self.start_web()
        for _ in range(5):
            restart(proc, http_port)
        baseline_pid = pid_of(http_port)
        wait_until(lambda: group_members(proc.pgid) == [baseline_pid], what="old ones to exit")
        baseline = settled_descriptors(baseline_pid)
        for _ in range(LEAK_RESTARTS - 5):
            old, newest = restart(proc, http_port)
            self.assertEqual(zombies(old), [], f"generation {old}")
        wait_until(lambda: group_members(proc.pgid) == [newest], what="old ones to exit")
        self.assertEqual(settled_descriptors(newest), baseline)


def _config(
    directory: Path,
    *,
    ports: list[int],
    https_ports: list[int] = [],
    app: str = "tests.integration.programs.pages:root",
    cert: Path = CERT,
    key: Path = KEY,
    extra: str = "",
    ready_timeout: float = 10.0,
) -> Path:
    path = directory / "graceful.toml"
    https = (
        f'https_ports = {https_ports}\ncert = "{cert}"\nkey = "{key}"\n' if https_ports else ""
    )
    path.write_text(
        f"[graceful]\nready_timeout = {ready_timeout}\ndrain_timeout = 10.0\n\n"
        f'[servers.web]\napp = "{app}"\nhost = "127.0.0.1"\nports = {ports}\n'
        f'{https}admin = "/debug/admin"\n{extra}'
    )
    return path


def _new_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def served_certificate(port: int) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(cert_path: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


class TwistdRestartTests(SynchronousTestCase):
    """
    twistd -n graceful --config FILE: the config is read afresh by every
    restart, so a bad new release or config must leave the old process
    serving.
    """

    def start_twistd(self, config: Path) -> ServerProcess:
        pidfile = config.parent / "twistd.pid"
        proc = ServerProcess.twistd(
            "-n", f"--pidfile={pidfile}", "graceful", "--config", str(config)
        ).start()
        proc.pidfiles.append(pidfile)
        self.addCleanup(proc.stop)
        return proc

    def tempdir(self) -> Path:
        directory = tempfile.TemporaryDirectory(prefix="graceful-restart-")
        self.addCleanup(directory.cleanup)
        return Path(directory.name)

    def test_failed_restarts_leave_the_old_process_serving(self) -> None:
        """
        A new process that exits (bad config), cannot import its app,
        crashes, hangs past ready_timeout, cannot bind a new port or cannot
        load its certificate is killed and reported; the old process serves
        throughout, and the next good restart works.
        """
        directory = self.tempdir()
        http_port, https_port, held_port = free_ports(3)
        good = dict(ports=[http_port], https_ports=[https_port])
        config = _config(directory, **good)  # type: ignore[arg-type]
        proc = self.start_twistd(config)
        wait_until(lambda: pid_of(http_port), what="twistd to serve")
        serving = proc.remember(pid_of(http_port))
        garbage = directory / "garbage.crt"
        garbage.write_text("not a certificate\n")
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", held_port))
        held.listen(1)
        # ready_timeout is the old process's: 10 s, so that a busy machine
        # does not turn a slow start into a timeout; the hang case comes last,
        # after a good restart into a config with 3 s.
        cases = [
            ("exits on a bad config", dict(extra="colour = 'blue'\n"), "unknown key"),
            ("cannot import its app", dict(app="tests.integration.programs.missing:root"), "cannot import"),
            ("crashes", dict(app="tests.integration.programs.crash:root"), "killed by signal 11"),
            ("cannot bind", dict(ports=[http_port, held_port]), f"{held_port}"),
            ("bad certificate", dict(cert=garbage), "garbage.crt"),
            ("hangs", dict(app="tests.integration.programs.hang:root"), "not ready within 3s"),
        ]
        targets = [("keepalive", http_port), ("close", http_port), ("tls", https_port)]
        with Load(targets, path="/pid", max_seconds=150) as load:
            load.wait_for(50)
            for what, change, expected in cases:
                if what == "hangs":
                    _config(directory, **good, ready_timeout=3.0)  # type: ignore[arg-type]
                    _, serving = restart(proc, http_port)
                    wait_until(lambda: status(http_port)["last_restart"], what="the handoff")
                before = status(http_port)["last_restart"]
                timeout = 3.0 if what == "hangs" else 10.0
                _config(directory, **{**good, **change}, ready_timeout=timeout)  # type: ignore[arg-type]
                proc.signal(serving, signal.SIGUSR1)
                last = wait_until(
                    lambda: (lambda r: r if r != before else None)(
                        status(http_port)["last_restart"]
                    ),
                    what=f"the restart that {what} to be reported",
                )
                self.assertFalse(last["ok"], what)
                self.assertIn(expected, last["error"], what)
                self.assertEqual(pid_of(http_port), serving, what)
                wait_until(
                    lambda: group_members(proc.pgid) == [serving],
                    what=f"the new process that {what} to be gone",
                )
                # Gone from the group is not yet reaped: the old process reaps
                # it when its reactor next runs, which a busy machine delays
                # (one zombie seen at load 9); a leak stays a zombie.
                wait_until(
                    lambda: zombies(serving) == [],
                    what=f"the new process that {what} to be reaped",
                )
                load.wait_for(20)
            _config(directory, **good)  # type: ignore[arg-type]
            _, new = restart(proc, http_port)
            load.wait_for(50)
        self.assertEqual(load.failures, [])
        self.assertTrue(status(http_port)["last_restart"]["ok"])
        self.assertIn("restart failed, still serving", proc.log())
        proc.wait_gone(serving)

    def test_config_changes_across_a_restart(self) -> None:
        """
        A port added is bound by the new process; a port removed closes with
        the old one; a replaced certificate is served by the new process; the
        pidfile names the new process.
        """
        directory = self.tempdir()
        kept, dropped, added, https_port = free_ports(4)
        cert_a, key_a = _new_certificate(directory, "a")
        cert_b, key_b = _new_certificate(directory, "b")
        config = _config(
            directory, ports=[kept, dropped], https_ports=[https_port], cert=cert_a, key=key_a
        )
        proc = self.start_twistd(config)
        wait_until(lambda: pid_of(kept), what="twistd to serve")
        self.assertEqual(served_certificate(https_port), der_of(cert_a))
        self.assertTrue(refuses(added))
        _config(directory, ports=[kept, added], https_ports=[https_port], cert=cert_b, key=key_b)
        old, new = restart(proc, kept)
        proc.wait_gone(old)
        self.assertEqual(pid_of(added), new)
        self.assertTrue(refuses(dropped))
        self.assertEqual(served_certificate(https_port), der_of(cert_b))
        self.assertEqual(int((directory / "twistd.pid").read_text()), new)
        self.assertIn(f"{new}: http server reloaded listening on [:{kept}]", proc.log())
        self.assertIn(f"{new}: http server started listening on [:{added}]", proc.log())


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run with: python -m pytest tests/integration/test_restart.py")
