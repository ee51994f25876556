# -*- test-case-name: tests.unit.admin.test_resource -*-
"""
Reading an admin request and writing its answer: what the admin's routes,
access checks and actions share.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.web.server import Request

from .page import message_page

#: The titles of the error pages a browser gets, by status code.
ERROR_TITLES = {
    401: "The admin token is needed",
    403: "Refused",
    404: "No such admin page",
    405: "Wrong method",
    409: "A restart is already running",
}


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


def json_answer(request: Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, indent=1).encode() + b"\n"


def prefers_json(request: Request) -> bool:
    accept = (request.getHeader(b"accept") or b"").lower()
    return b"application/json" in accept


def query(request: Request) -> dict[str, str]:
    uri = request.uri or b""
    query_string = urlsplit(uri.decode("utf-8", "replace")).query
    return {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}


def json_body(request: Request) -> dict[str, Any]:
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


def field(request: Request, name: str) -> str | None:
    """
    A form field (body or query string; Twisted merges them), or a member of
    a JSON body.
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if values:
        return values[0].decode("utf-8", "replace")
    value = json_body(request).get(name)
    return value if isinstance(value, str) else None


def executable_field(request: Request) -> str | None:
    return (field(request, "executable") or "").strip() or None


def as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None




def error_answer(request: Request, code: int, message: str, prefix: str) -> bytes:
    """
    An error: a short page for a browser, with a link back to C{prefix};
    JSON for everyone else.
    """
    if wants_html(request):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return message_page(ERROR_TITLES.get(code, "Error"), message, prefix)
    return json_answer(request, code, {"error": message})
