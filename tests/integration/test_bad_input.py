"""
Integration tests of bad input: every case is a real C{twistd -n graceful}
(or C{twistd} daemon, C{twist}, or example program) that must print one line
naming the key or file, exit with status 1, and leave nothing listening.

Each config starts with a good server on a port of its own, so a failure
that comes after that server bound its socket shows whether the socket was
let go.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    CERT,
    EXAMPLES,
    KEY,
    ServerProcess,
    free_port,
    free_ports,
    listening_pids,
    refuses,
)

ERROR = "graceful: error: "
PROGRAMS = Path(__file__).parent / "programs"


def good_server(port: int) -> str:
    return f"""
[graceful]
drain_timeout = 5.0

[servers.good]
app = "tests.integration.fixtures.apps:root"
ports = [{port}]
"""


class BadInputTests(SynchronousTestCase):
    """
    C{twistd -n graceful --config FILE} with one thing wrong in FILE.
    """

    def folder(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="graceful-test-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def hold(self, host: str, port: int) -> socket.socket:
        """
        Listen on C{host}:C{port} for the length of the test.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        held = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(held.close)
        held.bind((host, port))
        held.listen(1)
        return held

    def rejects(
        self,
        bad: str,
        *named: str,
        ports: tuple[int, ...] = (),
        held: tuple[int, ...] = (),
        command: tuple[str, ...] = ("twistd", "-n"),
        config_text: str | None = None,
        config_name: str = "graceful.toml",
    ) -> str:
        """
        Run graceful on a config of a good server and then C{bad}; check the
        one-line error names every string in C{named}, the exit status is 1,
        and neither the good server's port nor any of C{ports} listens (the
        C{held} ports only in this test's own socket).

        @return: the error line.
        """
        cwd = self.folder()
        good = free_port()
        config = cwd / config_name
        config.write_bytes(
            (good_server(good) + bad).encode() if config_text is None
            else config_text.encode()
        )
        runner, *options = command
        make = ServerProcess.twistd if runner == "twistd" else ServerProcess.twist
        proc = make(*options, "graceful", "--config", str(cwd / "graceful.toml"), cwd=cwd)
        self.addCleanup(proc.stop)
        proc.start()
        status = proc.wait_exit(15)
        output = proc.log()
        self.assertEqual(status, 1, output)
        lines = [line for line in output.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, f"not one line:\n{output}")
        line = lines[0]
        self.assertTrue(line.startswith(ERROR), line)
        for name in named:
            self.assertIn(name, line)
        for port in (good, *ports):
            self.assertTrue(refuses(port), f"port {port} still listens after: {line}")
            self.assertEqual(listening_pids(port), set(), port)
        for port in held:
            self.assertEqual(listening_pids(port), {os.getpid()}, port)
        self.assertEqual(
            sorted(p.name for p in cwd.iterdir()), sorted({config_name, "graceful.toml"}),
            "nothing but the config should be left behind (no twistd.pid)",
        )
        return line

    # -- keys and types ---------------------------------------------------------

    def test_unknown_server_key(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\ncolour = "red"\n',
            "servers.bad.colour", "graceful.toml", ports=(port,),
        )

    def test_unknown_graceful_key(self) -> None:
        line = self.rejects("", "graceful.toml", config_text=(
            good_server(free_port()).replace("drain_timeout", "drain_timout")
        ))
        self.assertIn("graceful.drain_timout", line)

    def test_unknown_table(self) -> None:
        port = free_port()
        self.rejects(
            f'[server.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\n',
            "'server'", ports=(port,),
        )

    def test_wrong_type_ports(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = "{port}"\n',
            "servers.bad.ports", ports=(port,),
        )

    def test_wrong_type_setting(self) -> None:
        self.rejects("", "graceful.drain_timeout", config_text=(
            good_server(free_port()).replace("5.0", '"soon"')
        ))

    def test_wrong_type_flag(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\ngraceful = "yes"\n',
            "servers.bad.graceful", ports=(port,),
        )

    def test_not_a_port_number(self) -> None:
        self.rejects(
            '[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [70000]\n',
            "servers.bad.ports", "70000",
        )

    # -- files ------------------------------------------------------------------

    def test_missing_config_file(self) -> None:
        cwd = self.folder()
        proc = ServerProcess.twistd(
            "-n", "graceful", "--config", str(cwd / "nowhere.toml"), cwd=cwd
        )
        self.addCleanup(proc.stop)
        proc.start()
        self.assertEqual(proc.wait_exit(15), 1, proc.log())
        lines = proc.log().strip().splitlines()
        self.assertEqual(len(lines), 1, proc.log())
        self.assertTrue(lines[0].startswith(ERROR), lines)
        self.assertIn(str(cwd / "nowhere.toml"), lines[0])

    def test_not_toml(self) -> None:
        self.rejects("", "graceful.toml", config_text="[servers.bad\napp = \n")

    def test_missing_cert_file(self) -> None:
        port = free_port()
        line = self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nhttps_ports = [{port}]\n'
            f'cert = "missing.crt"\nkey = "{KEY}"\n',
            "servers.bad.cert", "missing.crt", ports=(port,),
        )
        self.assertIn("not found", line)

    def test_missing_key_file(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nhttps_ports = [{port}]\n'
            f'cert = "{CERT}"\nkey = "missing.key"\n',
            "servers.bad.key", "missing.key", ports=(port,),
        )

    def test_cert_file_not_a_certificate(self) -> None:
        """
        Found only when the TLS settings load, after the good server bound
        its port: that port is let go too.
        """
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nhttps_ports = [{port}]\n'
            f'cert = "{KEY}"\nkey = "{KEY}"\n',
            str(KEY), ports=(port,),
        )

    def test_key_file_not_a_key(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nhttps_ports = [{port}]\n'
            f'cert = "{CERT}"\nkey = "{CERT}"\n',
            str(CERT), "key", ports=(port,),
        )

    # -- ports ------------------------------------------------------------------

    def test_port_used_twice_by_two_servers(self) -> None:
        port, other = free_ports(2)
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{other}, {port}]\n'
            f'[servers.worse]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\n',
            f"port {port}", "servers.bad.ports", "servers.worse.ports", ports=(port, other),
        )

    def test_port_used_twice_by_one_server(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\n'
            f'https_ports = [{port}]\ncert = "{CERT}"\nkey = "{KEY}"\n',
            f"port {port}", "servers.bad", ports=(port,),
        )

    def test_port_already_in_use_on_the_host(self) -> None:
        """
        The port is taken on the address the server binds: the good server
        had bound its own port already, and lets it go.
        """
        port, before = free_ports(2)
        self.hold("127.0.0.1", port)
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nhost = "127.0.0.1"\n'
            f"ports = [{before}, {port}]\n",
            f"127.0.0.1:{port}", ports=(before,), held=(port,),
        )

    def test_port_already_in_use_on_every_interface(self) -> None:
        port = free_port()
        self.hold("0.0.0.0", port)
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\n',
            f":{port}", held=(port,),
        )

    # -- apps -------------------------------------------------------------------

    def test_app_fails_to_import(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.broken:app"\nports = [{port}]\n',
            "servers.bad.app", "tests.integration.fixtures.broken", "RuntimeError", ports=(port,),
        )

    def test_app_module_missing(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.nowhere:app"\nports = [{port}]\n',
            "servers.bad.app", "tests.integration.fixtures.nowhere", ports=(port,),
        )

    def test_app_attribute_missing(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:nothing_here"\nports = [{port}]\n',
            "servers.bad.app", "nothing_here", ports=(port,),
        )

    def test_app_not_a_resource_or_wsgi_app(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:not_an_app"\nports = [{port}]\n',
            "servers.bad.app", "tests.integration.fixtures.apps:not_an_app", ports=(port,),
        )

    # -- other ways to start ----------------------------------------------------

    def test_twist(self) -> None:
        port = free_port()
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\ncolour = "red"\n',
            "servers.bad.colour", ports=(port,), command=("twist",),
        )

    def test_daemon(self) -> None:
        """
        A daemon's bad input is reported on the terminal before it detaches:
        status 1, and no daemon, pidfile or listening port is left.
        """
        port = free_port()
        folder = self.folder()
        pidfile, logfile = folder / "graceful.pid", folder / "graceful.log"
        self.rejects(
            f'[servers.bad]\napp = "tests.integration.fixtures.apps:root"\nports = [{port}]\ncolour = "red"\n',
            "servers.bad.colour", ports=(port,),
            command=("twistd", "--pidfile", str(pidfile), "--logfile", str(logfile)),
        )
        self.assertFalse(pidfile.exists())


