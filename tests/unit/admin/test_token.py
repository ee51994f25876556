"""
Unit tests of the admin token graceful makes when none is configured: where
it is kept, that only a safe file is trusted, that a restart reads it again.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from graceful.admin.token import (
    TOKEN_FILE_VARIABLE,
    TokenFileError,
    default_path,
    generated_token,
    load_or_create,
    private_directory,
    read_token,
)
from graceful.process.runtime import Runtime


class _Folder(SynchronousTestCase):
    def folder_for_test(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="graceful-token-")) / "f"
        self.addCleanup(shutil.rmtree, folder.parent, True)
        return folder


class TokenFileTests(_Folder):
    def setUp(self) -> None:
        self.folder = self.folder_for_test()
        self.folder.mkdir(mode=0o700)
        self.path = self.folder / "app.admin-token"

    def test_made_owner_only_then_read_again(self) -> None:
        made = load_or_create(self.path, create=True, make=lambda: "tok-1")
        self.assertEqual((made.token, made.created), ("tok-1", True))
        info = os.lstat(self.path)
        self.assertTrue(stat.S_ISREG(info.st_mode))
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o600)
        again = load_or_create(self.path, create=True, make=lambda: "tok-2")
        self.assertEqual((again.token, again.created), ("tok-1", False))
        self.assertEqual(sorted(os.listdir(self.folder)), ["app.admin-token"])

    def test_whatever_the_umask(self) -> None:
        old = os.umask(0o777)
        try:
            load_or_create(self.path, create=True, make=lambda: "tok")
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o600)
        self.assertEqual(read_token(self.path), "tok")

    def test_unsafe_file_replaced(self) -> None:
        """
        A file group or others may read, a link, or an empty file is never
        trusted: a new token replaces it (a link is replaced, not followed).
        """
        self.path.write_text("old\n")
        self.path.chmod(0o644)
        self.assertRaises(TokenFileError, read_token, self.path)
        made = load_or_create(self.path, create=True, make=lambda: "new")
        self.assertEqual((made.token, made.created), ("new", True))
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o600)

        target = self.folder / "elsewhere"
        target.write_text("planted\n")
        target.chmod(0o600)
        self.path.unlink()
        self.path.symlink_to(target)
        error = self.assertRaises(TokenFileError, read_token, self.path)
        self.assertIn("symbolic link", str(error))
        with capturedLogs() as events:
            made = load_or_create(self.path, create=True, make=lambda: "newer")
        self.assertEqual(made.token, "newer")
        self.assertFalse(self.path.is_symlink())
        self.assertEqual(target.read_text(), "planted\n")
        self.assertIn("not trusted", " ".join(formatEvent(e) for e in events))

        self.path.write_text("")
        self.assertRaises(TokenFileError, read_token, self.path)

    def test_not_a_regular_file(self) -> None:
        os.mkfifo(self.path, 0o600)
        error = self.assertRaises(TokenFileError, read_token, self.path)
        self.assertIn("not a regular file", str(error))

    def test_reader_does_not_create(self) -> None:
        # A worker only reads what its master made.
        self.assertRaises(TokenFileError, load_or_create, self.path, create=False)
        self.assertFalse(self.path.exists())

    def test_where(self) -> None:
        environ = {"XDG_RUNTIME_DIR": str(self.folder)}
        self.assertEqual(
            default_path(environ, "/run/app/app.pid", "8100"), Path("/run/app/app.admin-token")
        )
        self.assertEqual(
            default_path(environ, "", "8100"), self.folder / "graceful" / "admin-8100.token"
        )
        self.assertEqual(stat.S_IMODE(os.lstat(self.folder / "graceful").st_mode), 0o700)
        passed = {**environ, TOKEN_FILE_VARIABLE: "/x/y.token"}
        self.assertEqual(default_path(passed, "/run/app/app.pid", "8100"), Path("/x/y.token"))

    def test_private_directory_must_be_ours(self) -> None:
        (self.folder / "graceful").mkdir(mode=0o755)
        (self.folder / "graceful").chmod(0o755)
        error = self.assertRaises(
            TokenFileError, private_directory, {"XDG_RUNTIME_DIR": str(self.folder)}
        )
        self.assertIn("only this user", str(error))


class RuntimeTokenTests(_Folder):
    def runtime(self, environ: dict[str, str]) -> Runtime:
        runtime = Runtime(reactor=MemoryReactorClock(), environ=environ, pid=77)
        server = runtime.server("s1")
        server.set_port(8100)
        server.enable_admin("/debug/admin")
        return runtime

    def test_made_logged_and_passed_on(self) -> None:
        """
        The first process makes the token, logs the file and a URL that
        signs in, and passes the path on; the next generation reads the
        same token and logs only where it is.
        """
        folder = self.folder_for_test()
        folder.mkdir(mode=0o700)
        environ = {"XDG_RUNTIME_DIR": str(folder)}
        first = self.runtime(environ)
        with capturedLogs() as events:
            token = generated_token(first)
        path = folder / "graceful" / "admin-8100.token"
        self.assertEqual(environ[TOKEN_FILE_VARIABLE], str(path))
        self.assertEqual(read_token(path), token)
        self.assertGreaterEqual(len(token), 40)
        logged = " ".join(formatEvent(e) for e in events)
        self.assertIn(f"77: admin token made and kept in {path}", logged)
        self.assertIn(f"http://127.0.0.1:8100/debug/admin/?token={token}", logged)
        self.assertIs(generated_token(first), token)

        second = self.runtime(dict(environ))
        with capturedLogs() as events:
            self.assertEqual(generated_token(second), token)
        logged = " ".join(formatEvent(e) for e in events)
        self.assertNotIn(token, logged)
        self.assertIn(f"--token-file {path}", logged)

    def test_no_file_keeps_the_pages_closed(self) -> None:
        folder = self.folder_for_test()
        folder.mkdir(mode=0o700)
        (folder / "graceful").mkdir(mode=0o777)
        (folder / "graceful").chmod(0o777)
        runtime = self.runtime({"XDG_RUNTIME_DIR": str(folder)})
        with capturedLogs() as events:
            token = generated_token(runtime)
        self.assertGreaterEqual(len(token), 40)
        self.assertIn("refuse every TCP request", " ".join(formatEvent(e) for e in events))
        self.assertNotIn(TOKEN_FILE_VARIABLE, runtime.environ)
