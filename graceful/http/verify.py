# -*- test-case-name: tests.unit.http.test_verify -*-
"""
Verified hand-over: before a process says it serves, it asks its own HTTP
stack for a server's C{verify} paths and serves only if each answers 2xx.

Each request travels over a connection of its own, one end of a
C{socketpair()} adopted by the server's site, the other driven by the small
client here: the shared listening socket would do, but the old process
accepts from it too, so half the answers would come from the old code.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterable, Sequence

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from .._errors import ConfigError
from .._logging import NamedLogger

#: The most of an answer read: the status line, the headers and the start of
#: the body are all a verdict needs.
MAX_ANSWER = 64 * 1024

#: The most of the body's first line a reason quotes.
MAX_BODY_LINE = 200


class VerifyFailed(Exception):
    """
    A C{verify} path did not answer 2xx; the message names the server, the
    path, the status and the body's first line.
    """


def check_verify_paths(paths: Iterable[object]) -> tuple[str, ...]:
    """
    The paths, if each can go on a request line as it is.

    @raise ConfigError: one is not a string starting with '/', or holds
        a space or a control character.
    """
    checked = []
    for path in paths:
        if (
            not isinstance(path, str)
            or not path.startswith("/")
            or any(c.isspace() or not c.isprintable() for c in path)
        ):
            raise ConfigError(
                f"verify path {path!r} must start with '/' and hold no space "
                "or control character"
            )
        checked.append(path)
    return tuple(checked)


@define(eq=False, slots=True)
class Verifies:
    """
    A server's C{verify} paths (a base of L{graceful.http.server.Server}).

    @ivar verify_paths: asked through the server's own site before the
        process reports ready.
    """

    verify_paths: tuple[str, ...] = field(default=(), kw_only=True)

    def set_verify(self, *paths: str) -> None:
        """
        Before a new generation (or worker) reports ready, request each of
        C{paths} through its own HTTP stack; anything but a 2xx answer
        within ready_timeout fails the restart (the old process serves on).
        No paths: verify nothing.
        """
        try:
            self.verify_paths = check_verify_paths(paths)
        except ConfigError as e:
            raise ConfigError(f"server {getattr(self, 'name', '?')!r}: {e}") from None


@frozen
class Answer:
    """
    What a verify request got: the status and the body's first line.
    """

    status: int
    first_line: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def parse_answer(data: bytes) -> Answer:
    """
    The status and the body's first line of an HTTP/1.1 answer (the body
    possibly chunked, possibly cut short).

    @raise ValueError: not an HTTP answer.
    """
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = _dechunk(body)
    first = body.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
    return Answer(int(parts[1]), first.decode("utf-8", "replace")[:MAX_BODY_LINE])


def _dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if not sep or size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


class VerifyClient(Protocol):
    """
    Sends one request and reads the answer until the server closes.

    @ivar answered: fires with the L{Answer}, or fails.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.answered: Deferred[Answer] = Deferred()
        self._data = bytearray()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > MAX_ANSWER:
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.answered.called:
            return
        try:
            answer = parse_answer(bytes(self._data[:MAX_ANSWER]))
        except ValueError as e:
            self.answered.errback(e)
            return
        self.answered.callback(answer)


def verify_request(host: str, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: graceful-verify\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")


def request_through(
    reactor: Any, site: Any, host: str, path: str, timeout: float
) -> Deferred[Answer]:
    """
    Request C{path} from C{site} over a socketpair: one end adopted by the
    site as any accepted connection, the other by L{VerifyClient}.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = VerifyClient(verify_request(host, path))
    try:
        ours.setblocking(False)
        theirs.setblocking(False)
        # adoptStreamConnection takes copies of the descriptors.
        reactor.adoptStreamConnection(theirs.fileno(), socket.AF_UNIX, site)
        reactor.adoptStreamConnection(
            ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: client)
        )
    finally:
        ours.close()
        theirs.close()

    def cut(result: object, timeout: float) -> object:
        if client.transport is not None:
            client.transport.abortConnection()  # type: ignore[attr-defined]
        return result

    client.answered.addTimeout(timeout, reactor, onTimeoutCancel=cut)
    return client.answered


@define
class Verification:
    """
    The C{verify} paths of every server, asked one after the other.

    @ivar reactor: the reactor.
    @ivar servers: each server's name, site and paths.
    @ivar timeout: seconds all of them may take together.
    @ivar pid: for log lines.
    @ivar request: sends one request (L{request_through}).
    """

    reactor: Any
    servers: Sequence[tuple[str, Any, Sequence[str]]]
    timeout: float
    pid: int
    request: Callable[[Any, Any, str, str, float], Deferred[Answer]] = request_through
    _log = NamedLogger("graceful._verify.Verification")

    def run(self) -> Deferred[None]:
        """
        Fires once every path answered 2xx; fails with L{VerifyFailed} at
        the first that did not, or did not answer in time.
        """
        done: Deferred[None] = Deferred()
        deadline = self.reactor.seconds() + self.timeout
        pending = [(name, site, path) for name, site, paths in self.servers for path in paths]

        def step(_: object = None) -> None:
            if not pending:
                done.callback(None)
                return
            name, site, path = pending.pop(0)
            left = max(0.0, deadline - self.reactor.seconds())
            try:
                d = self.request(self.reactor, site, name, path, left)
            except OSError as e:
                done.errback(VerifyFailed(f"verify {name} {path}: {e.strerror or e}"))
                return
            d.addCallbacks(
                lambda answer: checked(name, path, answer),
                lambda failure: failed(name, path, failure),
            )

        def checked(name: str, path: str, answer: Answer) -> None:
            if not answer.ok:
                shown = f": {answer.first_line}" if answer.first_line else ""
                done.errback(
                    VerifyFailed(f"verify {name} {path} answered {answer.status}{shown}")
                )
                return
            self._log.info(
                "{pid}: verified {path} ({status})",
                pid=self.pid,
                server=name,
                path=path,
                status=answer.status,
            )
            step()

        def failed(name: str, path: str, failure: Failure) -> None:
            if failure.check(TimeoutError, CancelledError):
                why = "no answer within ready_timeout"
            else:
                why = f"no HTTP answer ({failure.getErrorMessage()})"
            done.errback(VerifyFailed(f"verify {name} {path}: {why}"))

        step()
        return done
