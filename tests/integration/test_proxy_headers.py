"""
Proxy headers with a real nginx in front, on TCP and on a UNIX socket: an
ASGI (FastAPI) and a WSGI (Flask) app on the native channel, a twisted.web
app on twisted.web's, and the access log, see the client nginx saw; a header forged by a peer that is not trusted
(127.0.0.2) changes nothing.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from harness.processes import script
from tests.integration.test_nginx import Nginx
from tests.support import ServerProcess, free_ports, get, wait_until

import sys

PROGRAMS = "tests.integration.programs"
#: The client nginx hears from: not a proxy we trust.
CLIENT = "127.0.0.3"


def who(port: int, path: str, source: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return json.loads(body)
    finally:
        conn.close()


class ProxyHeadersTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="graceful-proxy-")
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        self.ports = dict(zip(("asgi", "wsgi", "resource"), free_ports(3)))
        self.sock = folder / "asgi.sock"
        self.access_log = folder / "access.log"
        apps = {"asgi": "run_fastapi:app", "wsgi": "run_flask:app", "resource": "run_resource:root"}
        config = folder / "graceful.toml"
        config.write_text(
            f'[graceful]\naccess_log = "{self.access_log}"\nforwarded_allow_ips = ["127.0.0.1"]\n'
            + "".join(
                f'[servers.{kind}]\napp = "{PROGRAMS}.{apps[kind]}"\nports = [{port}]\n'
                f'host = "127.0.0.1"\n'
                + (f'unix_sockets = ["{self.sock}"]\n' if kind == "asgi" else "")
                for kind, port in self.ports.items()
            )
        )
        # The same command line as a user's: the option turns them on.
        self.proc = ServerProcess(
            [sys.executable, script("graceful"), "run", "--config", str(config), "--proxy-headers"]
        )
        self.proc.start()
        self.addCleanup(self.proc.kill)
        headers = (
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
            "proxy_set_header X-Forwarded-Proto https; "
            "proxy_set_header X-Forwarded-Host example.test;"
        )
        locations = "".join(
            f"        location /{kind}/ {{ proxy_pass http://127.0.0.1:{port}/; {headers} }}\n"
            for kind, port in self.ports.items()
        ) + f"        location /unix/ {{ proxy_pass http://unix:{self.sock}:/; {headers} }}\n"
        self.nginx = Nginx(folder, f"http://127.0.0.1:{self.ports['asgi']}", locations)
        self.addCleanup(self.nginx.stop)
        self.nginx.wait_serving()
        for port in self.ports.values():
            wait_until(lambda: who(port, "/who", "127.0.0.1"), what="graceful to serve")

    def test_through_nginx(self) -> None:
        """
        Through nginx, by TCP and by UNIX socket, every app kind sees the
        client nginx heard from, https and the forwarded host; a client's own
        X-Forwarded-For, which nginx passes on, is not believed.
        """
        expected = {"client": CLIENT, "scheme": "https", "host": "example.test"}
        for kind in ("asgi", "wsgi", "resource", "unix"):
            self.assertEqual(
                (kind, who(self.nginx.port, f"/{kind}/who?via=nginx", CLIENT,
                           {"X-Forwarded-For": "6.6.6.6"})),
                (kind, expected),
            )
        # Three lines: a WSGI answer gets its access-log line only once its
        # connection is gone, or none if it closed right after the answer
        # (nginx's upstream default), which is not a proxy-header matter.
        lines = wait_until(
            lambda: (lambda t: t if t.count("via=nginx") >= 3 else None)(self.access_log.read_text()),
            what="the access log",
        )
        self.assertEqual(
            {line.split()[0] for line in lines.splitlines() if "via=nginx" in line},
            {f'"{CLIENT}"'},
        )

    def test_forged_from_an_untrusted_peer(self) -> None:
        """
        A peer that is not trusted (127.0.0.2) gets nothing from its headers.
        The ASGI and WSGI servers are served by the native channel (which
        sends no Server header; twisted.web's names itself), the resource
        by twisted.web's.
        """
        self.assertEqual(
            {kind: get(port, "/who")[1].get("server", "native").split("/")[0]
             for kind, port in self.ports.items()},
            {"asgi": "native", "wsgi": "native", "resource": "TwistedWeb"},
        )
        forged = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
                  "X-Forwarded-Host": "evil.test", "Forwarded": "for=6.6.6.6;proto=https"}
        for kind, port in self.ports.items():
            seen = who(port, "/who", "127.0.0.2", forged)
            self.assertEqual(
                (kind, seen),
                (kind, {"client": "127.0.0.2", "scheme": "http", "host": f"127.0.0.1:{port}"}),
            )
