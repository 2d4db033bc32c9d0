"""An httpx transport that enforces the fetch policy where the socket is opened, and a per-URL deadline.

Two holes a URL-level check leaves open are closed here:

* DNS rebinding: a name can resolve to a public address when checked and to ``127.0.0.1`` when
  httpx connects. So the backend resolves once, checks every address, and connects to those
  very addresses (TLS still verifies and sends SNI for the original host name).
* Slow drips: httpx timeouts bound each read, not the whole response, so a server sending one
  byte every half second holds a fetch forever. Every read and connect is bounded by the time
  left before the current fetch's deadline (set per thread by the fetcher).
* Slow DNS: ``getaddrinfo`` has no timeout of its own (a resolver that does not answer holds it for
  the resolver's own retries, or longer); :func:`bounded_getaddrinfo` waits for it only until the deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
import typing

import httpcore
import httpx

from tasks.netguard import FetchPolicy, resolve_checked

_local = threading.local()


class deadline:  # noqa: N801 - used as a context manager, reads like a function
    """Bound every network wait of this thread to ``at`` (a ``time.monotonic()`` instant)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __enter__(self) -> deadline:
        self.previous = getattr(_local, "deadline", None)
        _local.deadline = self.at
        return self

    def __exit__(self, *exc) -> None:
        _local.deadline = self.previous


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of this thread's deadline; raises ``error`` once it passed."""
    at = getattr(_local, "deadline", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the fetch deadline passed")
    return left if timeout is None else min(timeout, left)


def bounded_getaddrinfo(host, port, *args, **kwargs) -> list:
    """``socket.getaddrinfo`` bounded by this thread's fetch deadline (unbounded outside one).

    The lookup runs in a daemon thread of its own, and the fetch waits for it only until the deadline: a lookup
    that never answers holds that thread (until the resolver gives up), never the fetch, nor other fetches (a
    shared pool was filled by hung lookups, and then every fetch failed). An address needs no lookup. Raises
    ``OSError`` when the deadline passes first: a DNS failure, which the fetcher treats as transient (retried
    while the deadline allows), as it does a resolver's own error.
    """
    at = getattr(_local, "deadline", None)
    if at is None or _is_address(host):
        return socket.getaddrinfo(host, port, *args, **kwargs)
    left = at - time.monotonic()
    if left <= 0:
        raise OSError(f"no time left for the DNS lookup of {host} within the fetch deadline")
    done: dict[str, typing.Any] = {}
    finished = threading.Event()

    def lookup() -> None:
        try:
            done["result"] = socket.getaddrinfo(host, port, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting fetch
            done["error"] = exc
        finished.set()

    threading.Thread(target=lookup, name=f"corpus-search-dns-{host}", daemon=True).start()
    if not finished.wait(left):
        raise OSError(f"the DNS lookup of {host} did not answer within the fetch deadline")
    if "error" in done:
        raise done["error"]
    return done["result"]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write respects the fetch deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolve, check and connect to the checked addresses only; bound everything by the deadline."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._sync = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        try:  # with private addresses allowed too: the metadata service stays refused (netguard.never_fetched)
            addresses = resolve_checked(host, port, self.policy, bounded_getaddrinfo)  # raises Refused, never retried
        except OSError as exc:  # DNS failure: transient, like any connect error
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        last: Exception | None = None
        for addr in addresses:  # every address was checked, so any may be used
            try:
                return _DeadlineStream(self._sync.connect_tcp(addr, port, timeout, local_address, socket_options))
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} has no addresses")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def guarded_transport(policy: FetchPolicy, limits: httpx.Limits) -> httpx.HTTPTransport:
    """An httpx transport whose connections go through ``GuardedBackend``."""
    ssl_context = httpx.create_ssl_context()  # loading the CA bundle is slow: once per client
    transport = httpx.HTTPTransport(verify=ssl_context, limits=limits)
    # httpx has no public hook for the network backend; its pool is rebuilt with the same options.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy),
    )
    return transport


__all__ = ["GuardedBackend", "bounded_getaddrinfo", "deadline", "guarded_transport"]
