"""
A WSGI app for C{graceful run --env-file}: C{/pid} answers the serving pid
and the C{GREETING} the environment file set.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()} {os.environ.get('GREETING', '-')}\n".encode()]
