"""
Unit tests for L{graceful._plugin}: the twistd command line a restart gives
the new process (built with twistd's real option tables and checked by
parsing it again with twistd's own parser), taking the pidfile over from
twistd, and the one-line exit on a bad config.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from attrs import define
from twisted.internet.testing import MemoryReactorClock
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from graceful._plugin import (
    Options,
    _take_over_from_twistd,
    makeService,
    twistd_arguments_for_new_process,
)
from graceful._process import reset_for_tests
from graceful.process.runtime import PIDFILE_VARIABLE, Runtime
from graceful.handoff.supervision import NoPidfile, Pidfile
from graceful.testing import FakeOldProcess

SUBCOMMAND = ["graceful", "--config", "graceful.toml"]


def new_arguments(arguments: list[str], daemon: bool) -> list[str]:
    options = ServerOptions()
    return twistd_arguments_for_new_process(
        arguments, options.shortOpt, options.longOpt, daemon=daemon
    )


def parse_twistd(arguments: list[str]) -> ServerOptions:
    """
    What twistd itself makes of C{arguments}.
    """
    options = ServerOptions()
    options.parseOptions(arguments)
    return options


class NewProcessArgumentsTests(SynchronousTestCase):
    """
    L{twistd_arguments_for_new_process}: no pidfile for twistd to check, a
    daemon's successor in the foreground with the same log file, and every
    other option and the subcommand's arguments as they were.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="graceful-plugin-")).resolve()
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.folder)

    def test_daemon(self) -> None:
        arguments = new_arguments(
            ["--pidfile", "/run/app.pid", "--logfile", "app.log", "-u", "1000", *SUBCOMMAND],
            daemon=True,
        )
        self.assertEqual(
            arguments,
            [
                "-u",
                "1000",
                "--pidfile=",
                "--nodaemon",
                f"--logfile={self.folder / 'app.log'}",
                *SUBCOMMAND,
            ],
        )

    def test_pidfile_spellings_removed(self) -> None:
        for given in (
            ["--pidfile", "/run/a.pid"],
            ["--pidfile=/run/a.pid"],
            ["--pidf=/run/a.pid"],  # getopt accepts unique abbreviations
            ["--pidfile=/run/a.pid", "--pidfile", "/run/b.pid"],
        ):
            arguments = new_arguments(["-n", *given, *SUBCOMMAND], daemon=False)
            self.assertEqual(arguments, ["-n", "--pidfile=", *SUBCOMMAND], given)

    def test_foreground(self) -> None:
        self.assertEqual(
            new_arguments(["--nodaemon", *SUBCOMMAND], daemon=False),
            ["--nodaemon", "--pidfile=", *SUBCOMMAND],
        )

    def test_foreground_log_to_stdout(self) -> None:
        self.assertEqual(
            new_arguments(["-n", "--logfile=-", *SUBCOMMAND], daemon=False),
            ["-n", "--pidfile=", "--logfile=-", *SUBCOMMAND],
        )

    def test_short_logfile(self) -> None:
        arguments = new_arguments(["-l", "logs/app.log", *SUBCOMMAND], daemon=True)
        self.assertIn(f"--logfile={self.folder / 'logs/app.log'}", arguments)
        self.assertNotIn("-l", arguments)

    def test_daemon_default_logfile(self) -> None:
        """
        A daemon logged to twistd.log in its folder; so does its successor,
        which runs in the foreground.
        """
        arguments = new_arguments(SUBCOMMAND, daemon=True)
        self.assertEqual(
            arguments,
            ["--pidfile=", "--nodaemon", f"--logfile={self.folder / 'twistd.log'}", *SUBCOMMAND],
        )

    def test_other_options_kept(self) -> None:
        arguments = new_arguments(
            ["--reactor=epoll", "-no", "--umask", "022", "--rundir=/srv", *SUBCOMMAND],
            daemon=False,
        )
        self.assertEqual(
            arguments,
            ["--reactor", "epoll", "-n", "-o", "--umask", "022", "--rundir", "/srv",
             "--pidfile=", *SUBCOMMAND],
        )

    def test_subcommand_arguments_untouched(self) -> None:
        tail = ["graceful", "--config", "my config.toml", "--pidfile", "x", "-l", "y"]
        arguments = new_arguments(["-n", *tail], daemon=False)
        self.assertEqual(arguments, ["-n", "--pidfile=", *tail])

    def test_twistd_reads_it_back(self) -> None:
        """
        twistd parses the new command line into what the new process needs.
        """
        (self.folder / "graceful.toml").write_text("")
        arguments = new_arguments(
            ["--pidfile", "/run/app.pid", "-l", "app.log", "--umask=022", *SUBCOMMAND],
            daemon=True,
        )
        options = parse_twistd(arguments)
        self.assertEqual(options["pidfile"], "")
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["logfile"], str(self.folder / "app.log"))
        self.assertEqual(options["umask"], 0o22)
        self.assertEqual(options.subCommand, "graceful")
        self.assertEqual(options.subOptions["config"], "graceful.toml")


