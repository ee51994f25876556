# -*- test-case-name: tests.unit.handoff.test_supervision -*-
"""
What a supervisor reads to follow the serving process: a pidfile, and
systemd's notification socket (C{sd_notify}); and how a worker follows its
master: a signal from the kernel when the master dies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import sys
from pathlib import Path
from typing import Mapping, Protocol

from attrs import field, frozen


class PidfileFiles(Protocol):
    """
    The file operations a pidfile needs (so that a full disk can be tested).
    """

    def write_text(self, path: Path, text: str) -> None: ...

    def read_text(self, path: Path) -> str: ...

    def replace(self, source: Path, target: Path) -> None: ...

    def unlink(self, path: Path) -> None: ...


@frozen
class OSFiles:
    """
    The real file system.
    """

    def write_text(self, path: Path, text: str) -> None:
        path.write_text(text)

    def read_text(self, path: Path) -> str:
        return path.read_text()

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path) -> None:
        path.unlink()


@frozen
class Pidfile:
    """
    A pidfile that graceful keeps itself, since twistd's own would name the
    old process, refuse to start the new one, and be deleted by the old one.

    @ivar files: the file operations.
    """

    path: Path
    files: PidfileFiles = field(factory=OSFiles, eq=False, repr=False)

    def write(self, pid: int) -> None:
        """
        Name C{pid}, or raise L{OSError} and leave the file as it was, with
        no temporary file behind (a full disk creates it, then fails the
        write).
        """
        # Write then rename, so a reader never sees an empty file.
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.files.write_text(temporary, f"{pid}\n")
            self.files.replace(temporary, self.path)
        except OSError:
            try:
                self.files.unlink(temporary)
            except OSError:
                pass
            raise

    def read(self) -> int | None:
        try:
            return int(self.files.read_text(self.path).strip())
        except (OSError, ValueError):
            return None

    def remove_if(self, pid: int) -> None:
        """
        Remove the pidfile if it still names C{pid}: never a newer process's.
        """
        if self.read() == pid:
            try:
                self.files.unlink(self.path)
            except OSError:
                pass

    def __str__(self) -> str:
        return str(self.path)


@frozen
class NoPidfile:
    def write(self, pid: int) -> None:
        pass

    def read(self) -> int | None:
        return None

    def remove_if(self, pid: int) -> None:
        pass

    def __str__(self) -> str:
        return ""


def pidfile_at(path: str | None) -> Pidfile | NoPidfile:
    return Pidfile(Path(path).absolute()) if path else NoPidfile()


@frozen
class SystemdNotifier:
    """
    Sends C{sd_notify} datagrams to the socket named by C{NOTIFY_SOCKET}.
    """

    address: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> SystemdNotifier | NoNotifier:
        address = environ.get("NOTIFY_SOCKET", "")
        if not address:
            return NoNotifier()
        if address.startswith("@"):
            address = "\0" + address[1:]
        return cls(address)

    def notify(self, **fields: object) -> None:
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(message.encode(), self.address)
        except OSError:
            pass  # systemd gone or socket missing: nothing to tell


@frozen
class NoNotifier:
    def notify(self, **fields: object) -> None:
        pass


#: prctl(2) option: the signal the kernel sends us when our parent dies.
PR_SET_PDEATHSIG = 1


@frozen
class ParentDeathSignal:
    """
    Asks Linux to send a signal when the process that started us dies
    (C{prctl(PR_SET_PDEATHSIG)}), even by SIGKILL; the pipes tell the same,
    this also reaches a process that is not yet reading them.

    The kernel means the parent I{thread}: the master must start workers
    from a thread that lives as long as it does (the reactor's).
    """

    def arm(self, signum: int) -> bool:
        """
        @return: whether the kernel took it.
        """
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            return bool(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0)
        except (OSError, AttributeError):
            return False

    def parent_pid(self) -> int:
        return os.getppid()


@frozen
class NoParentDeathSignal:
    """
    Where there is no C{prctl}: only the pipes tell that the parent died.
    """

    def arm(self, signum: int) -> bool:
        return False

    def parent_pid(self) -> int:
        return os.getppid()


def parent_death_signal() -> ParentDeathSignal | NoParentDeathSignal:
    return ParentDeathSignal() if sys.platform.startswith("linux") else NoParentDeathSignal()