class BadInputInCodeTests(SynchronousTestCase):
    """
    A program using the API: C{start()} raises L{graceful.ConfigError}.
    """

    def test_example_port_in_use(self) -> None:
        """
        C{multi.py} with its third port taken: s1's ports, bound already, are
        let go when the program dies of the error, with status 1 and a last
        line naming the port.  (A traceback ends with that line today; the
        contract's one-line promise is for the config, not for exceptions a
        program leaves uncaught.)
        """
        ports = free_ports(4)
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("0.0.0.0", ports[2]))
        held.listen(1)
        proc = ServerProcess.python(EXAMPLES / "multi.py", *map(str, ports))
        self.addCleanup(proc.stop)
        proc.start()
        self.assertEqual(proc.wait_exit(15), 1, proc.log())
        last = proc.log().strip().splitlines()[-1]
        self.assertIn("Address already in use", last)
        self.assertIn(f":{ports[2]}", last)
        for port in ports[:2] + ports[3:]:
            self.assertTrue(refuses(port), port)
            self.assertEqual(listening_pids(port), set(), port)

    def test_prepared_port_let_go_while_the_program_lives(self) -> None:
        """
        C{start()} fails after binding the server's port (a plain file is
        where its admin socket should be): the port is let go at once, not
        only when the program exits, so a program that catches the error
        can go on.
        """
        port = free_port()
        folder = Path(tempfile.mkdtemp(prefix="graceful-bad-"))
        self.addCleanup(shutil.rmtree, folder, True)
        not_a_socket = folder / "admin.sock"
        not_a_socket.write_text("")
        proc = ServerProcess.python(PROGRAMS / "config_error.py", str(port), str(not_a_socket))
        self.addCleanup(proc.stop)
        proc.start()
        self.assertEqual(proc.wait_exit(15), 0, proc.log())
        lines = proc.log().strip().splitlines()
        self.assertIn("start failed: graceful.admin_socket:", "\n".join(lines))
        self.assertEqual(lines[-1], "port free again", proc.log())

