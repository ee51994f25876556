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

import base64
import hashlib
import hmac
import json
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from .._logging import NamedLogger
from .page import admin_page, message_page
from .._errors import ExecutableNotAllowed, RestartRefused
from .refusals import refusals_of
from .._status import ProcessStatus

if TYPE_CHECKING:
    from .host import AdminHost
    from ..http.server import Server

ACTIONS = ("restart", "reload", "shutdown")
REALM = "graceful admin"
_CHALLENGES = [
    f'Bearer realm="{REALM}"'.encode(),
    f'Basic realm="{REALM}", charset="UTF-8"'.encode(),
]


#: The cookie a browser signed in with C{?token=} keeps (a digest of the
#: token, not the token).
COOKIE = "graceful_admin"

#: Headers a proxy adds; a request with any of them is never local.
FORWARDING_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")

#: A plain restart asked for this soon after a good restart ended, with the
#: release directory unchanged, starts nothing: it belongs to the burst
#: that restart answered (100 POSTs in 1 s gave three restarts in a row,
#: each taking ~0.3 s here, the later ones for nothing).
RESTART_COALESCE_SECONDS = 1.0


def _serving_directory() -> str:
    # Where this process runs: the release directory as resolved when it
    # was started (a later symlink flip does not move it).
    return os.path.realpath(os.getcwd())


def just_restarted(host: AdminHost, status: ProcessStatus) -> float | None:
    """
    Seconds since the good restart that ended less than
    L{RESTART_COALESCE_SECONDS} ago, for the release this process serves;
    L{None} if there was none (or the release directory now names another).
    """
    last = status.last_restart
    if last is None or not last.ok or last.at is None or status.restarting or status.draining:
        return None
    ago = host.now() - last.at
    if not 0 <= ago < RESTART_COALESCE_SECONDS:
        return None
    directory = host.settings.directory
    if directory and os.path.realpath(directory) != _serving_directory():
        return None  # a new release was put in place meanwhile
    return ago


