# -*- test-case-name: tests.unit.admin.test_resource -*-
"""
The admin pages of a server, under its admin prefix.

==========================  ================================================
request                     answer
==========================  ================================================
C{GET  prefix}              the HTML page (JSON status if the client asks
                            for C{application/json} and not for HTML)
C{GET  prefix/status}       JSON: pid, generation, started_at, uptime,
                            servers, last_restart, draining, restarting...
C{POST prefix/restart}      202 JSON; alias C{/reload}; optional field
                            C{executable}; 409 while a restart runs (in a
                            new process: until the old one released it);
                            200 C{coalesced} for a plain restart within
                            L{RESTART_COALESCE_SECONDS} after a good one,
                            the release directory unchanged: a burst gives
                            one restart
C{POST prefix/shutdown}     202 JSON
C{GET  prefix/metrics}      Prometheus text (see L{graceful.admin.metrics})
other methods on those      405 with C{Allow}
==========================  ================================================

Safe by default:

  - Over TCP every request needs the admin token, else 401: the configured
    one (C{admin_token}, C{admin_token_file}, or C{token=}) or, with none
    configured, the one graceful makes and keeps in an owner-only file (see
    L{graceful.admin.token}).  Loopback is not an identity: a reverse proxy
    on the same host makes every client look local.  The token goes in
    C{Authorization: Bearer TOKEN} for API clients; a C{token} field in the
    body of a POST (the page's forms carry one); HTTP Basic with any user
    name and the token as the password, which is how a browser, which cannot
    send a Bearer header when it navigates, opens the page (the 401 offers
    Basic, so it asks); or, on the GET of the page only, a C{token} query
    parameter, so that the URL graceful logs when it makes a token opens the
    page: that GET keeps the sign-in in a cookie (a digest of the token;
    HttpOnly, SameSite=Strict, for the admin prefix only) and redirects to
    the page without the token in its URL.  Tokens are compared in constant
    time.
  - Only a private listener (C{private=True}: a socket only the owner can
    reach, such as an owner-only UNIX socket) serves without a token, and
    not a request on it that carries C{Forwarded}, C{X-Forwarded-For} or
    C{X-Real-IP}: a proxied request is never local.
  - A POST that a browser sends from another origin (its C{Sec-Fetch-Site}
    says so, or, from browsers that do not send that, its C{Origin} differs
    from C{Host}) gets 403, so no other site can restart or
    shut the server down through a browser that holds the credentials.
  - An C{executable} not listed in C{allowed_executables} gets 403, and
    nothing is run; a listed one runs as the operator wrote it.
  - The answers are never cached, never framed, and the HTML page runs no
    script.

JSON or HTML: POSTs and errors answer JSON unless the client prefers HTML
(its C{Accept} lists C{text/html} above C{application/json}, as browsers'
does; curl, scripts and C{graceful ctl} get JSON).  A browser's restart
gets a 303 back to the page (C{prefix?restarted_from=N}), which follows the
restart and reloads itself until the new generation serves; a browser's
shutdown gets a short page that says so (the server is leaving, there is no
page to go back to); a browser's error gets a short page with the same status
code.

Every action is logged with the peer's address.  Refusals (401, and 403
for another origin) are counted by reason in the metrics
(C{graceful_admin_refused_total}) and logged in aggregate, at most one line
per L{REFUSAL_LOG_INTERVAL} with the count and the peers: a flood of wrong
tokens costs what a flood of 404s does, not a log line each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.resource import Resource
from twisted.web.server import Request

from .._logging import NamedLogger
from .access import COOKIE, FORWARDING_HEADERS, AdminAccess, forwarded, token_matches
from .actions import ACTIONS, RESTART_COALESCE_SECONDS, AdminActions, just_restarted
from .answers import (
    as_int,
    error_answer,
    json_answer,
    peer_address,
    prefers_json,
    query,
    wants_html,
)
from .page import admin_page
from .restarts_view import counted_in

if TYPE_CHECKING:
    from .host import AdminHost
    from ..http.server import Server

# Imported from here before the access checks and the actions had modules
# of their own.
__all__ = [
    "ACTIONS",
    "COOKIE",
    "FORWARDING_HEADERS",
    "RESTART_COALESCE_SECONDS",
    "AdminResource",
    "forwarded",
    "just_restarted",
    "peer_address",
    "token_matches",
    "wants_html",
]


class AdminResource(Resource):
    """
    C{GET prefix}, C{GET prefix/status}, C{POST prefix/restart} (and
    C{/reload}), C{POST prefix/shutdown}, C{GET prefix/metrics}.

    @ivar private: whether this resource is served on a private listener,
        one that only the owner of the process can reach (an owner-only UNIX
        socket): there, requests need no token, unless a proxy forwarded
        them.  On any other listener (every TCP port, and a server's own
        UNIX sockets, which a proxy connects to), every request needs the
        token.  Mount a separate instance with C{private=True} on a private
        listener; never on one that a proxy or another user can reach.
    """

    isLeaf = True
    _log = NamedLogger("graceful._admin.AdminResource")

    def __init__(self, runtime: AdminHost, server: Server, private: bool = False) -> None:
        """
        @param private: served where only the owner can connect (the private
            admin socket): no token is asked for, unless the request was
            forwarded.
        """
        super().__init__()
        self._runtime = runtime
        self._server = server
        self._access = AdminAccess(runtime, server, private)
        self._actions = AdminActions(runtime, server)

    @property
    def private(self) -> bool:
        return self._access.private

    @private.setter
    def private(self, value: bool) -> None:
        self._access.private = value

    @property
    def token(self) -> str:
        "The admin token (see L{AdminAccess.token})."
        return self._access.token

    @property
    def prefix(self) -> str:
        return self._server.admin_prefix or "/debug/admin"

    def _error(self, request: Request, code: int, message: str) -> bytes:
        return error_answer(request, code, message, self.prefix)

    # -- dispatch -----------------------------------------------------------

    def render(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"same-origin")
        page = b"/".join(request.postpath or []).strip(b"/").decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace").upper()
        denied = self._access.check(request)
        if denied is not None:
            return denied
        if page in ACTIONS:
            if method != "POST":
                request.setHeader(b"allow", b"POST")
                return self._error(request, 405, f"{page} needs POST")
            refused = self._access.check_origin(request, page)
            if refused is not None:
                return refused
            if page == "shutdown":
                return self._actions.shutdown(request)
            return self._actions.restart(request, page)
        if page not in ("", "status", "metrics"):
            return self._error(request, 404, f"no admin page {page!r}")
        if method not in ("GET", "HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self._error(request, 405, f"{page or 'the admin page'} needs GET")
        if page == "status":
            return json_answer(request, 200, self._runtime.status().to_json())
        if page == "metrics":
            accept = request.getHeader(b"accept")
            # Imported on the first scrape: prometheus-client costs every
            # new process ~70 ms of start-up otherwise.
            from .metrics import exposition

            body, content_type = exposition(
                self._runtime, accept.decode("latin-1") if accept else None
            )
            request.setHeader(b"content-type", content_type.encode("latin-1"))
            return body
        return self._page(request)

    def _page(self, request: Request) -> bytes:
        status = self._runtime.status()
        if not wants_html(request) and prefers_json(request):
            return json_answer(request, 200, status.to_json())
        restarted_from = as_int(query(request).get("restarted_from"))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(
            b"content-security-policy",
            b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            b"frame-ancestors 'none'; base-uri 'none'",
        )
        return admin_page(
            status,
            prefix=self.prefix,
            token=self._access.presented_token(request),
            allowed_executables=self._runtime.settings.allowed_executables,
            restarted_from=restarted_from,
            history=self._runtime.history.log.records,
            ready_timeout=self._runtime.settings.ready_timeout,
            own_server=counted_in(request, self._runtime),
        )
