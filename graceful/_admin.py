"""
The admin pages of a server, under its admin prefix.

Safe by default: with a token, every request needs C{Authorization: Bearer
TOKEN} (the HTML forms send it as a field); with none, only loopback peers are
served.  An executable not listed in C{allowed_executables} is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from ._errors import ExecutableNotAllowed, RestartRefused

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._server import Server


def _json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


def peer_host(request: Request) -> str:
    peer = request.getClientAddress()
    return str(getattr(peer, "host", peer))


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


class AdminResource(Resource):
    """
    C{GET prefix}, C{GET prefix/status}, C{POST prefix/restart} (and
    C{/reload}), C{POST prefix/shutdown}, C{GET prefix/metrics}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, runtime: Runtime, server: Server) -> None:
        super().__init__()
        self._runtime = runtime
        self._server = server

    @property
    def token(self) -> str | None:
        return self._server.admin_token

    def render(self, request: Request) -> bytes:
        denied = self._check_access(request)
        if denied is not None:
            return denied
        page = b"/".join(request.postpath).strip(b"/").decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        if page in ("restart", "reload", "shutdown"):
            if method != "POST":
                request.setHeader(b"allow", b"POST")
                return _json(request, 405, {"error": f"{page} needs POST"})
            self._log.info(
                "{pid}: admin {action} asked for by {peer}",
                pid=self._runtime.pid,
                action=page,
                peer=peer_host(request),
            )
            if page == "shutdown":
                self._runtime.reactor.callLater(0, self._runtime.shutdown)
                return _json(request, 202, {"shutting_down": True, "pid": self._runtime.pid})
            return self._restart(request)
        if method not in ("GET", "HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _json(request, 405, {"error": f"{page or 'the admin page'} needs GET"})
        if page == "status":
            return _json(request, 200, self._runtime.status())
        if page == "":
            return _json(request, 200, self._runtime.status())
        return _json(request, 404, {"error": f"no admin page {page!r}"})

    def _restart(self, request: Request) -> bytes:
        executable = _field(request, b"executable")
        try:
            if executable:
                self._runtime.check_executable(executable)
        except ExecutableNotAllowed as e:
            self._log.warn(
                "{pid}: admin restart refused for {peer}: {error}",
                pid=self._runtime.pid,
                peer=peer_host(request),
                error=str(e),
            )
            return _json(request, 403, {"error": str(e)})
        if self._runtime.restarting or self._runtime.draining:
            self._runtime.restart().addErrback(lambda f: None)  # logs the refusal
            return _json(request, 409, {"error": "a restart is already running"})
        d = self._runtime.restart(executable or None, trusted=True)
        d.addErrback(lambda f: f.trap(RestartRefused, Exception) and None)
        return _json(
            request,
            202,
            {"restarting": True, "pid": self._runtime.pid, "generation": self._runtime.generation},
        )

    def _check_access(self, request: Request) -> bytes | None:
        token = self.token
        if token is None:
            if not is_loopback(peer_host(request)):
                self._log.warn(
                    "{pid}: admin request from {peer} refused: not loopback and no token set",
                    pid=self._runtime.pid,
                    peer=peer_host(request),
                )
                return _json(request, 403, {"error": "admin pages answer loopback only"})
            return None
        offered = _bearer(request) or _field(request, b"token") or ""
        if not hmac.compare_digest(offered.encode(), token.encode()):
            self._log.warn(
                "{pid}: admin request from {peer} refused: bad or missing token",
                pid=self._runtime.pid,
                peer=peer_host(request),
            )
            request.setHeader(b"www-authenticate", b'Bearer realm="graceful"')
            return _json(request, 401, {"error": "a valid bearer token is required"})
        return None


def _bearer(request: Request) -> str | None:
    header = request.getHeader(b"authorization")
    if header and header[:7].lower() == b"bearer ":
        return header[7:].strip().decode("utf-8", "replace")
    return None


def _field(request: Request, name: bytes) -> str | None:
    values = (request.args or {}).get(name)
    if values:
        return values[0].decode("utf-8", "replace")
    return None
