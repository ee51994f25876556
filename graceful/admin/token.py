# -*- test-case-name: tests.unit.admin.test_token -*-
"""
The admin token graceful makes when a server's admin pages have none
configured.

Loopback is not an identity (a reverse proxy on the same host makes every
client look local), so admin pages served over TCP always need a token.
Without C{admin_token} or C{admin_token_file}, the first process makes one
(C{secrets.token_urlsafe(32)}) and keeps it in an owner-only file, which
every later generation, and a cold restart of the same deployment, reads
again:

  - beside the pidfile when there is one (C{app.pid} -> C{app.admin-token});
  - else in a private per-user folder: C{$XDG_RUNTIME_DIR/graceful/}, or
    C{graceful-UID} (mode 0700) in the temporary folder, named after the
    first admin port (C{admin-8100.token}).

The path goes to the next generations (and to workers) in
C{GRACEFUL_ADMIN_TOKEN_FILE}.  A file that is not a regular file of ours,
or that group or others may read, is never trusted: a new token replaces
it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from attrs import frozen
from twisted.logger import Logger

if TYPE_CHECKING:
    from .host import AdminHost

TOKEN_FILE_VARIABLE = "GRACEFUL_ADMIN_TOKEN_FILE"

_log = Logger(namespace="graceful.admin")


class TokenFileError(Exception):
    """
    The token file (or its folder) cannot be used; the message says why.
    """


@frozen
class GeneratedToken:
    """
    @ivar token: the token.
    @ivar path: the file that keeps it, or L{None} when none could be used
        (the token then lives in this process only).
    @ivar created: this process made it (and wrote the file).
    """

    token: str
    path: Path | None
    created: bool


def private_directory(environ: Mapping[str, str]) -> Path:
    """
    The per-user folder for token files, made owner-only if missing.

    @raise TokenFileError: it exists but is not a folder of ours that only
        we may enter (another user may have made it first in /tmp).
    """
    runtime_dir = environ.get("XDG_RUNTIME_DIR", "")
    if runtime_dir and os.path.isabs(runtime_dir) and os.path.isdir(runtime_dir):
        folder = Path(runtime_dir) / "graceful"
    else:
        folder = Path(tempfile.gettempdir()) / f"graceful-{os.geteuid()}"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise TokenFileError(f"cannot make {folder}: {e.strerror or e}")
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise TokenFileError(f"{folder} is not a folder only this user may use")
    return folder


def default_path(environ: Mapping[str, str], pidfile: str, key: str) -> Path:
    """
    Where the token of this deployment is kept: the path the older
    generation passed, beside the pidfile, or in the private folder.
    """
    passed = environ.get(TOKEN_FILE_VARIABLE)
    if passed:
        return Path(passed)
    if pidfile:
        pid_path = Path(pidfile)
        return pid_path.with_name(pid_path.stem + ".admin-token")
    return private_directory(environ) / f"admin-{key}.token"


def read_token(path: Path) -> str | None:
    """
    The token in C{path}, or L{None} if there is no such file.

    @raise TokenFileError: the file is a link, not a regular file, not ours,
        readable by group or others, or empty.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise TokenFileError(f"{path} is a symbolic link")
        raise TokenFileError(f"cannot read {path}: {e.strerror or e}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"{path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise TokenFileError(f"{path} belongs to another user")
        if info.st_mode & 0o077:
            raise TokenFileError(f"{path} may be read by group or others")
        token = os.read(fd, 4096).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if not token:
        raise TokenFileError(f"{path} is empty")
    return token


def write_token(path: Path, token: str, replace: bool) -> bool:
    """
    Write C{token} to C{path}, owner-only, all at once: a reader sees the
    whole file or none.  Without C{replace}, a file another process made
    meanwhile wins.

    @return: whether our token is the one in the file.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (token + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.rename(temporary, path)
            return True
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links: rename, which may replace a
            # file made in the same instant; both are ours and owner-only.
            os.rename(temporary, path)
        return True
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def load_or_create(
    path: Path, create: bool, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)
) -> GeneratedToken:
    """
    Read the token kept at C{path}; when there is none, or it cannot be
    trusted, and C{create}, make a new one and keep it there.

    @raise TokenFileError: no token could be read or written.
    """
    unsafe: TokenFileError | None = None
    try:
        token = read_token(path)
    except TokenFileError as e:
        unsafe, token = e, None
    if token is not None:
        return GeneratedToken(token, path, False)
    if not create:
        raise unsafe or TokenFileError(f"{path} does not exist")
    if unsafe is not None:
        _log.warn("admin token file not trusted ({why}): making a new one", why=str(unsafe))
    token = make()
    try:
        if not write_token(path, token, replace=unsafe is not None):
            kept = read_token(path)
            if kept is not None:
                return GeneratedToken(kept, path, False)
            write_token(path, token, replace=True)
    except OSError as e:
        raise TokenFileError(f"cannot write {path}: {e.strerror or e}")
    return GeneratedToken(token, path, True)


# -- per runtime ----------------------------------------------------------------

def needs_generated_token(runtime: AdminHost) -> bool:
    return any(s.admin_prefix and not s.admin_token for s in runtime.servers.values())


def _first_admin(runtime: AdminHost) -> tuple[str, int, bool, str] | None:
    """
    (host, port, tls, prefix) of the first admin pages that need the
    generated token, for the file's name and the URL.
    """
    for server in runtime.servers.values():
        if not server.admin_prefix or server.admin_token:
            continue
        bound = [listener.number for listener in server.listeners]
        for index, spec in enumerate(server.listen_specs()):
            port = spec.port or (bound[index] if index < len(bound) else 0)
            if port:
                return server.host, port, spec.tls, server.admin_prefix
    return None


def set_generated_token(runtime: AdminHost, token: GeneratedToken) -> None:
    """
    Use C{token} as C{runtime}'s generated token (tests inject theirs).
    """
    runtime.admin.keep(GeneratedToken, token)


def generated_token(runtime: AdminHost) -> str:
    """
    The token for C{runtime}'s admin pages that configure none: read or
    made once, then kept.  A worker only reads what its master made.  When
    no file can be used, a token that nobody knows keeps the admin pages
    closed over TCP (and that is logged).
    """
    known = runtime.admin.get(GeneratedToken)
    if known is not None:
        return known.token
    first = _first_admin(runtime)
    key = str(first[1]) if first else f"pid{runtime.pid}"
    try:
        path = default_path(runtime.environ, str(runtime.pidfile), key)
        made = load_or_create(path, create=runtime.role != "worker")
    except TokenFileError as e:
        _log.error(
            "{pid}: no admin token file ({why}): the admin pages refuse every TCP "
            "request; set admin_token_file",
            pid=runtime.pid,
            why=str(e),
        )
        made = GeneratedToken(secrets.token_urlsafe(32), None, True)
    else:
        runtime.environ[TOKEN_FILE_VARIABLE] = str(made.path)
        _announce(runtime, made, first)
    runtime.admin.keep(GeneratedToken, made)
    return made.token


def _announce(
    runtime: AdminHost, made: GeneratedToken, first: tuple[str, int, bool, str] | None
) -> None:
    # The token itself is logged only by the process that made it: logs
    # are often kept longer, and read by more people, than an owner-only
    # file, and a restart is run by a script, not read by a person.
    if runtime.role == "worker":
        return
    if made.created and first is not None:
        host, port, tls, prefix = first
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        url = f"{'https' if tls else 'http'}://{host}:{port}{prefix}/?token={made.token}"
        _log.info(
            "{pid}: admin token made and kept in {path}; open {url}",
            pid=runtime.pid,
            path=str(made.path),
            url=url,
        )
    else:
        _log.info(
            "{pid}: admin token kept in {path} (graceful ctl --token-file {path})",
            pid=runtime.pid,
            path=str(made.path),
        )
