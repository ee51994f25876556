"""
One-request HTTP and TLS probes of a loopback port: what answers, and which
pid.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from functools import lru_cache

from .processes import CERT, Process


@lru_cache(maxsize=None)
def tls_context() -> ssl.SSLContext:
    """
    A client context that trusts the development certificate (certs/).
    """
    return ssl.create_default_context(cafile=str(CERT))


def connection(port: int, tls: bool = False, timeout: float = 10.0) -> http.client.HTTPConnection:
    if tls:
        return http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=tls_context()
        )
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def get(
    port: int,
    path: str = "/",
    tls: bool = False,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """
    One request on a fresh connection; returns status, headers, body.
    """
    conn = connection(port, tls, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answers(port: int, path: str = "/", tls: bool = False) -> bool:
    try:
        status, _, _ = get(port, path, tls=tls, timeout=2)
        return status < 500
    except OSError:
        return False


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def pid_of(port: int, path: str = "/pid", tls: bool = False) -> int:
    """
    The pid C{GET /pid} answers with.

    @raise AssertionError: not a 200.
    """
    status, _, body = get(port, path, tls=tls)
    assert status == 200, (status, body)
    return int(body.split()[0])


def probe_pid(port: int, tls: bool = False, timeout: float = 1.0, path: str = "/pid") -> int | None:
    """
    The pid a fresh connection's C{GET /pid} answers with, or None.
    """
    try:
        status, _, body = get(port, path, tls=tls, headers={"Connection": "close"}, timeout=timeout)
        return int(body.split()[0]) if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError, IndexError):
        return None


def wait_answering(port: int, tls: bool, timeout: float, proc: Process | None = None) -> int:
    """
    Wait until the port answers C{/pid}; the pid.  Fails early when C{proc}
    has exited.

    @raise RuntimeError: it did not answer, with the end of C{proc}'s log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = probe_pid(port, tls)
        if pid:
            return pid
        if proc is not None and not proc.running():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-2000:]}")
        time.sleep(0.05)
    tail = proc.log()[-2000:] if proc is not None else ""
    raise RuntimeError(f"port {port} did not answer within {timeout:g}s\n{tail}")
