"""
Unit tests of the admin pages, the health page and the metrics: every answer
of docs/reference.rst's "Admin pages", on a runtime whose restarts are faked (nothing is
spawned) and requests built in memory, so peers from anywhere can be tried.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from attrs import define, evolve, field
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from graceful.admin.resource import (
    COOKIE,
    AdminResource,
    forwarded,
    token_matches,
    wants_html,
)
from graceful.admin.refusals import Refusals, refusals_of
from graceful.admin.token import GeneratedToken, set_generated_token
from graceful.admin.page import admin_page, duration, restart_notice
from graceful.http.site import DrainingSite
from graceful.admin import actions as _admin
from graceful.handoff.pipes import RestartFailed
from graceful.handoff.messages import Accepted
from graceful.admin.metrics import registry_for
from graceful.admin.pages import add_operational_pages
from graceful.process.runtime import Runtime
from graceful.http.server import Listener, Server, access_log_writer, redact_tokens
from graceful._sockets import ListenSpec
from graceful._status import LastRestart, ProcessStatus
from graceful.testing import FakeOldProcess, FakePort, FakeSpawner, MemoryEnvironment

from ..http.test_routing import HTTPConnection

TOKEN = "s3cret-token"
#: The token graceful made, for servers that configure none.
GENERATED = "generated-token-Zx9"
PREFIX = "/debug/admin"


def _temporary_folder(case: Any) -> Path:
    """
    A folder removed after the test (trial's mktemp leaves its folders in
    the directory pytest runs in).
    """
    folder = Path(tempfile.mkdtemp(prefix="graceful-test-"))
    case.addCleanup(shutil.rmtree, folder, True)
    return folder


class FakeRuntime(Runtime):
    """
    A runtime on a memory environment: L{spawned} tells what its restarts
    would have run; the test says how the new process fares.
    """

    @property
    def spawner(self) -> FakeSpawner:
        environment = self.core.environment
        assert isinstance(environment, MemoryEnvironment)
        return environment.spawner

    @property
    def spawned(self) -> list[str | None]:
        plain = self.core.command_for(None)
        return [
            None if call["command"] == plain else call["command"][0]
            for call in self.spawner.calls
        ]

    def new_process_ready(self, pid: int = 5555) -> None:
        process = self.spawner.last
        process.pid = pid
        process.report_ready()

    def new_process_failed(self, reason: str) -> None:
        self.spawner.last.report_failure(reason)


def build(
    token: str | None = None,
    allowed: tuple[str, ...] = (),
    generation: int = 1,
    name: str = "s1",
) -> tuple[FakeRuntime, Server]:
    runtime = FakeRuntime(
        MemoryReactorClock(),
        {},
        4242,
        generation=generation,
        environment=MemoryEnvironment(),
        forward_stderr=lambda data: None,
    )
    runtime.settings.allowed_executables = list(allowed)
    server = runtime.server(name)
    server.enable_admin(PREFIX, token=token)
    server.enable_health("/healthz")
    server.site = DrainingSite(server.router, server_name=name, reactor=runtime.reactor)
    server.listeners.append(Listener(ListenSpec(name, False, 8100, "", 0), FakePort(41, 8100)))
    server.listeners.append(Listener(ListenSpec(name, True, 8443, "", 0), FakePort(42, 8443)))
    set_generated_token(runtime, GeneratedToken(GENERATED, None, True))
    add_operational_pages(runtime, server)
    return runtime, server


@define
class Answer:
    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode())
        return values[-1].decode() if values else None

    def json(self) -> Any:
        assert self.header("content-type") == "application/json", self.headers
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def ask(
    server: Server,
    method: str,
    path: str,
    *,
    peer: str = "127.0.0.1",
    host: str | None = "127.0.0.1:8100",
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    content: tuple[str, bytes] | None = None,
    resource: Any = None,
    secure: bool = False,
    auth: bool = True,
) -> Answer:
    """
    Send a request through the server's router (or to C{resource}), from
    C{peer}.  Unless C{auth} is false or the request presents credentials
    of its own, it presents the server's token (the configured or the
    generated one).
    """
    headers = dict(headers or {})
    own = {"Authorization", "Cookie"} & set(headers) or "token" in (form or {})
    if auth and not own:
        headers.update(bearer(server.admin_token or GENERATED))
    uri = path.encode()
    path_only, _, query = uri.partition(b"?")
    request = DummyRequest(path_only.split(b"/")[1:])
    request.method = method.encode()
    request.uri = uri
    request.path = path_only
    request.isSecure = lambda: secure
    address = IPv6Address if ":" in peer else IPv4Address
    request.client = address("TCP", peer, 50123)
    if host is not None:
        request.requestHeaders.setRawHeaders(b"host", [host.encode()])
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name.encode(), [value.encode()])
    args: dict[bytes, list[bytes]] = parse_qs(query, keep_blank_values=True)
    for name, value in (form or {}).items():
        args[name.encode()] = [value.encode()]
    request.args = args
    if content is not None:
        request.requestHeaders.setRawHeaders(b"content-type", [content[0].encode()])
        request.content = io.BytesIO(content[1])
    if resource is None:
        resource = getChildForRequest(server.router, request)
    else:
        request.postpath = path_only[len(PREFIX) + 1 :].split(b"/") if path_only != PREFIX.encode() else []
    body = resource.render(request)
    assert isinstance(body, bytes), body
    return Answer(request.responseCode or 200, request.responseHeaders, body)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


class StatusTests(SynchronousTestCase):
    def test_status_fields(self) -> None:
        """
        C{/status} is JSON with the fields section 5 promises.
        """
        runtime, server = build()
        status = ask(server, "GET", PREFIX + "/status").json()
        self.assertEqual(status["pid"], 4242)
        self.assertEqual(status["generation"], 1)
        self.assertIsInstance(status["started_at"], float)
        self.assertIs(status["draining"], False)
        self.assertIsNone(status["last_restart"])
        [s1] = status["servers"]
        self.assertEqual(s1["name"], "s1")
        self.assertEqual(
            s1["ports"], [{"port": 8100, "tls": False}, {"port": 8443, "tls": True}]
        )
        self.assertEqual(s1["in_flight"], 0)

    def test_not_cached(self) -> None:
        _, server = build()
        answer = ask(server, "GET", PREFIX + "/status")
        self.assertEqual(answer.header("cache-control"), "no-store")
        self.assertEqual(answer.header("x-frame-options"), "DENY")

    def test_unknown_page(self) -> None:
        _, server = build()
        self.assertEqual(ask(server, "GET", PREFIX + "/nope").code, 404)

    def test_post_on_status(self) -> None:
        _, server = build()
        answer = ask(server, "POST", PREFIX + "/status")
        self.assertEqual(answer.code, 405)
        self.assertEqual(answer.header("allow"), "GET, HEAD")

    def test_root_as_json(self) -> None:
        """
        A client asking for JSON only gets the status from the page's URL.
        """
        _, server = build()
        answer = ask(server, "GET", PREFIX, headers={"Accept": "application/json"})
        self.assertEqual(answer.json()["pid"], 4242)


class AccessWithoutTokenTests(SynchronousTestCase):
    """
    With no token configured, the token graceful made is needed, from
    loopback too: a proxy on the same host makes every client look local.
    """

    def test_loopback_needs_the_generated_token(self) -> None:
        runtime, server = build()
        for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.5"):
            for method, page in (("GET", ""), ("GET", "/status"), ("GET", "/metrics"),
                                 ("POST", "/restart"), ("POST", "/shutdown")):
                answer = ask(server, method, PREFIX + page, peer=peer, auth=False)
                self.assertEqual(answer.code, 401, (peer, page))
                self.assertNotIn(GENERATED.encode(), answer.body)
        runtime.reactor.advance(1)
        self.assertEqual(runtime.spawned, [])
        self.assertFalse(runtime.draining)
        for peer in ("127.0.0.1", "10.0.0.5"):
            answer = ask(server, "GET", PREFIX + "/status", peer=peer, headers=bearer(GENERATED))
            self.assertEqual(answer.code, 200, peer)

    def test_proxied_loopback_refused(self) -> None:
        """
        What nginx's default C{proxy_pass http://127.0.0.1:8100;} sends: a
        loopback peer, a loopback Host, perhaps forwarding headers.  Refused.
        """
        runtime, server = build()
        for headers in ({}, {"X-Forwarded-For": "203.0.113.9"}, {"X-Real-IP": "203.0.113.9"},
                        {"Forwarded": "for=203.0.113.9"}):
            answer = ask(server, "POST", PREFIX + "/shutdown", host="127.0.0.1:8100",
                         headers=headers, auth=False)
            self.assertEqual(answer.code, 401, headers)
        runtime.reactor.advance(1)
        self.assertFalse(runtime.draining)

    def test_empty_token_is_no_token(self) -> None:
        """
        An empty token never means "any token will do": the generated one
        is needed.
        """
        _, server = build(token="")
        self.assertEqual(ask(server, "GET", PREFIX + "/status", auth=False).code, 401)
        self.assertEqual(ask(server, "GET", PREFIX + "/status", headers=bearer("")).code, 401)
        self.assertEqual(ask(server, "GET", PREFIX + "/status", headers=bearer(GENERATED)).code, 200)

    def test_configured_token_wins(self) -> None:
        _, server = build(token=TOKEN)
        self.assertEqual(ask(server, "GET", PREFIX + "/status", headers=bearer(GENERATED)).code, 401)
        self.assertEqual(ask(server, "GET", PREFIX + "/status", headers=bearer(TOKEN)).code, 200)


class PrivateListenerTests(SynchronousTestCase):
    """
    A resource mounted with C{private=True} (on a listener only the owner
    can reach) needs no token, unless a proxy forwarded the request.
    """

    def test_private_needs_no_token(self) -> None:
        runtime, server = build(token=TOKEN)
        private = AdminResource(runtime, server, private=True)
        answer = ask(server, "GET", PREFIX + "/status", auth=False, resource=private)
        self.assertEqual(answer.code, 200)
        answer = ask(server, "POST", PREFIX + "/restart", auth=False, resource=private)
        self.assertEqual(answer.code, 202)
        self.assertEqual(runtime.spawned, [None])

    def test_forwarded_is_never_local(self) -> None:
        runtime, server = build()
        private = AdminResource(runtime, server, private=True)
        for header in ("Forwarded", "X-Forwarded-For", "X-Real-IP"):
            answer = ask(server, "POST", PREFIX + "/shutdown", headers={header: "for=1.2.3.4"},
                         resource=private, auth=False)
            self.assertEqual(answer.code, 401, header)
            answer = ask(server, "GET", PREFIX + "/status",
                         headers={header: "1.2.3.4", **bearer(GENERATED)}, resource=private)
            self.assertEqual(answer.code, 200, header)
        runtime.reactor.advance(1)
        self.assertFalse(runtime.draining)

    def test_public_by_default(self) -> None:
        runtime, server = build()
        public = AdminResource(runtime, server)
        self.assertFalse(public.private)
        self.assertEqual(ask(server, "GET", PREFIX + "/status", auth=False, resource=public).code, 401)


class SignInTests(SynchronousTestCase):
    """
    The URL graceful logs when it makes a token (C{prefix/?token=...}) signs
    a browser in: a cookie, and back to the page without the token.
    """

    def test_sign_in_with_the_logged_url(self) -> None:
        _, server = build()
        answer = ask(server, "GET", PREFIX + "/?token=" + GENERATED, headers=BROWSER, auth=False)
        self.assertEqual(answer.code, 303)
        self.assertEqual(answer.header("location"), PREFIX)
        cookie = answer.header("set-cookie") or ""
        for attribute in ("HttpOnly", "SameSite=Strict", f"Path={PREFIX}"):
            self.assertIn(attribute, cookie)
        self.assertNotIn(GENERATED, cookie)
        pair = cookie.split(";")[0]
        self.assertTrue(pair.startswith(COOKIE + "="))
        page = ask(server, "GET", PREFIX, headers={**BROWSER, "Cookie": "a=b; " + pair})
        self.assertEqual(page.code, 200)
        self.assertIn('<dd id="pid">4242</dd>', page.text)
        self.assertNotIn('name="token"', page.text)  # the cookie does
        self.assertEqual(
            ask(server, "GET", PREFIX + "/status", headers={"Cookie": pair}).code, 200
        )
        self.assertEqual(
            ask(server, "GET", PREFIX, headers={"Cookie": COOKIE + "=0123"}).code, 401
        )

    def test_query_kept_but_token(self) -> None:
        _, server = build()
        answer = ask(server, "GET", PREFIX + "?restarted_from=3&token=" + GENERATED, auth=False)
        self.assertEqual((answer.code, answer.header("location")), (303, PREFIX + "?restarted_from=3"))

    def test_wrong_token_in_url(self) -> None:
        _, server = build()
        answer = ask(server, "GET", PREFIX + "/?token=nope", headers=BROWSER, auth=False)
        self.assertEqual(answer.code, 401)
        self.assertIsNone(answer.header("set-cookie"))

    def test_secure_cookie_over_https(self) -> None:
        _, server = build()
        url = PREFIX + "/?token=" + GENERATED
        self.assertNotIn("Secure", ask(server, "GET", url, auth=False).header("set-cookie") or "")
        answer = ask(server, "GET", url, auth=False, secure=True)
        self.assertIn("; Secure", answer.header("set-cookie") or "")


class AccessLogTests(SynchronousTestCase):
    def test_sign_in_url_redacted(self) -> None:
        """
        The access log (a file, or the process log) shows the sign-in URL,
        and a Referer carrying it, with C{token=REDACTED}; the rest of the
        query stays.
        """
        path = str(_temporary_folder(self) / "access.log")
        runtime, server = build()
        with capturedLogs() as events:
            for target in (path, "-"):
                server.site = DrainingSite(
                    server.router, server_name="s1", reactor=runtime.reactor,
                    access_log=access_log_writer(target),
                )
                connection = HTTPConnection(server.site)
                connection.request(
                    f"{PREFIX}/?restarted_from=3&token={GENERATED}",
                    headers={"Referer": f"http://127.0.0.1:8100{PREFIX}/?token={GENERATED}&a=1"},
                )
                self.assertEqual(connection.only_response().status, 303)
        with open(path) as f:
            [line] = f.read().splitlines()
        [logged] = [formatEvent(e) for e in events if e.get("log_namespace") == "graceful.access"]
        for text in (line, logged):
            self.assertNotIn(GENERATED, text)
            self.assertIn(f'"GET {PREFIX}/?restarted_from=3&token=REDACTED HTTP/1.1" 303', text)
            self.assertIn(f'"http://127.0.0.1:8100{PREFIX}/?token=REDACTED&a=1"', text)

    def test_only_token_values(self) -> None:
        for line, redacted in (
            ('"GET /?token=a&b=c HTTP/1.1"', '"GET /?token=REDACTED&b=c HTTP/1.1"'),
            ('"GET /x?a=1&token= HTTP/1.1"', '"GET /x?a=1&token=REDACTED HTTP/1.1"'),
            ('"GET /x?csrf_token=a HTTP/1.1"', '"GET /x?csrf_token=a HTTP/1.1"'),
            ('"GET /token=a HTTP/1.1"', '"GET /token=a HTTP/1.1"'),
        ):
            self.assertEqual(redact_tokens(line), redacted)


class AccessWithTokenTests(SynchronousTestCase):
    def test_missing_or_wrong(self) -> None:
        runtime, server = build(token=TOKEN)
        for headers in (
            {},
            bearer("wrong"),
            bearer(TOKEN + "x"),
            {"Authorization": "Token " + TOKEN},
            {"Authorization": "Basic !!!"},
        ):
            for method, page in (
                ("GET", ""),
                ("GET", "/status"),
                ("GET", "/metrics"),
                ("POST", "/restart"),
                ("POST", "/shutdown"),
                ("GET", "/restart"),
            ):
                answer = ask(server, method, PREFIX + page, headers=headers, auth=False)
                self.assertEqual(answer.code, 401, (headers, page))
                self.assertNotIn(TOKEN.encode(), answer.body)
        challenges = answer.headers.getRawHeaders(b"www-authenticate")
        self.assertEqual([c.split()[0] for c in challenges], [b"Bearer", b"Basic"])
        runtime.reactor.advance(1)
        self.assertEqual(runtime.spawned, [])
        self.assertFalse(runtime.draining)

    def test_bearer(self) -> None:
        """
        With a token, any peer that presents it is served.
        """
        _, server = build(token=TOKEN)
        for peer in ("127.0.0.1", "10.0.0.5"):
            answer = ask(server, "GET", PREFIX + "/status", peer=peer, headers=bearer())
            self.assertEqual(answer.code, 200, peer)

    def test_basic_for_browsers(self) -> None:
        _, server = build(token=TOKEN)
        credentials = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        answer = ask(server, "GET", PREFIX, headers={"Authorization": "Basic " + credentials})
        self.assertEqual(answer.code, 200)

    def test_form_field(self) -> None:
        """
        A POST may carry the token as a form field (the page's forms do).
        """
        runtime, server = build(token=TOKEN)
        answer = ask(server, "POST", PREFIX + "/restart", form={"token": TOKEN})
        self.assertEqual(answer.code, 202)
        self.assertEqual(runtime.spawned, [None])

    def test_not_in_query_string(self) -> None:
        """
        A token in the URL is refused but on the page's GET: URLs end up in
        logs and histories.
        """
        runtime, server = build(token=TOKEN)
        self.assertEqual(ask(server, "GET", PREFIX + "/status?token=" + TOKEN, auth=False).code, 401)
        self.assertEqual(ask(server, "POST", PREFIX + "/restart?token=" + TOKEN, auth=False).code, 401)
        self.assertEqual(runtime.spawned, [])

    def test_constant_time_comparison(self) -> None:
        self.assertTrue(token_matches(TOKEN, TOKEN))
        self.assertFalse(token_matches(TOKEN[:-1], TOKEN))
        self.assertFalse(token_matches("", TOKEN))
        self.assertFalse(token_matches(None, TOKEN))


class RefusalTests(SynchronousTestCase):
    """
    Refusals are counted in the metrics and logged in aggregate: at most one
    line per interval, with the count and the peers.
    """

    def lines(self, events: list[dict[str, Any]]) -> list[str]:
        return [formatEvent(e) for e in events if "refused" in formatEvent(e)]

    def test_first_at_once_then_once_per_interval(self) -> None:
        clock = Clock()
        refusals = Refusals(clock, 4242, interval=10.0, max_peers=3)
        with capturedLogs() as events:
            refusals.refused("wrong_token", "10.0.0.5")
            for i in range(500):
                refusals.refused("wrong_token", f"10.0.1.{i % 7}")
            refusals.refused("no_token", "10.0.0.5")
            clock.advance(9.9)
            self.assertEqual(len(self.lines(events)), 1)
            clock.advance(0.1)
            self.assertEqual(len(self.lines(events)), 2)
            clock.advance(10)  # nothing came: no line, and the window closes
            self.assertEqual(len(self.lines(events)), 2)
            refusals.refused("cross_origin", "10.0.0.9")  # a new first: at once
            self.assertEqual(len(self.lines(events)), 3)
        first, second, third = self.lines(events)
        self.assertEqual(first, "4242: admin refused 1 request (wrong token: 1) from 10.0.0.5")
        self.assertEqual(
            second,
            "4242: admin refused 501 requests (no token: 1, wrong token: 500) from "
            "10.0.1.0, 10.0.1.1, 10.0.1.2 and others",
        )
        self.assertIn("(cross origin: 1) from 10.0.0.9", third)
        self.assertEqual(
            refusals.counts, {"wrong_token": 501, "no_token": 1, "cross_origin": 1}
        )
        self.assertEqual(events[0]["log_level"].name, "warn")

    def test_no_token_alone_is_info(self) -> None:
        # How a browser's HTTP auth begins; nothing to warn about.
        refusals = Refusals(Clock(), 1)
        with capturedLogs() as events:
            refusals.refused("no_token", "::1")
        self.assertEqual([e["log_level"].name for e in events], ["info"])

    def test_flood_through_the_pages(self) -> None:
        """
        1,000 wrong tokens from two peers: 401 each, one log line at once and
        one at the end of the interval, and the counts in the metrics.
        """
        runtime, server = build(token=TOKEN)
        with capturedLogs() as events:
            for i in range(1000):
                peer = "10.0.0.5" if i % 2 else "2001:db8::1"
                answer = ask(server, "GET", PREFIX + "/status", peer=peer, headers=bearer("x"))
                self.assertEqual(answer.code, 401)
            ask(server, "POST", PREFIX + "/restart", headers={**bearer(), "Origin": "http://evil"})
            self.assertEqual(len(self.lines(events)), 1)
            runtime.reactor.advance(10)
        lines = self.lines(events)
        self.assertEqual(len(lines), 2)
        self.assertIn("refused 1000 requests (cross origin: 1, wrong token: 999) from "
                      "10.0.0.5, 2001:db8::1", lines[1])
        self.assertIs(refusals_of(runtime), refusals_of(runtime))
        families = MetricsTests().scrape(server)
        self.assertEqual(
            MetricsTests().value(families, "graceful_admin_refused_total", reason="wrong_token"),
            1000,
        )
        self.assertEqual(
            MetricsTests().value(families, "graceful_admin_refused_total", reason="cross_origin"),
            1,
        )
        self.assertEqual(
            MetricsTests().value(families, "graceful_admin_refused_total", reason="no_token"), 0
        )

    def test_refusal_body_made_once(self) -> None:
        """
        The refusal's answer is the same bytes object every time: made once,
        not formatted per request.
        """
        _, server = build(token=TOKEN)
        first = ask(server, "GET", PREFIX + "/status", auth=False).body
        second = ask(server, "GET", PREFIX + "/metrics", auth=False).body
        self.assertIs(first, second)
        self.assertEqual(json.loads(first)["error"].split(":")[0], "the admin token is required")


class RestartTests(SynchronousTestCase):
    def test_restart(self) -> None:
        """
        POST restart is 202 with JSON and starts one new process; a second
        restart, through either name, is 409 while it runs; once it is over
        (here: failed), a restart is accepted again.
        """
        runtime, server = build()
        with capturedLogs() as events:
            answer = ask(server, "POST", PREFIX + "/restart")
        self.assertEqual(answer.code, 202)
        body = answer.json()
        self.assertEqual((body["restarting"], body["pid"], body["generation"]), (True, 4242, 1))
        self.assertEqual(runtime.spawned, [None])
        logged = " ".join(formatEvent(e) for e in events)
        self.assertIn("4242: admin restart asked for by 127.0.0.1:50123", logged)

        for page in ("/restart", "/reload"):
            with capturedLogs() as events:
                answer = ask(server, "POST", PREFIX + page)
            self.assertEqual(answer.code, 409)
            self.assertIn("restart", answer.json()["error"])
            self.assertIn("restart refused", " ".join(formatEvent(e) for e in events))
        self.assertEqual(runtime.spawned, [None])

        runtime.new_process_failed("port 8100 is taken")
        last = ask(server, "GET", PREFIX + "/status").json()["last_restart"]
        self.assertEqual((last["ok"], last["error"]), (False, "port 8100 is taken"))
        self.assertEqual(ask(server, "POST", PREFIX + "/reload").code, 202)
        self.assertEqual(runtime.spawned, [None, None])

    def new_generation(self) -> tuple[FakeRuntime, Server, FakeOldProcess]:
        """
        A process a restart started (generation 2), serving: ready, not yet
        told by the old one that the handover is over.
        """
        runtime, server = build(generation=2)
        old = FakeOldProcess()
        runtime.old_process = old
        runtime.serving_started()
        self.assertEqual(old.reported, ["ready"])
        return runtime, server, old

    def take_over(self, runtime: FakeRuntime, old: FakeOldProcess) -> None:
        wall = runtime.core.environment.now()
        old.accept(Accepted(handoff_seconds=0.3, at=wall, restarts=1))
        old.release(wall)

    def test_burst_gives_one_restart(self) -> None:
        """
        A burst of restart requests: the ones that reach the new process
        before it took over are 409, like those the old one gets while the
        restart runs; the ones in the second after it are answered 200,
        coalesced, and start nothing; a request after that restarts.
        """
        runtime, server, old = self.new_generation()
        self.assertEqual(ask(server, "POST", PREFIX + "/restart").code, 409)
        self.take_over(runtime, old)
        environment = runtime.core.environment
        assert isinstance(environment, MemoryEnvironment)
        with capturedLogs() as events:
            for step in range(10):
                environment.wall += 0.09
                answer = ask(server, "POST", PREFIX + "/restart")
                self.assertEqual(answer.code, 200, step)
        body = answer.json()
        self.assertEqual(
            (body["coalesced"], body["restarting"], body["generation"]), (True, False, 2)
        )
        self.assertEqual(runtime.spawned, [])
        self.assertIn("coalesced with the restart that ended 0.90s ago",
                      " ".join(formatEvent(e) for e in events))
        browser = ask(server, "POST", PREFIX + "/restart", headers=BROWSER)
        self.assertEqual((browser.code, browser.header("location")), (303, PREFIX))
        environment.wall += 0.2
        self.assertEqual(ask(server, "POST", PREFIX + "/restart").code, 202)
        self.assertEqual(runtime.spawned, [None])

    def test_burst_after_a_new_release_restarts(self) -> None:
        """
        Not coalesced: a release directory that names another release than
        the one this process runs, or an executable asked for.
        """
        folder = _temporary_folder(self)
        (folder / "1").mkdir(parents=True)
        (folder / "2").mkdir()
        (folder / "current").symlink_to("1")
        self.patch(_admin, "_serving_directory", lambda: str((folder / "1").resolve()))
        runtime, server, old = self.new_generation()
        runtime.settings.directory = str(folder / "current")
        self.take_over(runtime, old)
        self.assertEqual(ask(server, "POST", PREFIX + "/restart").code, 200)
        (folder / "next").symlink_to("2")
        (folder / "next").replace(folder / "current")  # ln -nsf 2 current
        self.assertEqual(ask(server, "POST", PREFIX + "/restart").code, 202)

        runtime, server, old = self.new_generation()
        runtime.settings.allowed_executables = ["/usr/bin/true"]
        self.take_over(runtime, old)
        answer = ask(server, "POST", PREFIX + "/restart", form={"executable": "/usr/bin/true"})
        self.assertEqual(answer.code, 202)

    def test_get_is_405(self) -> None:
        runtime, server = build(token=TOKEN)
        for page in ("/restart", "/reload", "/shutdown"):
            for method in ("GET", "HEAD", "PUT"):
                answer = ask(server, method, PREFIX + page, headers=bearer())
                self.assertEqual(answer.code, 405, (method, page))
                self.assertEqual(answer.header("allow"), "POST")
        runtime.reactor.advance(1)
        self.assertEqual(runtime.spawned, [])
        self.assertFalse(runtime.draining)

    def test_executable_not_allowed(self) -> None:
        """
        An executable that allowed_executables does not list is 403, and
        nothing is run; one it lists is run.
        """
        runtime, server = build(allowed=("/usr/bin/true",))
        with capturedLogs() as events:
            answer = ask(server, "POST", PREFIX + "/restart", form={"executable": "/bin/sh"})
        self.assertEqual(answer.code, 403)
        self.assertIn("/bin/sh", answer.json()["error"])
        self.assertEqual(runtime.spawned, [])
        self.assertFalse(runtime.restarting)
        self.assertIn("refused", " ".join(formatEvent(e) for e in events))
        answer = ask(
            server,
            "POST",
            PREFIX + "/reload",
            content=("application/json", b'{"executable": "/usr/bin/true"}'),
        )
        self.assertEqual(answer.code, 202)
        self.assertEqual(runtime.spawned, ["/usr/bin/true"])

    def test_empty_executable_is_none(self) -> None:
        runtime, server = build()
        self.assertEqual(
            ask(server, "POST", PREFIX + "/restart", form={"executable": " "}).code, 202
        )
        self.assertEqual(runtime.spawned, [None])

    def test_cross_origin_refused(self) -> None:
        """
        A browser's POST from a page of another origin is refused, whatever
        credentials the browser holds; the page's own POST is accepted.
        """
        runtime, server = build(token=TOKEN)
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://127.0.0.1:9999"},
            {"Origin": "https://127.0.0.1:8100"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:8100"},
        ):
            answer = ask(server, "POST", PREFIX + "/restart", headers={**bearer(), **headers})
            self.assertEqual(answer.code, 403, headers)
            answer = ask(server, "POST", PREFIX + "/shutdown", headers={**bearer(), **headers})
            self.assertEqual(answer.code, 403, headers)
        runtime.reactor.advance(1)
        self.assertEqual(runtime.spawned, [])
        self.assertFalse(runtime.draining)
        # Chromium sends Origin: null with Sec-Fetch-Site: same-origin
        # under Referrer-Policy: no-referrer; Sec-Fetch-Site decides.
        same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        answer = ask(server, "POST", PREFIX + "/restart", headers={**bearer(), **same})
        self.assertEqual(answer.code, 202)
        runtime.new_process_failed("test")
        same = {"Origin": "http://127.0.0.1:8100"}
        answer = ask(server, "POST", PREFIX + "/restart", headers={**bearer(), **same})
        self.assertEqual(answer.code, 202)

    def test_browser_gets_redirect(self) -> None:
        """
        The page's form gets a 303 back to the page, which follows the
        restart; a browser's 409 is a page with the same code.
        """
        runtime, server = build()
        answer = ask(server, "POST", PREFIX + "/restart", headers=BROWSER)
        self.assertEqual(answer.code, 303)
        self.assertEqual(answer.header("location"), PREFIX + "?restarted_from=1")
        answer = ask(server, "POST", PREFIX + "/restart", headers=BROWSER)
        self.assertEqual(answer.code, 409)
        self.assertIn("text/html", answer.header("content-type") or "")
        self.assertIn("already running", answer.text)
        page = ask(server, "GET", PREFIX + "?restarted_from=1", headers=BROWSER).text
        self.assertIn('http-equiv="refresh"', page)
        self.assertIn("Restarting", page)


class ShutdownTests(SynchronousTestCase):
    def test_shutdown(self) -> None:
        """
        POST shutdown is 202 with JSON; once the answer is out the process
        drains, and health turns 503.
        """
        runtime, server = build()
        self.assertEqual(ask(server, "GET", "/healthz").code, 200)
        with capturedLogs() as events:
            answer = ask(server, "POST", PREFIX + "/shutdown")
        self.assertEqual(answer.code, 202)
        self.assertEqual(answer.json()["shutting_down"], True)
        self.assertIn(
            "admin shutdown asked for by 127.0.0.1:50123",
            " ".join(formatEvent(e) for e in events),
        )
        runtime.reactor.advance(0)
        self.assertTrue(runtime.draining)
        status = ask(server, "GET", PREFIX + "/status").json()
        self.assertEqual(status["draining"], True)
        self.assertEqual([p["port"] for p in status["servers"][0]["ports"]], [8100, 8443])
        self.assertEqual(ask(server, "GET", PREFIX, headers=BROWSER).code, 200)
        self.assertEqual(ask(server, "GET", PREFIX + "/metrics").code, 200)
        health = ask(server, "GET", "/healthz")
        self.assertEqual((health.code, health.body), (503, b"draining\n"))
        self.assertEqual(ask(server, "POST", PREFIX + "/restart").code, 409)

    def test_browser_gets_page(self) -> None:
        runtime, server = build()
        answer = ask(server, "POST", PREFIX + "/shutdown", headers=BROWSER)
        self.assertEqual(answer.code, 202)
        self.assertIn("Shutting down", answer.text)


class HealthTests(SynchronousTestCase):
    def test_no_auth(self) -> None:
        """
        Health needs no token and answers any peer: probes carry nothing.
        """
        runtime, server = build(token=TOKEN)
        answer = ask(server, "GET", "/healthz", peer="10.0.0.5", host="node7:8100")
        self.assertEqual((answer.code, answer.body), (200, b"ok\n"))
        self.assertEqual(answer.header("cache-control"), "no-store")
        self.assertEqual(ask(server, "HEAD", "/healthz").code, 200)

    def test_serving_while_restarting(self) -> None:
        """
        While the new process starts, this one still serves: 200.  Once it
        hands over, it drains: 503.
        """
        runtime, server = build()
        runtime.restart().addErrback(lambda f: None)
        self.assertEqual(ask(server, "GET", "/healthz").code, 200)
        runtime.new_process_ready()
        self.assertEqual(ask(server, "GET", "/healthz").code, 503)


class PageTests(SynchronousTestCase):
    def test_page(self) -> None:
        """
        The page shows pid, generation, uptime, servers with ports and
        in-flight requests, the last restart, and two forms that POST; it
        loads nothing from elsewhere and runs no script.
        """
        runtime, server = build()
        answer = ask(server, "GET", PREFIX, headers=BROWSER)
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("content-type"), "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", answer.header("content-security-policy") or "")
        page = answer.text
        self.assertIn('<dd id="pid">4242</dd>', page)
        self.assertIn('<dd id="generation">1</dd>', page)
        self.assertIn('id="uptime"', page)
        self.assertIn("http :8100", page)
        self.assertIn("https :8443", page)
        self.assertIn('class="num in-flight">0<', page)
        self.assertIn("No restart yet", page)
        self.assertIn(f'<form method="post" action="{PREFIX}/restart"', page)
        self.assertIn(f'<form method="post" action="{PREFIX}/shutdown"', page)
        self.assertIn("required", page)
        for outside in ("<script", "src=", "<link", "@import", "url("):
            self.assertNotIn(outside, page)
        self.assertNotIn('http-equiv="refresh"', page)

    def test_token_carried_when_presented(self) -> None:
        """
        The forms carry the token that the request for the page presented.
        """
        _, server = build(token=TOKEN)
        page = ask(server, "GET", PREFIX, headers={**BROWSER, **bearer()}).text
        self.assertEqual(page.count(f'<input type="hidden" name="token" value="{TOKEN}">'), 2)

    def test_escaped(self) -> None:
        runtime, server = build(name="<b>x&amp;", token='"><script>')
        runtime.core.history.last = LastRestart(False, "<img src=x onerror=alert(1)>", 1.0)
        runtime.settings.allowed_executables = ['/opt/"a"<b>']
        page = ask(
            server, "GET", PREFIX, headers={**BROWSER, **bearer('"><script>')}
        ).text
        for raw in ("<b>x", "<img", "<script>", '"a"<b>'):
            self.assertNotIn(raw, page)
        self.assertIn("&lt;b&gt;x&amp;amp;", page)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", page)
        self.assertIn('value="&quot;&gt;&lt;script&gt;"', page)

    def test_allowed_executables_offered(self) -> None:
        runtime, server = build(allowed=("/srv/app/releases/2/run",))
        page = ask(server, "GET", PREFIX, headers=BROWSER).text
        self.assertIn('<option value="/srv/app/releases/2/run">', page)

    def test_busy_buttons_disabled(self) -> None:
        runtime, server = build()
        runtime.restart().addErrback(lambda f: None)
        page = ask(server, "GET", PREFIX, headers=BROWSER).text
        self.assertIn('id="restart" disabled', page)
        self.assertIn('http-equiv="refresh"', page)

    def test_restart_notices(self) -> None:
        base = ProcessStatus(pid=7, generation=3, servers=())
        self.assertIsNone(restart_notice(base, None))
        kind, text, reload = restart_notice(base, 2)
        self.assertEqual((kind, reload), ("ok", False))
        self.assertIn("generation 2 &rarr; 3", text)
        self.assertTrue(restart_notice(evolve(base, restarting=True), 3)[2])
        self.assertTrue(restart_notice(evolve(base, draining=True), 3)[2])
        failed = evolve(base, last_restart=LastRestart(ok=False, error="<boom>", at=1.0))
        kind, text, reload = restart_notice(failed, 3)
        self.assertEqual((kind, reload), ("bad", False))
        self.assertIn("&lt;boom&gt;", text)

    def test_page_without_servers(self) -> None:
        status = ProcessStatus(pid=1, generation=1, servers=(), started_at=0.0, uptime=5.0)
        self.assertIn(b"No server started", admin_page(status, prefix=PREFIX, now=5.0))

    def test_duration(self) -> None:
        self.assertEqual(duration(5.7), "5s")
        self.assertEqual(duration(185), "3m 05s")
        self.assertEqual(duration(2 * 3600 + 180), "2h 03m")
        self.assertEqual(duration(4 * 86400 + 7200), "4d 02h")
        self.assertEqual(duration(-3), "0s")


class MetricsTests(SynchronousTestCase):
    def scrape(self, server: Server, **kw: Any) -> dict[str, Any]:
        answer = ask(server, "GET", PREFIX + "/metrics", **kw)
        self.assertEqual(answer.code, 200)
        self.assertTrue((answer.header("content-type") or "").startswith("text/plain"))
        return {
            family.name: family for family in text_string_to_metric_families(answer.text)
        }

    def value(self, families: dict[str, Any], name: str, **labels: str) -> float:
        for family in families.values():
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        raise AssertionError(f"no sample {name} {labels}")

    def test_metrics(self) -> None:
        runtime, server = build(generation=4)
        runtime.core.history.restarts = 3
        other = runtime.server("s2")
        other.site = DrainingSite(other.router, server_name="s2", reactor=runtime.reactor)
        assert server.site is not None
        server.site.requests_served = 41
        other.site.requests_served = 2
        families = self.scrape(server)
        self.assertEqual(self.value(families, "graceful_requests_total", server="s1"), 41)
        self.assertEqual(self.value(families, "graceful_requests_total", server="s2"), 2)
        self.assertEqual(self.value(families, "graceful_requests_in_flight", server="s1"), 0)
        self.assertEqual(self.value(families, "graceful_generation"), 4)
        self.assertEqual(self.value(families, "graceful_restarts_total"), 3)
        self.assertEqual(self.value(families, "graceful_failed_restarts_total"), 0)
        self.assertEqual(self.value(families, "graceful_draining"), 0)
        with self.assertRaises(AssertionError):
            self.value(families, "graceful_last_restart_success")  # none yet

        runtime.restart().addErrback(lambda f: None)
        runtime.reactor.advance(1.5)
        runtime.new_process_failed("no")
        families = self.scrape(server)
        self.assertEqual(self.value(families, "graceful_failed_restarts_total"), 1)
        self.assertEqual(self.value(families, "graceful_last_restart_success"), 0)

        runtime.restart().addErrback(lambda f: None)
        runtime.reactor.advance(0.25)
        self.assertEqual(self.value(self.scrape(server), "graceful_restarting"), 1)
        runtime.new_process_ready()
        families = self.scrape(server)
        self.assertEqual(self.value(families, "graceful_last_handoff_seconds"), 0.25)
        self.assertEqual(self.value(families, "graceful_last_restart_success"), 1)
        self.assertEqual(self.value(families, "graceful_restarts_total"), 4)
        self.assertEqual(self.value(families, "graceful_draining"), 1)

    def test_needs_auth(self) -> None:
        _, server = build(token=TOKEN)
        self.assertEqual(ask(server, "GET", PREFIX + "/metrics", auth=False).code, 401)
        self.assertIn("graceful_generation", str(self.scrape(server, headers=bearer())))

    def test_registry_per_runtime(self) -> None:
        """
        Each runtime has a registry of its own, not the global default one.
        """
        first, _ = build(generation=2)
        second, _ = build(generation=9)
        self.assertIsNot(registry_for(first), REGISTRY)
        self.assertIs(registry_for(first), registry_for(first))
        self.assertEqual(registry_for(first).get_sample_value("graceful_generation"), 2)
        self.assertEqual(registry_for(second).get_sample_value("graceful_generation"), 9)
        self.assertIsNone(REGISTRY.get_sample_value("graceful_generation"))

    def test_openmetrics(self) -> None:
        _, server = build()
        answer = ask(
            server,
            "GET",
            PREFIX + "/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        )
        self.assertTrue((answer.header("content-type") or "").startswith("application/openmetrics-text"))
        self.assertTrue(answer.body.endswith(b"# EOF\n"))


class HelperTests(SynchronousTestCase):
    def test_wants_html(self) -> None:
        def asks(accept: str | None) -> bool:
            request = DummyRequest([])
            if accept is not None:
                request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
            return wants_html(request)

        self.assertTrue(asks(BROWSER["Accept"]))
        self.assertTrue(asks("text/html"))
        for accept in (None, "*/*", "application/json", "text/html;q=0.5, application/json",
                       "text/html;q=0"):
            self.assertFalse(asks(accept), accept)

    def test_forwarded(self) -> None:
        for name in ("Forwarded", "X-Forwarded-For", "X-Real-IP", "x-forwarded-for"):
            request = DummyRequest([])
            request.requestHeaders.setRawHeaders(name.encode(), [b"for=1.2.3.4"])
            self.assertTrue(forwarded(request), name)
        self.assertFalse(forwarded(DummyRequest([])))
