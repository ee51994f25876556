"""
Unit tests for L{graceful._cli} and L{graceful._run}: the command line
becomes the TOML's dict, read by the config's own parser.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful._cli import main, parser
from graceful._errors import ConfigError
from graceful._run import OPTION_KEYS, build_config, config_data
from graceful._config import _SERVER_KEYS, _SETTINGS_KEYS


def options(*argv: str) -> Any:
    return parser().parse_args(["run", *argv])


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


class MappingTests(SynchronousTestCase):
    def test_every_option_has_a_key(self) -> None:
        """
        Each option of C{graceful run} maps to a key the config parser knows.
        """
        dests = {
            action.dest for action in parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
            .choices["run"]._actions if action.dest not in ("help", "config", "fd")
        }  # --fd names descriptors of this start: its config is systemd's LISTEN_FDS
        self.assertEqual(dests, set(OPTION_KEYS))
        for key in OPTION_KEYS.values():
            where, name = key.split(".")
            self.assertIn(name, _SETTINGS_KEYS if where == "graceful" else _SERVER_KEYS, key)

    def test_defaults_as_uvicorn(self) -> None:
        """
        C{graceful run main:app}: one server, 127.0.0.1:8000, requests logged.
        """
        self.assertEqual(
            config_data(options("main:app"), None),
            {
                "graceful": {"access_log": "-"},
                "servers": {"default": {"app": "main:app", "host": "127.0.0.1", "ports": [8000]}},
            },
        )

    def test_options(self) -> None:
        cwd = os.getcwd()
        data = config_data(options(
            "main:app", "--host", "::1", "--port", "8001", "--port", "8002", "--uds", "app.sock",
            "--workers", "2", "--timeout-graceful-shutdown", "7", "--drain-spread", "1",
            "--ready-timeout", "9", "--max-requests", "100", "--admin", "/debug/admin",
            "--no-access-log", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.1, 10.0.0.0/8",
            "--factory", "--lifespan", "off", "--root-path", "/api", "--log-level", "debug",
            "--pidfile", "run.pid",
        ), None)
        self.assertEqual(data, {
            "graceful": {
                "workers": 2, "drain_timeout": 7.0, "drain_spread": 1.0, "ready_timeout": 9.0,
                "max_requests": 100, "proxy_headers": True,
                "forwarded_allow_ips": ["10.0.0.1", "10.0.0.0/8"], "log_level": "debug",
                "pidfile": os.path.join(cwd, "run.pid"),
            },
            "servers": {"default": {
                "app": "main:app", "host": "::1", "ports": [8001, 8002],
                "unix_sockets": [os.path.join(cwd, "app.sock")], "admin": "/debug/admin",
                "factory": True, "lifespan": "off", "root_path": "/api",
            }},
        })

    def test_uds_alone_listens_on_no_port(self) -> None:
        data = config_data(options("main:app", "--uds", "/tmp/a.sock"), None)
        self.assertNotIn("ports", data["servers"]["default"])

    def test_options_win_over_the_config(self) -> None:
        """
        With C{--config}, the file gives the rest and the options given win;
        options not given leave the file's keys alone.
        """
        toml = {
            "graceful": {"workers": 4, "drain_timeout": 3.0, "access_log": "-"},
            "servers": {"web": {"app": "a:b", "ports": [1], "host": "0.0.0.0"}},
        }
        data = config_data(options("--config", "g.toml", "--port", "2", "--workers", "1"), toml)
        self.assertEqual(data, {
            "graceful": {"workers": 1, "drain_timeout": 3.0, "access_log": "-"},
            "servers": {"web": {"app": "a:b", "ports": [2], "host": "0.0.0.0"}},
        })
        self.assertEqual(toml["servers"]["web"]["ports"], [1])  # the file's dict is not changed
        data = config_data(options("--config", "g.toml", "--no-access-log"), toml)
        self.assertNotIn("access_log", data["graceful"])

    def test_server_options_need_one_server(self) -> None:
        toml = {"servers": {"a": {"app": "a:b"}, "b": {"app": "a:b"}}}
        with self.assertRaises(ConfigError) as e:
            config_data(options("--config", "g.toml", "--port", "2"), toml)
        self.assertEqual(str(e.exception), "g.toml: --port need a config with one server (it has: a, b)")


class ParsedTests(SynchronousTestCase):
    """
    The parser's checks, with the options' names in the message.
    """

    def error(self, *argv: str) -> str:
        with self.assertRaises(ConfigError) as e:
            build_config(options(*argv))
        return str(e.exception)

    def test_port_twice(self) -> None:
        self.assertEqual(self.error("m:a", "--port", "1", "--port", "1"),
                         "graceful run: --port lists a port twice")

    def test_missing_key_file(self) -> None:
        self.assertEqual(self.error("m:a", "--ssl-certfile", __file__),
                         "graceful run: --ssl-keyfile is missing (cert and key go together)")

    def test_workers(self) -> None:
        self.assertEqual(self.error("m:a", "--workers", "0"),
                         "graceful run: --workers must be 1 or more")

    def test_bad_network(self) -> None:
        self.assertEqual(
            self.error("m:a", "--forwarded-allow-ips", "10.0.0.300"),
            "graceful run: --forwarded-allow-ips: '10.0.0.300' is not an address, a network or '*'",
        )

    def test_env_file_missing(self) -> None:
        self.assertIn("graceful run: --env-file: file not found: ",
                      self.error("m:a", "--env-file", "/nonexistent/.env"))

    def test_config(self) -> None:
        config = build_config(options("m:a", "--port", "0", "--proxy-headers", "--workers", "3"))
        self.assertEqual(
            (config.servers[0].name, config.servers[0].app, config.servers[0].ports,
             config.settings.workers, config.settings.proxy_headers,
             config.settings.forwarded_allow_ips, config.settings.access_log),
            ("default", "m:a", (0,), 3, True, ["127.0.0.1", "::1"], "-"),
        )

    def test_config_file_relative_paths(self) -> None:
        """
        A relative path in the file is the file's folder's; on the command
        line, the current directory's.
        """
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "g.toml"
            path.write_text('[graceful]\npidfile = "g.pid"\n[servers.s]\napp = "m:a"\nports = [0]\n')
            config = build_config(options("--config", str(path)))
            self.assertEqual(config.settings.pidfile, str(Path(folder) / "g.pid"))
            config = build_config(options("--config", str(path), "--pidfile", "x.pid"))
            self.assertEqual(config.settings.pidfile, os.path.join(os.getcwd(), "x.pid"))


class ConnectionOptionTests(SynchronousTestCase):
    """
    C{--backlog}, C{--timeout-keep-alive}, C{--http}, C{--ws-max-size} and
    C{--ws-ping-interval}: uvicorn's options, with uvicorn's defaults.
    """

    def test_defaults(self) -> None:
        config = build_config(options("m:a"))
        settings = config.settings
        self.assertEqual(
            (settings.backlog, settings.timeout_keep_alive, settings.ws_max_size,
             settings.ws_ping_interval, config.servers[0].http_impl),
            (2048, 5.0, 16 * 1024 * 1024, 20.0, "auto"),
        )

    def test_given(self) -> None:
        config = build_config(options(
            "m:a", "--backlog", "100", "--timeout-keep-alive", "2.5", "--http", "httptools",
            "--ws-max-size", "1024", "--ws-ping-interval", "0",
        ))
        settings = config.settings
        self.assertEqual(
            (settings.backlog, settings.timeout_keep_alive, settings.ws_max_size,
             settings.ws_ping_interval, config.servers[0].http_impl),
            (100, 2.5, 1024, 0.0, "httptools"),
        )

    def test_bad_values_name_the_option(self) -> None:
        for argv, message in [
            (("--backlog", "0"), "graceful run: --backlog must be 1 or more, not 0"),
            (("--timeout-keep-alive", "0"),
             "graceful run: --timeout-keep-alive must be above 0 and finite, not 0.0"),
            (("--ws-max-size", "-1"),
             "graceful run: --ws-max-size must be 0 (no limit) or more, not -1"),
        ]:
            with self.assertRaises(ConfigError) as e:
                build_config(options("m:a", *argv))
            self.assertEqual(str(e.exception), message)

    def test_http_choices(self) -> None:
        code, _, err = run_main("check", "m:a", "--http", "gevent")
        self.assertEqual(code, 2)
        self.assertIn("--http: invalid choice: 'gevent'", err)


class CommandTests(SynchronousTestCase):
    def test_help(self) -> None:
        code, out, _ = run_main("--help")
        self.assertEqual(code, 0)
        self.assertIn("{run,check,ctl}", out)
        code, out, _ = run_main("run", "--help")
        self.assertEqual(code, 0)
        for option in ("--host", "--port", "--uds", "--workers", "--proxy-headers", "--reload"):
            self.assertIn(option, out)

    def test_no_command(self) -> None:
        code, _, err = run_main()
        self.assertEqual(code, 2)
        self.assertIn("usage: graceful", err)

    def test_bare_app_is_a_usage_error(self) -> None:
        """
        C{graceful main:app}: argparse's usage error, naming the commands.
        """
        code, _, err = run_main("main:app")
        self.assertEqual(code, 2)
        self.assertIn("invalid choice: 'main:app'", err)

    def test_run_needs_an_app(self) -> None:
        code, _, err = run_main("run")
        self.assertEqual((code, err), (2, "graceful run: error: give MODULE:APP or --config FILE\n"))

    def test_version(self) -> None:
        from importlib.metadata import version

        self.assertEqual(run_main("--version"), (0, f"graceful {version('graceful')}\n", ""))

    def test_check_reports_one_line(self) -> None:
        code, out, err = run_main("check", "no_such_module_here:app")
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("graceful: error: "), err)
        self.assertIn("graceful run: MODULE:APP: cannot import 'no_such_module_here'", err)
        self.assertEqual(err.count("\n"), 1)


class FdTests(SynchronousTestCase):
    """
    C{--fd}: the sockets a process is started with join its addresses.
    """

    def test_first_generation_reads_the_sockets(self) -> None:
        import socket

        from graceful._run import FD_ADDRESSES, take_fds

        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        self.addCleanup(listening.close)
        port = listening.getsockname()[1]
        # Put it where systemd would: fd 3 (whatever held 3 is kept aside).
        saved = os.dup(3) if _is_open(3) else None
        os.dup2(listening.fileno(), 3)

        def restore() -> None:
            if saved is not None:
                os.dup2(saved, 3)
                os.close(saved)
            else:
                os.close(3)

        self.addCleanup(restore)
        environ: dict[str, str] = {}
        opts = options("m:a", "--fd", "3")
        take_fds(opts, environ, 42)
        self.assertEqual((opts.port, opts.host), ([port], "127.0.0.1"))
        self.assertEqual(environ, {FD_ADDRESSES: f"tcp:127.0.0.1:{port}",
                                   "LISTEN_FDS": "1", "LISTEN_PID": "42"})

    def test_later_generations_read_the_first_ones_addresses(self) -> None:
        from graceful._run import FD_ADDRESSES, take_fds

        environ = {FD_ADDRESSES: "tcp:0.0.0.0:8000,unix:/run/app.sock"}
        opts = options("m:a", "--fd", "3", "--fd", "4", "--port", "9000")
        take_fds(opts, environ, 42)
        self.assertEqual((opts.port, opts.uds, opts.host), ([9000, 8000], ["/run/app.sock"], ""))
        self.assertNotIn("LISTEN_FDS", environ)

    def test_not_from_three(self) -> None:
        from graceful._run import take_fds

        with self.assertRaises(ConfigError) as e:
            take_fds(options("m:a", "--fd", "5"), {}, 42)
        self.assertEqual(str(e.exception),
                         "--fd: give the descriptors from 3 on, in order, as systemd passes them "
                         "(3), not 5")


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


class ThreadsOptionTests(SynchronousTestCase):
    """
    C{--threads N} (gunicorn's name): the C{wsgi_threads} key.
    """

    def test_given(self) -> None:
        self.assertEqual(build_config(options("m:a")).settings.wsgi_threads, 16)
        self.assertEqual(build_config(options("m:a", "--threads", "3")).settings.wsgi_threads, 3)

    def test_bad_value_names_the_option(self) -> None:
        with self.assertRaises(ConfigError) as e:
            build_config(options("m:a", "--threads", "0"))
        self.assertEqual(str(e.exception),
                         "graceful run: --threads must be a whole number of 1 or more, not 0")


class PreloadOptionTests(SynchronousTestCase):
    """
    C{--preload} / C{--no-preload} (gunicorn's name): the C{preload} key,
    on by default.
    """

    def test_default_and_given(self) -> None:
        self.assertTrue(build_config(options("m:a")).settings.preload)
        self.assertFalse(build_config(options("m:a", "--no-preload")).settings.preload)
        self.assertTrue(build_config(options("m:a", "--preload")).settings.preload)
