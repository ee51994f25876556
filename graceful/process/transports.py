# -*- test-case-name: tests.unit.process.test_transports -*-
"""
Twisted's TCP transport, imported without TLS where nothing in the process
can use it.

Importing C{twisted.internet.tcp} imports pyOpenSSL and cryptography, for
C{startTLS} and the reactor's C{listenSSL}/C{connectSSL}, whether or not
anything will speak TLS: 40 ms of a new process's start and 12 MiB of its
memory (5.5 MiB of it its own heap), measured on the benchmark machine.  A
process whose ports speak no TLS and that runs no Twisted code of its users
(only ASGI and WSGI apps, or none, as a master) imports the transport
without them.  C{listenSSL} and C{connectSSL} still work there: they import
Twisted's TLS on first use.  Only C{startTLS} on a TCP connection is
missing, which nothing but Twisted code (an SMTP client's C{STARTTLS})
calls.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any, Iterable

#: Where Twisted's transport and reactor import TLS as a side effect.
TLS_MODULES = ("twisted.internet._newtls", "twisted.protocols.tls", "twisted.internet.ssl")


class OnFirstUse(ModuleType):
    """
    Stands for a module that is imported when an attribute is first asked
    for, as C{posixbase} asks for C{tls.TLSMemoryBIOFactory} in
    C{listenSSL}.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


def twisted_tls_needed(tls_ports: bool, services: bool, app_kinds: Iterable[str | None]) -> bool:
    """
    Whether Twisted's transport should come with TLS: a port speaks it,
    user services (Twisted code) run here, or an app is not known to be ASGI
    or WSGI (a twisted.web resource, or one not imported yet).
    """
    return tls_ports or services or any(kind not in ("asgi", "wsgi") for kind in app_kinds)


def import_transport(tls: bool) -> bool:
    """
    Import Twisted's TCP transport and the reactor's base, leaving TLS out
    unless C{tls}.  Nothing happens if they are imported already, as they
    are once a reactor is.  Whether TLS was left out.
    """
    modules = sys.modules
    imported = ("twisted.internet.tcp", "twisted.internet.posixbase", *TLS_MODULES)
    if tls or any(name in modules for name in imported):
        return False
    # An import finds None in sys.modules and raises ImportError, which
    # Twisted takes as "pyOpenSSL is not installed".
    for name in TLS_MODULES:
        modules[name] = None  # type: ignore[assignment]
    try:
        from twisted.internet import posixbase, tcp  # noqa: F401
    finally:
        for name in TLS_MODULES:
            del modules[name]
    from twisted.internet.interfaces import IReactorSSL
    from zope.interface import classImplements

    posixbase.tls = OnFirstUse("twisted.protocols.tls")
    posixbase.ssl = OnFirstUse("twisted.internet.ssl")
    classImplements(posixbase.PosixReactorBase, IReactorSSL)
    return True
