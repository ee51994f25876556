# -*- test-case-name: tests.unit.test_ends -*-
"""
The two ends of an accepted connection, as an app is shown them (ASGI's
C{client} and C{server}, WSGI's C{REMOTE_*} and C{SERVER_*}).
"""

from __future__ import annotations

from typing import Any

#: Addresses a port listens on that say nothing of a connection's own end.
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def host_port(address: Any) -> tuple[Any, Any] | None:
    """
    C{address}'s host and port, or C{None} for one without (a UNIX
    socket's).
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return None
    return (host, port)


def local_end(transport: Any) -> tuple[Any, Any] | None:
    """
    The local end of C{transport}'s connection: host and port, or C{None}
    on a UNIX socket.  A connection accepted on a port bound to one address
    has that port's address: read once per port (kept on it), not by a
    getsockname(2) and an address object per connection.  On a WSGI app's
    thread that call also handed Python's lock to the reactor's thread and
    back: 16% of a raw WSGI hello's samples with C{Connection: close}.
    """
    if transport is None:
        return None
    port = getattr(transport, "server", None)
    known = getattr(port, "graceful_local_end", None)
    if known is not None:
        return known
    local = host_port(transport.getHost())
    if port is not None and local is not None:
        try:
            bound = port.getHost().host
        except Exception:
            # A port closed since it accepted the connection (a drain hands
            # its ports over): nothing to remember it by.  Raised here, it
            # would have failed the request.
            return local
        if bound not in WILDCARDS:
            port.graceful_local_end = local
    return local
