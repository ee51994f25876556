"""
The CPU a server spends, counted over its whole process tree: servers such
as granian answer from a child process, so the parent's own time alone
reads as zero.

    before = tree_cpu_seconds(pid)
    ... load ...
    used = tree_cpu_seconds(pid) - before

Read the tree both times while the processes live: a child that exits in
between takes its time with it (its parent only gains it in cutime once it
reaps the child, which a server may never do).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["tree_cpu_seconds"]

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """
    The fields of /proc/<pid>/stat after the command name (which may hold
    spaces and parentheses), or C{None} if the process is gone.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    """
    Every process's children, by parent pid.  /proc/<pid>/task/*/children
    needs a kernel option that not every kernel has; the ppid in every
    process's stat always works.
    """
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """
    User and system CPU, in seconds, of C{pid} and all its living
    descendants (each with all its threads).  A process gone since the tree
    was listed counts for nothing.
    """
    tree = _children()
    total = 0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        fields = _stat(current)
        if fields is not None:
            # utime and stime: fields 14 and 15 of stat(5), 11 and 12 here.
            total += int(fields[11]) + int(fields[12])
        todo.extend(tree.get(current, ()))
    return total / TICK
