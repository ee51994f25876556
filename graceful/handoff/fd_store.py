# -*- test-case-name: tests.unit.handoff.test_fd_store,tests.unit.lifecycle.test_fd_store -*-
"""
systemd's file descriptor store: listening sockets handed to systemd
(C{FDSTORE=1} with the socket attached, C{FDNAME=} its C{LISTEN_FDNAMES}
name) outlive the whole process tree, a C{systemctl restart} or a crash,
with the connections queued on them; systemd passes them to the next start
with C{LISTEN_FDS}, as graceful passes them itself.

systemd keeps one copy of a socket however often it is stored (it drops a
descriptor that is the same open file as one it holds), but removes by
name only (C{FDSTOREREMOVE=1}); so a process stores the sockets it bound
itself, and removes the name of an inherited socket it drops.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Iterable, Mapping

from attrs import field, frozen

from .._sockets import ListeningSocket

#: Set by systemd (254 and later) to FileDescriptorStoreMax= when that is
#: above 0; older ones do not tell.
FDSTORE_VARIABLE = "FDSTORE"


def send_datagram(address: str, message: bytes, fds: list[int]) -> None:
    """
    One C{sd_notify} datagram, with C{fds} attached (C{SCM_RIGHTS}).

    @raise OSError: systemd is gone, or refuses.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        if fds:
            socket.send_fds(s, [message], fds)
        else:
            s.send(message)


def fd_store_allowed(environ: Mapping[str, str], wanted: bool) -> bool:
    """
    Whether to store: C{fd_store} is on, systemd listens (C{NOTIFY_SOCKET}),
    and does not say the store is off (C{FDSTORE}, where it says anything).
    """
    if not wanted or not environ.get("NOTIFY_SOCKET"):
        return False
    allowed = environ.get(FDSTORE_VARIABLE)
    if allowed is None:
        return True
    try:
        return int(allowed) > 0
    except ValueError:
        return False


@frozen
class FdStore:
    """
    The fd store of the service systemd runs us in.

    @ivar address: C{NOTIFY_SOCKET}'s address.
    @ivar send: sends one datagram with descriptors.
    """

    address: str
    send: Callable[[str, bytes, list[int]], None] = field(default=send_datagram, eq=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], wanted: bool) -> FdStore | None:
        """
        The store, if there is one to use; see L{fd_store_allowed}.
        """
        if not fd_store_allowed(environ, wanted):
            return None
        address = environ["NOTIFY_SOCKET"]
        if address.startswith("@"):
            address = "\0" + address[1:]
        return cls(address)

    def store(self, sockets: Iterable[ListeningSocket]) -> list[str]:
        """
        Store each socket under its name (one datagram each: a datagram's
        descriptors share one C{FDNAME}).

        @return: the names stored; a failure is skipped (systemd gone, or
            its store full), never raised: the sockets serve on regardless.
        """
        stored = []
        for sock in sockets:
            try:
                self.send(self.address, f"FDSTORE=1\nFDNAME={sock.name}".encode(), [sock.fd])
            except OSError:
                continue
            stored.append(sock.name)
        return stored

    def keep(self, received: Mapping[int, str], passed: Iterable[ListeningSocket]) -> list[str]:
        """
        Bring the store up to date with the sockets this process would pass
        on (C{passed}), given those it was started with (C{received}: by
        inode, with their names): store the TCP ones it bound itself, and
        remove the names of those it dropped.  A UNIX socket is never
        stored: its file goes at the final shutdown, and a socket whose
        file is gone would be adopted and never reached.

        @return: the names stored.
        """
        passed = list(passed)
        ours = {socket_identity(s.fd): s for s in passed}
        names = {s.name for s in passed}
        self.remove(
            name for inode, name in received.items() if inode not in ours and name not in names
        )
        return self.store(
            s
            for inode, s in ours.items()
            if inode is not None and inode not in received and s.unix_path() is None
        )

    def remove(self, names: Iterable[str]) -> None:
        """
        Drop every stored socket called one of C{names}.
        """
        for name in names:
            try:
                self.send(self.address, f"FDSTOREREMOVE=1\nFDNAME={name}".encode(), [])
            except OSError:
                pass


def socket_identity(fd: int) -> int | None:
    """
    The inode of the socket at C{fd}: the same in every process that holds
    it, whichever descriptor number it has there.
    """
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None
