"""
A twisted.web resource for the proxy-header tests: C{/who} says the client
address, scheme and host the request reports.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource


class Who(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        host = request.requestHeaders.getRawHeaders(b"host", [b""])[0].decode()
        return json.dumps({
            "client": getattr(request.getClientAddress(), "host", None),
            "scheme": "https" if request.isSecure() else "http",
            "host": host,
        }).encode()


root = Resource()
root.putChild(b"who", Who())
