"""Which URLs and addresses the fetcher may contact: the SSRF policy, as pure functions.

A collection's URLs come from users, schedules and (through redirects) from remote servers,
so a fetch must never reach the machine's own services (loopback, the cloud metadata address,
the private network) unless the operator says so. Addresses are checked after DNS resolution,
because a public-looking name can resolve to ``127.0.0.1``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Longest URL we send; longer ones are refused before any request (servers cap near 8-64 KB).
MAX_URL_CHARS = 64 * 1024
ALLOWED_SCHEMES = ("http", "https")
ALLOW_PRIVATE_HINT = "set CORPUS_SEARCH_FETCH_ALLOW_PRIVATE=true to fetch private addresses"

#: Cloud metadata services (AWS, GCP and Azure share the first; AWS IPv6; Alibaba Cloud).
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
             ipaddress.ip_address("100.100.100.200")}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # shared address space: neither private nor global
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """The policy forbids this URL or address. Never retried: asking again gives the same answer."""


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched. The default is the safe one: public addresses, any host."""

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()  # non-empty: only these hosts and their subdomains
    denied_hosts: tuple[str, ...] = ()  # never these hosts nor their subdomains

    @classmethod
    def from_settings(cls, settings) -> FetchPolicy:
        """The policy of a ``query.settings.Settings``."""
        return cls(
            allow_private=settings.fetch_allow_private,
            allowed_hosts=tuple(settings.fetch_allowed_hosts),
            denied_hosts=tuple(settings.fetch_denied_hosts),
        )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, Teredo client), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_problem(ip: IPAddress | str) -> str | None:
    """Why ``ip`` must not be fetched ("a loopback address", ...), or None for a public address."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        inner = address_problem(v4)
        return f"{inner} (embedded in {ip})" if inner else None
    if why := never_fetched(ip):  # the metadata service, link-local: refused where private ones are allowed too
        return why
    # Most specific first, so that the message names what the address really is.
    checks: list[tuple[bool, str]] = [
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a carrier-grade NAT address"),
        (ip.is_reserved, "a reserved address"),  # before private: Python counts 240.0.0.0/4 as both
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    ]
    return next((why for bad, why in checks if bad), None)


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("*.").lstrip(".")


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """True when ``host`` is one of ``patterns`` or a subdomain of one (``a.example.org`` matches ``example.org``)."""
    host = _normal_host(host)
    return any(host == p or host.endswith("." + p) for p in map(_normal_host, patterns) if p)


def url_problem(url: str) -> str | None:
    """What makes ``url`` unfit to send at all (too long, control characters, scheme, no host), or None."""
    if len(url) > MAX_URL_CHARS:
        return f"URL of {len(url)} characters is longer than {MAX_URL_CHARS}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "URL contains control characters"
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return f"only http:// and https:// URLs are fetched (got {parts.scheme or 'no scheme'}:)"
    if not host:
        return "URL has no host"
    return None


def check_host(host: str, policy: FetchPolicy) -> None:
    """Raise Refused when the allowed/denied host lists exclude ``host``."""
    if policy.denied_hosts and host_matches(host, policy.denied_hosts):
        raise Refused(f"refused: {host} is a denied host (CORPUS_SEARCH_FETCH_DENIED_HOSTS)")
    if policy.allowed_hosts and not host_matches(host, policy.allowed_hosts):
        raise Refused(f"refused: {host} is not an allowed host (CORPUS_SEARCH_FETCH_ALLOWED_HOSTS)")


Resolver = Callable[..., list]


def resolve_checked(host: str, port: int, policy: FetchPolicy, resolve: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses of ``host``, each checked against the policy. Every one must be allowed, since the
    connection may use any of them. DNS errors raise ``OSError`` (a transient failure, worth a retry)."""
    infos = resolve(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    for addr in addresses:
        shown = host if host == addr else f"{host} ({addr})"
        if why := never_fetched(addr):
            raise Refused(f"refused: {shown} is {why}, never fetched (CORPUS_SEARCH_FETCH_ALLOW_PRIVATE opens an "
                          "intranet's addresses, not this one)")
        if not policy.allow_private and (why := address_problem(addr)):
            raise Refused(f"refused: {shown} is {why}; {ALLOW_PRIVATE_HINT}")
    return addresses


def never_fetched(ip: IPAddress | str) -> str | None:
    """Why ``ip`` is refused even where private addresses are allowed, or None: the cloud metadata service
    (an intranet page could redirect the fetcher to its credentials) and link-local addresses."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        return never_fetched(v4)
    if ip in _METADATA:
        return "the cloud metadata address"
    return "a link-local address" if ip.is_link_local else None


def check_url(url: str, policy: FetchPolicy, resolve: Resolver = socket.getaddrinfo) -> None:
    """Raise Refused unless ``url`` may be requested now: syntax, scheme, host lists, resolved addresses."""
    if why := url_problem(url):
        raise Refused(why)
    parts = urlsplit(url)
    host = parts.hostname or ""
    check_host(host, policy)
    resolve_checked(host, parts.port or (443 if parts.scheme.lower() == "https" else 80), policy, resolve)
