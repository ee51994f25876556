# -*- test-case-name: tests.unit.test_unix_sockets -*-
"""
The private admin socket: a UNIX socket (mode 0600) that serves the whole
process's admin pages without a token, handed over across restarts like
every listening socket, served by the process that speaks for the others
(the one serving alone, or the master).
"""

from __future__ import annotations

from typing import Any, Callable


from .._logging import NamedLogger
from .core import ProcessCore
from .._errors import ConfigError
from .._sockets import ADMIN_SOCKET_MODE, ListeningSocket, bind_unix_socket


class AdminSocket:
    """
    The admin socket of one process.

    @ivar process: the process.
    @ivar site: builds the site it serves (L{None} from it: nothing to serve).
    """

    _log = NamedLogger("graceful._admin_socket.AdminSocket")

    def __init__(self, process: ProcessCore) -> None:
        self.process = process
        self.site: Callable[[], Any] | None = None
        self._prepared: Any = None

    @property
    def taken(self) -> bool:
        """
        Whether it is prepared or served already.
        """
        return self._prepared is not None or self.process.admin_port is not None

    def prepare(self) -> None:
        """
        Take it from the old process, or bind it; once.
        """
        process = self.process
        path = process.settings.admin_socket
        if not path or self.taken:
            return
        inherited = process.inherited.claim_path(path)
        if inherited is not None:
            self._prepared = inherited
        else:
            try:
                self._prepared = bind_unix_socket(path, ADMIN_SOCKET_MODE)
            except ConfigError as e:
                raise ConfigError(f"graceful.admin_socket: {e}") from None
        process.own_unix_file(path)

    def serve(self) -> None:
        """
        Serve it: at once in the first generation; in a later one, listen
        now (so that it is handed on if we restart) but accept only once the
        older generation has released.  Until then that one answers, and a
        process that may still fail its start (an ASGI startup, a bad
        config) must not report its status there: C{graceful ctl} would
        take its moved generation for a good restart.
        """
        if self._prepared is None:
            return  # none configured: the admin pages' modules stay unimported
        site = self.site() if self.site is not None else None
        if site is None:
            return  # no admin pages wired in (a bare runtime, as in tests)
        prepared, self._prepared = self._prepared, None
        process = self.process
        fd = prepared.fd if isinstance(prepared, ListeningSocket) else prepared.fileno()
        # With the reactor's transports, which come once the config is read.
        from ..http.unix_port import adopt_unix_port

        try:
            port = process.admin_port = adopt_unix_port(
                process.reactor, fd, site, ADMIN_SOCKET_MODE
            )
        finally:
            prepared.close()
        if process.old_process.is_handoff and not process.succeeded.happened:
            port.stopReading()
            process.succeeded.wait().addCallback(lambda _: self._accept(port))
        else:
            self._accept(port)

    def _accept(self, port: Any) -> None:
        process = self.process
        if process.admin_port is not port:
            return  # stopped meanwhile
        port.startReading()
        self._log.info(
            "{pid}: admin server started listening on [unix:{path}]",
            pid=process.pid,
            path=process.settings.admin_socket,
        )
