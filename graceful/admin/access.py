# -*- test-case-name: tests.unit.admin.test_resource -*-
"""
Who may use a server's admin pages: the admin token and where it may be
presented, the sign-in cookie, the private listener, and the origin of a
browser's POST (see L{graceful.admin.resource} for the rules).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from twisted.web.server import Request

from .answers import field, query, wants_html
from .page import message_page
from .refusals import refusals_of

if TYPE_CHECKING:
    from .host import AdminHost
    from ..http.server import Server

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


class AdminAccess:
    """
    Who may use the admin pages of one server: the token (Bearer, Basic, a
    POST's field, or the page's C{?token=} kept in a cookie), the private
    listener that needs none, and the origin of a browser's POST.  Refusals
    are counted and logged in aggregate by the process's L{Refusals}.
    """

    def __init__(self, runtime: AdminHost, server: Server, private: bool) -> None:
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

    def check(self, request: Request) -> bytes | None:
        if self.private and not forwarded(request):
            return None
        token = self.token
        presented = self.presented_token(request)
        if token_matches(presented, token):
            if request.method == b"GET" and not request.getHeader(b"authorization"):
                return self.sign_in(request, token)
            return None
        cookie = _cookie(request, COOKIE)
        if cookie is not None and token_matches(cookie, _cookie_value(token)):
            return None
        request.responseHeaders.setRawHeaders(b"www-authenticate", _CHALLENGES)
        return self.refuse(
            request,
            401,
            "wrong_token" if presented else "no_token",
            "the admin token is required: send Authorization: Bearer TOKEN "
            "(in a browser: any user name, the token as the password)",
        )

    def sign_in(self, request: Request, token: str) -> bytes:
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
        kept = {k: v for k, v in query(request).items() if k != "token"}
        location = self.prefix + ("?" + urlencode(kept) if kept else "")
        request.setResponseCode(303)
        request.setHeader(b"location", location.encode("utf-8"))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return message_page("Signed in", "On to the admin page.", location)

    def check_origin(self, request: Request, page: str) -> bytes | None:
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
            return self.refuse(
                request,
                403,
                "cross_origin",
                "admin actions are not accepted from pages of another origin",
            )
        return None

    def refuse(self, request: Request, code: int, reason: str, message: str) -> bytes:
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

    def presented_token(self, request: Request) -> str | None:
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
            return query(request).get("token")
        if request.method != b"POST" or "token" in query(request):
            return None
        return field(request, "token")


@lru_cache(maxsize=16)
def _refusal_body(code: int, message: str, html_prefix: str | None) -> bytes:
    if html_prefix is not None:
        titles = {401: "The admin token is needed", 403: "Refused"}
        return message_page(titles.get(code, "Error"), message, html_prefix)
    return json.dumps({"error": message}, indent=1).encode() + b"\n"


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