def peer_address(request: Request) -> str:
    """
    The peer as C{host:port} (C{[host]:port} for IPv6), for log lines.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is None:
        return str(peer)
    if port is None:
        return str(host)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _host_name(authority: str) -> str:
    """
    The host of a C{Host} header or URL authority, without port or brackets.
    """
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority[1:]
    if authority.count(":") == 1:
        return authority.split(":", 1)[0]
    return authority


def forwarded(request: Request) -> bool:
    """
    Whether a proxy passed the request on (it says so in a header).
    """
    headers = request.requestHeaders
    return any(headers.hasHeader(name) for name in FORWARDING_HEADERS)


def wants_html(request: Request) -> bool:
    """
    Whether the client prefers HTML to JSON: its C{Accept} lists
    C{text/html} (or XHTML) with a quality at least that of
    C{application/json}.  Browsers do; curl, scripts and fetch() do not.
    """
    accept = request.getHeader(b"accept")
    if not accept:
        return False
    html = as_json = 0.0
    for item in accept.decode("latin-1").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            if param.lower().startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            html = max(html, quality)
        elif media == "application/json":
            as_json = max(as_json, quality)
    return html > 0 and html >= as_json


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode("utf-8"), b"graceful admin cookie", hashlib.sha256).hexdigest()


def _cookie(request: Request, name: str) -> str | None:
    header = request.getHeader(b"cookie")
    if not header:
        return None
    for item in header.decode("latin-1").split(";"):
        key, _, value = item.strip().partition("=")
        if key == name:
            return value
    return None


def token_matches(offered: str | None, token: str) -> bool:
    """
    Constant time, whatever the lengths: both sides are hashed first.
    """
    if offered is None:
        return False
    return hmac.compare_digest(_digest(offered), _digest(token))


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
        self.private = private
        self._refusals = refusals_of(runtime)

    @property
    def token(self) -> str:
        """
        The admin token: the configured one or, with none (an empty one
        counts as none, never as "every token matches"), the one graceful
        made for this deployment.
        """
        if self._server.admin_token:
            return self._server.admin_token
        from .token import generated_token

        return generated_token(self._runtime)

    @property
    def prefix(self) -> str:
        return self._server.admin_prefix or "/debug/admin"

    # -- dispatch -----------------------------------------------------------

    def render(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"same-origin")
        page = b"/".join(request.postpath or []).strip(b"/").decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace").upper()
        denied = self._check_access(request)
        if denied is not None:
            return denied
        if page in ACTIONS:
            if method != "POST":
                request.setHeader(b"allow", b"POST")
                return self._error(request, 405, f"{page} needs POST")
            refused = self._check_origin(request, page)
            if refused is not None:
                return refused
            if page == "shutdown":
                return self._shutdown(request)
            return self._restart(request, page)
        if page not in ("", "status", "metrics"):
            return self._error(request, 404, f"no admin page {page!r}")
        if method not in ("GET", "HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self._error(request, 405, f"{page or 'the admin page'} needs GET")
        if page == "status":
            return _json(request, 200, self._runtime.status().to_json())
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

    # -- pages ----------------------------------------------------------------

    def _page(self, request: Request) -> bytes:
        status = self._runtime.status()
        if not wants_html(request) and _prefers_json(request):
            return _json(request, 200, status.to_json())
        restarted_from = _int(_query(request).get("restarted_from"))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(
            b"content-security-policy",
            b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            b"frame-ancestors 'none'; base-uri 'none'",
        )
        return admin_page(
            status,
            prefix=self.prefix,
            token=self._presented_token(request),
            allowed_executables=self._runtime.settings.allowed_executables,
            restarted_from=restarted_from,
        )

    def _error(self, request: Request, code: int, message: str) -> bytes:
        if wants_html(request):
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            titles = {
                401: "The admin token is needed",
                403: "Refused",
                404: "No such admin page",
                405: "Wrong method",
                409: "A restart is already running",
            }
            return message_page(titles.get(code, "Error"), message, self.prefix)
        return _json(request, code, {"error": message})

    # -- actions ------------------------------------------------------------

    def _restart(self, request: Request, page: str) -> bytes:
        executable = _executable(request)
        peer = peer_address(request)
        if executable:
            self._log.info(
                "{pid}: admin {action} asked for by {peer} (executable {executable})",
                pid=self._runtime.pid,
                action=page,
                peer=peer,
                executable=executable,
            )
        else:
            self._log.info(
                "{pid}: admin {action} asked for by {peer}",
                pid=self._runtime.pid,
                action=page,
                peer=peer,
            )
        # With workers, the group's generation and its master's pid.
        group = self._runtime.status()
        generation = group.generation
        if self._runtime.taking_over:
            return self._error(request, 409, "restart refused: a restart is already running")
        ago = None if executable else just_restarted(self._runtime, group)
        if ago is not None:
            self._log.info(
                "{pid}: admin {action} for {peer} coalesced with the restart that ended "
                "{ago:.2f}s ago: nothing started",
                pid=self._runtime.pid, action=page, peer=peer, ago=ago,
            )
            return self._coalesced(request, group, ago)
        refusals: list[Failure] = []
        # Untrusted: the runtime checks the executable against
        # allowed_executables and refuses a second restart (and logs that).
        # A later failure of the restart is logged by the runtime.
        d = self._runtime.restart(executable, trusted=False)
        d.addErrback(refusals.append)
        if refusals:
            failure = refusals[0]
            if failure.check(ExecutableNotAllowed):
                self._log.warn(
                    "{pid}: admin {action} for {peer} refused: {error}",
                    pid=self._runtime.pid,
                    action=page,
                    peer=peer,
                    error=str(failure.value),
                )
                return self._error(request, 403, str(failure.value))
            if failure.check(RestartRefused):
                why = "shutting down" if self._runtime.draining else "a restart is already running"
                return self._error(request, 409, f"restart refused: {why}")
            self._log.failure(
                "{pid}: admin {action} for {peer} failed", failure,
                pid=self._runtime.pid, action=page, peer=peer,
            )
            return self._error(request, 500, f"restart failed: {failure.getErrorMessage()}")
        if wants_html(request):
            request.setResponseCode(303)
            location = f"{self.prefix}?restarted_from={generation}"
            request.setHeader(b"location", location.encode("utf-8"))
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return message_page("Restarting", "A new process is starting.", location)
        return _json(
            request,
            202,
            {
                "restarting": True,
                "pid": group.pid,
                "generation": generation,
                "next_generation": generation + 1,
                "executable": executable,
            },
        )

    def _coalesced(self, request: Request, group: ProcessStatus, ago: float) -> bytes:
        if wants_html(request):
            request.setResponseCode(303)
            request.setHeader(b"location", self.prefix.encode("utf-8"))
            return message_page("Restarted just now", "Nothing more to do.", self.prefix)
        body = {"restarting": False, "coalesced": True, "pid": group.pid,
                "generation": group.generation, "restarted_seconds_ago": round(ago, 3)}
        return _json(request, 200, body)

    def _shutdown(self, request: Request) -> bytes:
        peer = peer_address(request)
        self._log.info(
            "{pid}: admin {action} asked for by {peer}",
            pid=self._runtime.pid,
            action="shutdown",
            peer=peer,
        )
        already = self._runtime.draining
        group = self._runtime.status()
        in_flight = max(0, sum(s.in_flight for s in self._runtime.servers.values()) - 1)
        # After this answer is written: shutting down stops accepting first.
        self._runtime.reactor.callLater(0, self._shut_down)
        if wants_html(request):
            request.setResponseCode(202)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return message_page(
                "Shutting down",
                f"Process {self._runtime.pid} stops accepting, finishes the "
                f"{in_flight} other request(s) in flight, and exits. "
                "This page will not come back until the server is started again.",
            )
        return _json(
            request,
            202,
            {
                "shutting_down": True,
                "already": already,
                "pid": group.pid,
                "generation": group.generation,
                "in_flight": in_flight,
            },
        )

    def _shut_down(self) -> None:
        self._runtime.shutdown().addErrback(
            lambda f: self._log.failure("{pid}: shutdown failed", f, pid=self._runtime.pid)
        )

    # -- access ---------------------------------------------------------------

    def _check_access(self, request: Request) -> bytes | None:
        if self.private and not forwarded(request):
            return None
        token = self.token
        presented = self._presented_token(request)
        if token_matches(presented, token):
            if request.method == b"GET" and not request.getHeader(b"authorization"):
                return self._sign_in(request, token)
            return None
        cookie = _cookie(request, COOKIE)
        if cookie is not None and token_matches(cookie, _cookie_value(token)):
            return None
        request.responseHeaders.setRawHeaders(b"www-authenticate", _CHALLENGES)
        return self._refuse(
            request,
            401,
            "wrong_token" if presented else "no_token",
            "the admin token is required: send Authorization: Bearer TOKEN "
            "(in a browser: any user name, the token as the password)",
        )

    def _sign_in(self, request: Request, token: str) -> bytes:
        """
        The page's GET with the right C{?token=}: keep the sign-in in a
        cookie (HttpOnly, SameSite=Strict, only for the admin pages) and
        send the browser back to the page without the token in its URL, so
        it leaves the address bar and the history.
        """
        secure = "; Secure" if request.isSecure() else ""
        request.responseHeaders.addRawHeader(
            b"set-cookie",
            f"{COOKIE}={_cookie_value(token)}; Path={self.prefix}; HttpOnly; "
            f"SameSite=Strict{secure}".encode(),
        )
        query = {k: v for k, v in _query(request).items() if k != "token"}
        location = self.prefix + ("?" + urlencode(query) if query else "")
        request.setResponseCode(303)
        request.setHeader(b"location", location.encode("utf-8"))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return message_page("Signed in", "On to the admin page.", location)

    def _check_origin(self, request: Request, page: str) -> bytes | None:
        """
        Refuse a POST a browser sends from a page of another origin.  Where
        the browser says where the request comes from (C{Sec-Fetch-Site}),
        that decides; else its C{Origin} must match C{Host}.  Clients that
        send neither (curl, scripts) are not browsers, and pass.
        """
        origin = request.getHeader(b"origin")
        fetch_site = request.getHeader(b"sec-fetch-site")
        if fetch_site is not None:
            cross = fetch_site.strip().lower() not in (b"same-origin", b"none")
        elif origin is not None:
            cross = not _same_origin(
                origin.decode("latin-1"),
                (request.getHeader(b"host") or b"").decode("latin-1"),
                request.isSecure(),
            )
        else:
            cross = False
        if cross:
            return self._refuse(
                request,
                403,
                "cross_origin",
                "admin actions are not accepted from pages of another origin",
            )
        return None

    def _refuse(self, request: Request, code: int, reason: str, message: str) -> bytes:
        # As cheap as a 404: count, remember the peer, answer a body made
        # once; the log line comes later, for all refusals at once.
        peer = request.getClientAddress()
        self._refusals.refused(reason, str(getattr(peer, "host", None) or peer))
        html = wants_html(request)
        request.setResponseCode(code)
        if html:
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
        else:
            request.setHeader(b"content-type", b"application/json")
        return _refusal_body(code, message, self.prefix if html else None)

    def _presented_token(self, request: Request) -> str | None:
        """
        The token the request presents: Bearer, Basic's password, a C{token}
        field of a POST's body, or a C{token} in the query string of the
        page's GET (the URL graceful logs); never one in the query string of
        any other request.
        """
        header = request.getHeader(b"authorization")
        if header:
            scheme, _, credentials = header.strip().partition(b" ")
            scheme = scheme.lower()
            if scheme == b"bearer":
                return credentials.strip().decode("utf-8", "replace")
            if scheme == b"basic":
                try:
                    decoded = base64.b64decode(credentials.strip(), validate=True)
                except ValueError:
                    return None
                return decoded.decode("utf-8", "replace").partition(":")[2]
            return None
        if request.method == b"GET":
            page = b"/".join(request.postpath or []).strip(b"/")
            if page or b"token=" not in (request.uri or b""):
                return None
            return _query(request).get("token")
        if request.method != b"POST" or "token" in _query(request):
            return None
        return _field(request, "token")


@lru_cache(maxsize=16)
def _refusal_body(code: int, message: str, html_prefix: str | None) -> bytes:
    if html_prefix is not None:
        titles = {401: "The admin token is needed", 403: "Refused"}
        return message_page(titles.get(code, "Error"), message, html_prefix)
    return json.dumps({"error": message}, indent=1).encode() + b"\n"


# -- requests ----------------------------------------------------------------


def _json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, indent=1).encode() + b"\n"


def _prefers_json(request: Request) -> bool:
    accept = (request.getHeader(b"accept") or b"").lower()
    return b"application/json" in accept


def _query(request: Request) -> dict[str, str]:
    uri = request.uri or b""
    query = urlsplit(uri.decode("utf-8", "replace")).query
    return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _json_body(request: Request) -> dict[str, Any]:
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    content = getattr(request, "content", None)
    if content_type != b"application/json" or content is None:
        return {}
    try:
        content.seek(0)
        value = json.loads(content.read(1 << 16) or b"{}")
    except (ValueError, OSError):
        return {}
    finally:
        try:
            content.seek(0)
        except (OSError, ValueError):
            pass
    return value if isinstance(value, dict) else {}


def _field(request: Request, name: str) -> str | None:
    """
    A form field (body or query string; Twisted merges them), or a member of
    a JSON body.
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if values:
        return values[0].decode("utf-8", "replace")
    value = _json_body(request).get(name)
    return value if isinstance(value, str) else None


def _executable(request: Request) -> str | None:
    return (_field(request, "executable") or "").strip() or None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _same_origin(origin: str, host: str, secure: bool) -> bool:
    if not origin or origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.scheme != ("https" if secure else "http"):
        return False
    default = 443 if secure else 80

    def normal(authority: str) -> tuple[str, int]:
        name = _host_name(authority)
        tail = authority.rsplit("]", 1)[-1] if authority.startswith("[") else authority
        port = tail.rsplit(":", 1)[1] if ":" in tail else ""
        return name, int(port) if port.isdigit() else default

    return normal(parts.netloc) == normal(host)