@define
class FakeTwistdOptions:
    """
    The plugin's options as twistd hands them over: with a C{parent}.
    """

    parent: Any

    def __getitem__(self, key: str) -> Any:
        return {"config": "graceful.toml"}[key]


class HandoffRuntime(Runtime):
    @property
    def is_handoff(self) -> bool:
        return True


class TakeOverFromTwistdTests(SynchronousTestCase):
    """
    Under twistd, graceful keeps the pidfile and restarts with twistd's own
    pidfile check switched off.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="graceful-plugin-")).resolve()
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.folder)

    def runtime(self, cls: type[Runtime] = Runtime) -> Runtime:
        return cls(
            reactor=MemoryReactorClock(), environ={}, pid=123, arguments=["-n", *SUBCOMMAND]
        )

    def parent(self, pidfile: str, nodaemon: bool = True) -> ServerOptions:
        parent = ServerOptions()
        parent["pidfile"] = pidfile
        parent["nodaemon"] = nodaemon
        return parent

    def test_takes_the_pidfile(self) -> None:
        runtime = self.runtime()
        parent = self.parent("twistd.pid")
        _take_over_from_twistd(FakeTwistdOptions(parent), runtime)  # type: ignore[arg-type]
        self.assertEqual(runtime.pidfile, Pidfile(self.folder / "twistd.pid"))
        self.assertEqual(runtime.environ[PIDFILE_VARIABLE], str(self.folder / "twistd.pid"))
        self.assertEqual(parent["pidfile"], "")
        self.assertEqual(runtime.arguments, ["-n", "--pidfile=", *SUBCOMMAND])

    def test_no_pidfile(self) -> None:
        runtime = self.runtime()
        _take_over_from_twistd(FakeTwistdOptions(self.parent("")), runtime)  # type: ignore[arg-type]
        self.assertIsInstance(runtime.pidfile, NoPidfile)
        self.assertEqual(runtime.arguments, ["-n", "--pidfile=", *SUBCOMMAND])

    def test_daemon(self) -> None:
        runtime = self.runtime()
        runtime.arguments = list(SUBCOMMAND)
        _take_over_from_twistd(
            FakeTwistdOptions(self.parent("app.pid", nodaemon=False)), runtime  # type: ignore[arg-type]
        )
        self.assertEqual(
            runtime.arguments,
            ["--pidfile=", "--nodaemon", f"--logfile={self.folder / 'twistd.log'}", *SUBCOMMAND],
        )

    def test_new_generation_keeps_inherited_pidfile(self) -> None:
        """
        A process a restart made was started with C{--pidfile=}; the pidfile
        it keeps comes from the environment, not from twistd.
        """
        runtime = self.runtime(HandoffRuntime)
        _take_over_from_twistd(FakeTwistdOptions(self.parent("other.pid")), runtime)  # type: ignore[arg-type]
        self.assertIsInstance(runtime.pidfile, NoPidfile)

    def test_not_under_twistd(self) -> None:
        runtime = self.runtime()
        _take_over_from_twistd(Options(), runtime)
        self.assertEqual(runtime.arguments, ["-n", *SUBCOMMAND])
        self.assertIsInstance(runtime.pidfile, NoPidfile)


class MakeServiceTests(SynchronousTestCase):
    """
    A bad config: one line on stderr and exit status 1.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="graceful-plugin-")).resolve()
        self.addCleanup(shutil.rmtree, self.folder, True)
        previous = reset_for_tests(
            Runtime(reactor=MemoryReactorClock(), environ={}, pid=123, cwd=str(self.folder))
        )
        self.addCleanup(reset_for_tests, previous)
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_bad_config(self) -> None:
        config = self.folder / "graceful.toml"
        config.write_text('[servers.s1]\napp = "m:a"\nports = [8100]\ncolour = 1\n')
        options = Options()
        options.parseOptions(["--config", str(config)])
        error = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(error.code, 1)
        self.assertEqual(
            self.stderr.getvalue(),
            f"graceful: error: {config}: unknown key 'servers.s1.colour'\n",
        )

    def test_bad_config_reported_to_the_old_process(self) -> None:
        """
        In a new generation, the same line goes to the old process: the
        reason its failed restart is reported with.
        """
        old = FakeOldProcess()
        runtime = Runtime(
            reactor=MemoryReactorClock(), environ={}, pid=123, cwd=str(self.folder), old_process=old
        )
        reset_for_tests(runtime)
        config = self.folder / "graceful.toml"
        config.write_text('[servers.s1]\napp = "m:a"\nports = [8100]\ncolour = 1\n')
        options = Options()
        options.parseOptions(["--config", str(config)])
        self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(old.reported, [f"error {config}: unknown key 'servers.s1.colour'"])

    def test_config_required(self) -> None:
        from twisted.python.usage import UsageError

        error = self.assertRaises(UsageError, Options().parseOptions, [])
        self.assertIn("--config", str(error))
