# -*- test-case-name: tests.unit.test_unix_sockets -*-
"""
A listening UNIX socket that several processes share.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp, unix

from .._sockets import set_unix_group


class _SharedUNIXPort(unix.Port):
    """
    A UNIX port that leaves the socket working, and its file in place, for
    the other processes that hold it.
    """

    _shouldShutdown = False

    def connectionLost(self, reason: Any) -> None:
        # Past unix.Port's, which unlinks the file.
        tcp.Port.connectionLost(self, reason)


def adopt_unix_port(
    reactor: Any, fd: int, factory: Any, mode: int, group: int | None = None
) -> Any:
    """
    Serve a listening UNIX socket that other processes share; its file gets
    C{mode} and, if given, C{group}, as the config now says.

    Not C{reactor.adoptStreamPort}: Twisted's UNIX port chmods the file to
    0o666 when it starts listening, and when it stops it calls shutdown(2),
    which makes the kernel refuse connections on every copy of the socket,
    and unlinks the file, which the next process owns by then.
    """
    port = _SharedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    # startListening chmods the file to this mode.
    port.mode = mode
    if group is not None:
        set_unix_group(port.port, group)
    port.startListening()
    return port
