# -*- test-case-name: tests.unit.lifecycle.test_executables -*-
"""
What a restart asked for from outside (the admin API) may run.
"""

from __future__ import annotations

import os
import stat
from typing import Sequence

from .._errors import ExecutableNotAllowed


def check_executable(allowed: Sequence[str], executable: str) -> str:
    """
    The entry of C{allowed} that C{executable} names (the same string, or
    the same file): what a restart runs, never the client's string, so that
    a link the client swaps after the check changes nothing.

    @raise ExecutableNotAllowed: C{allowed} does not list it, or the listed
        file, or its folder, may be changed by someone else (it is writable
        by group or others, or belongs to another user than root or us).
    """
    chosen = executable if executable in allowed else None
    if chosen is None:
        wanted = os.path.realpath(executable)
        chosen = next((a for a in allowed if os.path.realpath(a) == wanted), None)
    if chosen is None:
        raise ExecutableNotAllowed(f"executable {executable!r} is not in allowed_executables")
    problem = not_ours(chosen)
    if problem:
        raise ExecutableNotAllowed(f"allowed executable {chosen!r} is refused: {problem}")
    return chosen


def not_ours(path: str) -> str | None:
    """
    Why C{path} (an allowed executable) could have been changed by someone
    other than root or us, or L{None}: the file, the link naming it and the
    folders holding either must belong to root or us and be writable by
    neither group nor others.
    """
    owners = (0, os.geteuid())
    checked: list[tuple[str, str]] = []
    real = os.path.realpath(path)
    for candidate in dict.fromkeys([path, real]):
        checked.append((candidate, "file"))
        checked.append((os.path.dirname(candidate) or ".", "folder"))
    for target, what in checked:
        try:
            info = os.stat(target) if what == "folder" or target == real else os.lstat(target)
        except OSError as e:
            return f"cannot check {target}: {e.strerror or e}"
        if stat.S_ISLNK(info.st_mode):
            continue  # a link's own mode means nothing; its folder is checked
        if info.st_uid not in owners:
            return f"{what} {target} belongs to uid {info.st_uid}"
        if info.st_mode & 0o022:
            return f"{what} {target} is writable by group or others"
    return None
