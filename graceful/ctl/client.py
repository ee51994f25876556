# -*- test-case-name: tests.unit.ctl.test_roll -*-
"""
How C{graceful ctl} talks to a node: its admin API over HTTP(S), or over a
private admin socket (C{unix:PATH}), and what the node reports.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Sequence

from attrs import frozen

from .._status import LastRestart, ProcessStatus, ServerStatus, StatusError

#: Seconds a node may take to answer one request.
DEFAULT_TIMEOUT = 5.0

#: The admin prefix on a private admin socket.
UNIX_ADMIN_PREFIX = "/debug/admin"

#: The keys that tell a graceful status answer from anything else.
_STATUS_KEYS = ("pid", "generation", "servers")


class NodeError(Exception):
    """
    A node could not be asked, or answered in a way that ends the command:
    unreachable, a wrong token, not a graceful admin API, a failed restart.
    """

    def __init__(self, node: str, reason: str, transient: bool = False) -> None:
        super().__init__(f"{node}: {reason}")
        self.node = node
        self.reason = reason
        #: Worth asking again: no answer, or a server error (5xx), which a
        #: node in the middle of a restart may give for a moment.
        self.transient = transient


@frozen
class NodeStatus:
    """
    A node's C{GET status} answer, checked.

    @ivar node: the node's admin URL (or C{unix:PATH}).
    @ivar status: what it answered.
    """

    node: str
    status: ProcessStatus

    @classmethod
    def from_json(cls, node: str, data: Any) -> NodeStatus:
        """
        @raise NodeError: C{data} is not what a graceful admin API answers.
        """
        if not isinstance(data, dict) or any(key not in data for key in _STATUS_KEYS):
            raise NodeError(node, "not a graceful admin API: its status has no pid, generation and servers")
        try:
            return cls(node, ProcessStatus.from_json(data))
        except StatusError as e:
            raise NodeError(node, f"not a graceful admin API: unexpected status ({e})") from None

    @property
    def pid(self) -> int:
        return self.status.pid

    @property
    def generation(self) -> int:
        return self.status.generation

    @property
    def started_at(self) -> float | None:
        return self.status.started_at

    @property
    def draining(self) -> bool:
        return self.status.draining

    @property
    def restarting(self) -> bool:
        return self.status.restarting

    @property
    def servers(self) -> tuple[ServerStatus, ...]:
        return self.status.servers

    @property
    def last_restart(self) -> LastRestart | None:
        return self.status.last_restart

    @property
    def failed_restarts(self) -> int:
        return self.status.failed_restarts

    @property
    def in_flight(self) -> int:
        return self.status.in_flight

    @property
    def state(self) -> str:
        return self.status.state


class AdminClient(Protocol):
    """
    The three requests C{graceful ctl} makes of a node.
    """

    def status(self, node: str) -> NodeStatus: ...

    def restart(self, node: str) -> Any:
        "The answer: what the node says of the restart it started (or did not need)."

    def shutdown(self, node: str) -> None: ...

    def history(self, node: str) -> Any: ...

    def workers(self, node: str, count: int) -> Any: ...


class HttpAdminClient:
    """
    An L{AdminClient} over HTTP(S), with a bearer token and a time-out for
    every request.  Proxy variables are ignored: admin APIs are reached
    directly.
    """

    def __init__(
        self,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.token = token
        self.timeout = timeout
        handlers: list[Any] = [urllib.request.ProxyHandler({}), _NoRedirects()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def status(self, node: str) -> NodeStatus:
        return NodeStatus.from_json(node, self._request(node, "GET", "status"))

    def restart(self, node: str) -> Any:
        return self._request(node, "POST", "restart")

    def shutdown(self, node: str) -> None:
        self._request(node, "POST", "shutdown")

    def history(self, node: str) -> Any:
        return self._request(node, "GET", "history")

    def workers(self, node: str, count: int) -> Any:
        return self._request(node, "POST", "workers", {"count": str(count)})

    def _request(
        self, node: str, method: str, page: str, form: dict[str, str] | None = None
    ) -> Any:
        url = f"{node}/{page}"
        headers = {"Accept": "application/json", "User-Agent": "graceful-ctl"}
        if self.token and not node.startswith("unix:"):
            headers["Authorization"] = f"Bearer {self.token}"
        data = b"" if method == "POST" else None
        if form:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if node.startswith("unix:"):
            body, content_type = self._unix_request(node, method, page, headers, data)
            return _json_of(node, method, page, body, content_type)
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
                content_type = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            reason = _explain_http_error(method, page, e.code, _error_of(e))
            raise NodeError(node, reason, transient=e.code >= 500)
        except urllib.error.URLError as e:
            raise NodeError(node, f"unreachable: {_explain_os_error(e.reason)}", transient=True)
        except (TimeoutError, OSError) as e:
            raise NodeError(node, f"unreachable: {_explain_os_error(e)}", transient=True)
        except Exception as e:  # http.client's protocol errors: not an HTTP server
            raise NodeError(node, f"not a graceful admin API: {type(e).__name__}: {e}")
        return _json_of(node, method, page, body, content_type)

    def _unix_request(
        self, node: str, method: str, page: str, headers: dict[str, str], data: bytes | None
    ) -> tuple[bytes, str]:
        """
        HTTP over a private admin socket (C{unix:PATH:/prefix}).
        """
        path, prefix = split_unix_node(node)
        connection = _UnixConnection(path, self.timeout)
        try:
            connection.request(method, f"{prefix}/{page}", body=data, headers=headers)
            response = connection.getresponse()
            body = response.read()
            content_type = response.getheader("Content-Type", "") or ""
            code = response.status
        except (TimeoutError, OSError) as e:
            raise NodeError(node, f"unreachable: {_explain_os_error(e)}", transient=True)
        except Exception as e:  # http.client's protocol errors: not an HTTP server
            raise NodeError(node, f"not a graceful admin API: {type(e).__name__}: {e}")
        finally:
            connection.close()
        if code >= 300:
            try:
                message = str(json.loads(body).get("error") or "")
            except (ValueError, AttributeError):
                message = ""
            reason = _explain_http_error(method, page, code, message)
            raise NodeError(node, reason, transient=code >= 500)
        return body, content_type


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def split_unix_node(node: str) -> tuple[str, str]:
    """
    C{unix:/run/graceful/admin.sock:/debug/admin} -> the socket's path and the
    admin prefix (C{/debug/admin} when the node gives none).
    """
    rest = node[len("unix:") :]
    head, sep, tail = rest.rpartition(":")
    if sep and head and tail.startswith("/"):
        return head, tail.rstrip("/")
    return rest, UNIX_ADMIN_PREFIX


def _json_of(node: str, method: str, page: str, body: bytes, content_type: str) -> Any:
    if "json" not in content_type:
        shown = content_type.split(";")[0] or "no content type"
        raise NodeError(
            node,
            f"not a graceful admin API: {method} {page} answered {shown}, not JSON "
            "(is the URL the server's admin prefix?)",
        )
    try:
        return json.loads(body)
    except ValueError:
        raise NodeError(node, f"not a graceful admin API: {method} {page} answered invalid JSON")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """
    A redirect is an answer in its own right: never resend a token elsewhere.
    """

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _error_of(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read()
    except Exception:
        return ""
    finally:
        error.close()
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    return str(message) if message else ""


def _explain_http_error(method: str, page: str, code: int, message: str) -> str:
    said = f": {message}" if message else ""
    if page == "workers" and message and code in (400, 404, 409):
        return f"refused ({code}): {message}"
    if code == 401:
        return f"wrong or missing token (401 Unauthorized{said})"
    if code == 403:
        return f"refused (403 Forbidden{said})"
    if code == 409:
        return f"a restart is already running there (409 Conflict{said})"
    if code == 404:
        return (
            f"not a graceful admin API: {method} {page} answered 404 Not Found "
            "(is the URL the server's admin prefix?)"
        )
    if 300 <= code < 400:
        return f"not a graceful admin API: {method} {page} answered a redirect ({code})"
    return f"{method} {page} answered {code}{said}"


def _explain_os_error(reason: object) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer in time (timed out)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def ask_all(client: AdminClient, nodes: Sequence[str]) -> list[NodeStatus | NodeError]:
    """
    Every node's status, asked in parallel, in the nodes' order.
    """

    def one(node: str) -> NodeStatus | NodeError:
        try:
            return client.status(node)
        except NodeError as e:
            return e

    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return list(pool.map(one, nodes))
