"""
Unit tests of L{graceful.lifecycle.executables}: what a restart asked for
from outside may run, through a runtime.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from graceful._errors import ExecutableNotAllowed

from ..runtime_case import ARGUMENTS, _RuntimeCase


class ExecutableTests(_RuntimeCase):
    """
    What a restart may execute: the same command line, anything the program
    itself asks for, and from outside only C{allowed_executables}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.folder = self.temp_dir()
        self.allowed = self.folder / "release-2" / "app"
        self.allowed.parent.mkdir()
        self.allowed.write_text("#!/bin/sh\n")
        self.link = self.folder / "current"
        self.link.symlink_to(self.allowed)
        self.runtime.settings.allowed_executables = [str(self.allowed)]

    def test_check_executable(self) -> None:
        """
        What is run is the allowed entry as the operator wrote it, even when
        the request named it another way.
        """
        self.assertEqual(self.runtime.check_executable(str(self.allowed)), str(self.allowed))
        self.assertEqual(self.runtime.check_executable(str(self.link)), str(self.allowed))
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, "/usr/bin/evil"
        )
        self.assertIn("'/usr/bin/evil'", str(error))

    def test_nothing_allowed_by_default(self) -> None:
        self.runtime.settings.allowed_executables = []
        self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(self.allowed))

    def test_untrusted_restart_refused(self) -> None:
        result = self.runtime.restart("/usr/bin/evil", trusted=False)
        self.failureResultOf(result, ExecutableNotAllowed)
        self.assertEqual(self.spawner.calls, [])
        self.assertFalse(self.runtime.restarting)
        self.runtime.restart()
        self.assertEqual(len(self.spawner.calls), 1)

    def test_untrusted_restart_allowed(self) -> None:
        self.runtime.restart(str(self.link), trusted=False)
        self.assertEqual(self.spawner.calls[0]["command"], [str(self.allowed), *ARGUMENTS])

    def test_swapped_link_runs_the_allowed_file(self) -> None:
        """
        A client's link that names the allowed file at the check and is
        swapped to another script right after: the allowed file is what
        runs, never the link.
        """
        other = self.folder / "evil"
        other.write_text("#!/bin/sh\n")
        chosen = self.runtime.check_executable(str(self.link))
        self.link.unlink()
        self.link.symlink_to(other)
        self.assertEqual(chosen, str(self.allowed))
        self.assertNotEqual(os.path.realpath(chosen), os.path.realpath(self.link))
        self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(self.link))

    def test_allowed_file_others_may_change(self) -> None:
        """
        An allowed file, or its folder, that group or others may write is
        refused, saying which and why.
        """
        self.allowed.chmod(0o775)
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, str(self.allowed)
        )
        self.assertIn(f"file {self.allowed} is writable by group or others", str(error))
        self.allowed.chmod(0o755)
        self.allowed.parent.chmod(0o777)
        self.addCleanup(self.allowed.parent.chmod, 0o755)
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, str(self.link)
        )
        self.assertIn(f"folder {self.allowed.parent} is writable", str(error))
        self.allowed.parent.chmod(0o755)
        self.assertEqual(self.runtime.check_executable(str(self.link)), str(self.allowed))

    def test_allowed_link_in_a_writable_folder(self) -> None:
        """
        An allowed entry that is a link is as safe as the folder holding
        it: anyone who may write there may swap it.
        """
        shared = self.folder / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        self.addCleanup(shared.chmod, 0o755)
        link = shared / "current"
        link.symlink_to(self.allowed)
        self.runtime.settings.allowed_executables = [str(link)]
        error = self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(link))
        self.assertIn(f"folder {shared} is writable", str(error))

    def test_same_name_elsewhere_refused(self) -> None:
        """
        A file named like the allowed one in another folder is not it.
        """
        other = self.folder / "release-3" / "app"
        other.parent.mkdir()
        other.write_text("#!/bin/sh\n")
        error = self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(other))
        self.assertEqual(str(error), f"executable {str(other)!r} is not in allowed_executables")

    def test_name_the_allowed_one_begins_is_refused(self) -> None:
        """
        C{app-evil} beside the allowed C{app}: a longer name, not the same
        file.
        """
        evil = self.allowed.parent / "app-evil"
        evil.write_text("#!/bin/sh\n")
        error = self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(evil))
        self.assertEqual(str(error), f"executable {str(evil)!r} is not in allowed_executables")

    def test_allowed_link_to_a_file_others_may_write(self) -> None:
        """
        An allowed entry that is a link, in a folder only we may write, is
        refused when the file it names may be written by others.
        """
        self.runtime.settings.allowed_executables = [str(self.link)]
        self.assertEqual(self.runtime.check_executable(str(self.link)), str(self.link))
        self.allowed.chmod(0o777)
        error = self.assertRaises(ExecutableNotAllowed, self.runtime.check_executable, str(self.link))
        self.assertIn(f"file {self.allowed} is writable by group or others", str(error))

    def test_allowed_file_of_another_user(self) -> None:
        real_stat = os.stat

        def stat(path: Any, *args: Any, **kw: Any) -> Any:
            result = real_stat(path, *args, **kw)
            if str(path) == str(self.allowed):
                return os.stat_result((result.st_mode, 0, 0, 1, 4321, 0, 0, 0, 0, 0))
            return result

        self.patch(os, "stat", stat)
        error = self.assertRaises(
            ExecutableNotAllowed, self.runtime.check_executable, str(self.allowed)
        )
        self.assertIn("belongs to uid 4321", str(error))

    def test_trusted_restart_runs_anything(self) -> None:
        self.runtime.restart("/opt/other/app", trusted=True)
        self.assertEqual(self.spawner.calls[0]["command"], ["/opt/other/app", *ARGUMENTS])

    def test_python_script(self) -> None:
        self.runtime.restart("/srv/app/release-2/app.py", trusted=True)
        self.assertEqual(
            self.spawner.calls[0]["command"],
            [sys.executable, "/srv/app/release-2/app.py", *ARGUMENTS],
        )
