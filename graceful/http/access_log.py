# -*- test-case-name: tests.unit.http.test_access_log -*-
"""
The access log's formats: twisted.web's combined line as graceful has always
written it (C{"twisted"}: the client address in quotes), Apache's exact
combined format (C{"combined"}), or one JSON object a line (C{"json"}).

Each is made from twisted.web's line, which every kind of request (a
twisted.web one, an HTTP/2 stream, a WebSocket with its duration after the
last field) already has; so the formats cannot disagree on a field.
"""

from __future__ import annotations

import json
import re
from typing import Callable

#: The formats C{access_log_format} takes.
ACCESS_LOG_FORMATS = ("twisted", "combined", "json")

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_LINE = re.compile(
    rf"^{_QUOTED} - - \[([^\]]*)\] {_QUOTED} (\d+) (\S+) {_QUOTED} {_QUOTED}(?: ([\d.]+))?$"
)


def formatter(name: str) -> Callable[[str], str]:
    """
    The function that turns twisted.web's line into format C{name}.
    """
    if name == "combined":
        return combined
    if name == "json":
        return json_line
    return lambda line: line


def combined(line: str) -> str:
    """
    Apache's combined format: the client address unquoted.
    """
    match = _LINE.match(line)
    if match is None:
        return line
    return match[1] + line[len(match[1]) + 2:]


def json_line(line: str) -> str:
    """
    One JSON object: remote, time, method, path, protocol, status, bytes,
    referer, user_agent (and duration, for a WebSocket).
    """
    match = _LINE.match(line)
    if match is None:
        return json.dumps({"line": line})
    remote, time, request, status, size, referer, agent, duration = (
        None if group is None else group.replace('\\"', '"') for group in match.groups()
    )
    assert request is not None and status is not None and size is not None
    method, _, rest = request.partition(" ")
    path, _, protocol = rest.rpartition(" ")
    record: dict[str, object] = {
        "remote": None if remote == "-" else remote,
        "time": time,
        "method": method,
        "path": path,
        "protocol": protocol,
        "status": int(status),
        "bytes": 0 if size == "-" else int(size),
        "referer": None if referer == "-" else referer,
        "user_agent": None if agent == "-" else agent,
    }
    if duration is not None:
        record["duration"] = float(duration)
    return json.dumps(record)
