"""
What a supervisor reads to follow the serving process: a pidfile, and
systemd's notification socket (C{sd_notify}).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Mapping

from attrs import frozen


@frozen
class Pidfile:
    """
    A pidfile that graceful keeps itself, since twistd's own would name the
    old process, refuse to start the new one, and be deleted by the old one.
    """

    path: Path

    def write(self, pid: int) -> None:
        # Write then rename, so a reader never sees an empty file.
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(f"{pid}\n")
        os.replace(temporary, self.path)

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def remove_if(self, pid: int) -> None:
        """
        Remove the pidfile if it still names C{pid}: never a newer process's.
        """
        if self.read() == pid:
            try:
                self.path.unlink()
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
