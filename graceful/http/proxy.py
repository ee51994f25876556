# -*- test-case-name: tests.unit.http.test_proxy -*-
"""
Behind a proxy: the client address, scheme and host a trusted proxy reports
in C{X-Forwarded-For}, C{X-Forwarded-Proto}, C{X-Forwarded-Host} or RFC 7239
C{Forwarded}, taken as the request's own before any app sees it, so that
twisted.web resources (C{getClientAddress()}, C{isSecure()}), WSGI apps
(C{REMOTE_ADDR}, C{wsgi.url_scheme}), ASGI apps (C{scope["client"]},
C{scope["scheme"]}) and the access log all agree.  From any other peer the
headers change nothing.

The headers stay on the request: the admin counts a request that carries
them as never local, whoever sent it.

Both channels read the headers with L{read_forwarded}: twisted.web's
through L{ProxyHeaders} at the root resource, the native one through
L{proxied}, wrapped around each app's dispatch (so a server without proxy
headers pays nothing per request on either).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Callable, Iterable, Sequence

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from .._errors import ConfigError
from .._settings import Settings
from .limits import ConcurrencyLimit, limit_concurrency

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@frozen(cache_hash=True)
class Trusted:
    """
    The peers trusted to send proxy headers: C{"*"} for all, addresses and
    networks otherwise; a UNIX-socket peer always is (only a local process
    with the file's permission can connect).
    """

    everyone: bool
    networks: tuple[_Network, ...]

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        if not isinstance(host, str):
            return False
        return _trusts(self, host)

    def _holds(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def peer(self, address: object) -> bool:
        if isinstance(address, UNIXAddress):
            return True
        return getattr(address, "host", None) in self


@functools.lru_cache(maxsize=4096)
def _trusts(trusted: Trusted, host: str) -> bool:
    # A proxy's few addresses, asked on every request: parsing one with
    # ipaddress took ~2 us, and a request asks two or three times.
    return trusted._holds(host)


def check_trusted(entries: Iterable[str]) -> Trusted:
    """
    Read C{forwarded_allow_ips}.

    @raise ConfigError: an entry is neither C{"*"}, an address nor a network.
    """
    everyone = False
    networks: list[_Network] = []
    for entry in entries:
        entry = entry.strip()
        if entry == "*":
            everyone = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(f"{entry!r} is not an address, a network or '*'") from None
    return Trusted(everyone, tuple(networks))


@frozen
class Forwarded:
    """
    What the proxies say of a request; L{None} where they say nothing.
    """

    client: str | None = None
    scheme: str | None = None
    host: str | None = None


def _values(headers: Sequence[bytes] | None) -> list[str]:
    """
    The comma-separated values of every instance of a header, in order.
    """
    found: list[str] = []
    for header in headers or ():
        found += [v.strip() for v in header.decode("latin-1").split(",") if v.strip()]
    return found


@functools.lru_cache(maxsize=4096)
def _node(value: str) -> str | None:
    """
    The address of an RFC 7239 node (C{192.0.2.1:80}, C{"[2001:db8::1]:80"},
    C{unknown} or an obfuscated C{_name}: L{None}), or of an
    C{X-Forwarded-For} entry.
    """
    value = value.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _pick(hops: list[Any], address_of: Any, trusted: Trusted) -> Any:
    """
    The right-most hop not sent by a trusted proxy: each proxy appends the
    peer it heard from, so only the entries our trusted proxies added can be
    believed, and the first untrusted one is the client.  If every hop is
    trusted, the left-most.
    """
    for hop in reversed(hops):
        if address_of(hop) not in trusted:
            return hop
    return hops[0]


def _forwarded_elements(headers: Sequence[bytes]) -> list[dict[str, str]]:
    elements = []
    for element in _values(headers):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            key, _, value = pair.partition("=")
            pairs[key.strip().lower()] = value.strip().strip('"')
        elements.append(pairs)
    return elements


#: A request's values of a (lowercase) header, as
#: L{twisted.web.http_headers.Headers.getRawHeaders} gives them.
RawHeaders = Callable[[bytes], Sequence[bytes] | None]


def forwarded(headers: Any, trusted: Trusted) -> Forwarded:
    """
    What a trusted peer's headers say (L{read_forwarded}).

    @param headers: the request's L{twisted.web.http_headers.Headers}.
    """
    return read_forwarded(headers.getRawHeaders, trusted)


def read_forwarded(raw: RawHeaders, trusted: Trusted) -> Forwarded:
    """
    What a trusted peer's headers say: C{Forwarded} if there is one,
    otherwise the C{X-Forwarded-*} headers; any channel's request.

    @param raw: the request's values of a header.
    """
    elements = _forwarded_elements(raw(b"forwarded") or [])
    if elements:
        hop = _pick(elements, lambda e: _node(e.get("for", "")), trusted)
        proto = hop.get("proto", "").lower()
        return Forwarded(
            client=_node(hop.get("for", "")),
            scheme=proto if proto in ("http", "https") else None,
            host=hop.get("host") or None,
        )
    clients = _values(raw(b"x-forwarded-for"))
    protos = _values(raw(b"x-forwarded-proto"))
    hosts = _values(raw(b"x-forwarded-host"))
    proto = protos[-1].lower() if protos else ""
    return Forwarded(
        client=_node(_pick(clients, _node, trusted)) if clients else None,
        scheme=proto if proto in ("http", "https") else None,
        host=hosts[-1] if hosts else None,
    )


def client_address(client: str) -> IPv4Address | IPv6Address:
    """
    The address a forwarded client is seen at (its port is not forwarded: 0).
    """
    kind = IPv6Address if ":" in client else IPv4Address
    return kind("TCP", client, 0)


def apply_forwarded(request: Any, trusted: Trusted) -> None:
    """
    Make what a trusted peer forwarded the request's own; from an untrusted
    peer, leave it as it is.
    """
    if getattr(request, "_graceful_proxied", False):
        return
    request._graceful_proxied = True
    if not trusted.peer(request.getClientAddress()):
        return
    said = forwarded(request.requestHeaders, trusted)
    if said.client is not None:
        request.client = client_address(said.client)
    # The ASGI scope keeps a connection's isSecure() on its channel (asked
    # once a connection); a proxy's connection carries requests of either
    # scheme, so each of its requests asks again.
    channel = getattr(request, "channel", None)
    if channel is not None:
        channel.graceful_secure = None
    if said.scheme is not None:
        secure = said.scheme == "https"
        # Per request: Request.isSecure asks the channel, which knows only
        # the hop from the proxy.
        request.isSecure = lambda: secure
    if said.host is not None:
        request.requestHeaders.setRawHeaders(b"host", [said.host.encode("latin-1")])


@implementer(IResource)
class ProxyHeaders:
    """
    A server's root resource, behind trusted proxies.
    """

    def __init__(self, inner: IResource, trusted: Trusted) -> None:
        self.inner = inner
        self.trusted = trusted

    @property
    def isLeaf(self) -> bool:  # noqa: N802 (twisted.web's name)
        return bool(self.inner.isLeaf)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:  # noqa: N802
        apply_forwarded(request, self.trusted)
        return self.inner.getChildWithDefault(name, request)

    def putChild(self, path: bytes, child: IResource) -> None:  # noqa: N802
        self.inner.putChild(path, child)

    def render(self, request: IRequest) -> Any:
        apply_forwarded(request, self.trusted)
        return self.inner.render(request)


def site_root(resource: IResource, settings: Settings) -> IResource:
    """
    C{resource} as a site serves it: at most C{settings.limit_concurrency}
    requests at once, and reading the proxy headers of trusted peers if
    C{settings.proxy_headers} (first, so that a 503 is logged with the
    forwarded client); untouched with neither (no cost per request).
    """
    resource = limit_concurrency(resource, settings.limit_concurrency)
    if not settings.proxy_headers:
        return resource
    return ProxyHeaders(resource, check_trusted(settings.forwarded_allow_ips))


_FORWARDING = frozenset((b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"))


def proxied(dispatch: Callable[[Any], None], trusted: Trusted) -> Callable[[Any], None]:
    """
    The native channel's C{dispatch} of an app, behind trusted proxies:
    what a trusted peer forwarded becomes the exchange's own
    (L{graceful.http.exchange.Exchange.forward}) before the app sees it.
    """

    def serve(exchange: Any) -> None:
        if trusted.peer(exchange.channel.peer):
            # One pass over the headers, not one per header asked for.
            said: dict[bytes, list[bytes]] = {}
            for name, value in exchange.headers:
                if name in _FORWARDING:
                    said.setdefault(name, []).append(value)
            if said:
                forwarded = read_forwarded(said.get, trusted)
                client = forwarded.client
                exchange.forward(forwarded, None if client is None else client_address(client))
        dispatch(exchange)

    return serve


def root_layers(root: IResource) -> tuple[Trusted | None, ConcurrencyLimit | None]:
    """
    The proxies a L{site_root} trusts (L{None}: proxy headers off) and its
    concurrency limit (L{None}: none), for the native channel to apply the
    same ones, counting in the same limit.
    """
    trusted = None
    if isinstance(root, ProxyHeaders):
        trusted, root = root.trusted, root.inner
    return trusted, root if isinstance(root, ConcurrencyLimit) else None
