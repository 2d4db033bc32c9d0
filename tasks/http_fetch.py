"""http(s) URLs → Article records: conditional, retried, bounded in size and time, and SSRF-safe.

Every URL ends as an Article, NotModified or FetchFailure; nothing a server or a URL does can
raise out of ``fetch_urls`` and abort the other URLs of a run. Redirects are followed here,
not by httpx, so that each hop is checked against the fetch policy before it is requested.
"""

from __future__ import annotations

import contextvars
import logging
import time
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from query.settings import Settings
from tasks.http_transport import bounded_getaddrinfo, deadline, guarded_transport
from tasks.netguard import FetchPolicy, Refused, Resolver, check_url
from tasks.records import Article, ArticleState, FetchFailure, NotModified, Removed, article_key
from tasks.urls import validators_url
from tasks.sniff import binary_reason, binary_signature, wide_charset
from tasks.urls import url_origin

log = logging.getLogger(__name__)

HTML_TYPES = {"text/html", "application/xhtml+xml"}
TEXT_TYPES = {"text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown"}
RETRY_STATUS = {429, 500, 502, 503, 504}
RETRY_AFTER_STATUS = {429, 503}
REDIRECT_STATUS = {301, 302, 303, 307, 308}

FetchOutcome = Article | NotModified | FetchFailure | Removed


def _default(name: str):
    """A setting's default: the one home of every fetch default is ``query.settings.Settings``."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class HttpOptions:
    timeout_s: float = _default("fetch_timeout_s")
    retries: int = _default("fetch_retries")
    concurrency: int = _default("fetch_concurrency")
    max_bytes: int = _default("fetch_max_bytes")
    user_agent: str = _default("user_agent")
    backoff_s: float = 0.5
    deadline_s: float = _default("fetch_deadline_s")  # per URL: every attempt, redirect and back-off included
    retry_after_max_s: float = _default("fetch_retry_after_max_s")
    max_redirects: int = 5
    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = field(default=())
    denied_hosts: tuple[str, ...] = field(default=())

    @property
    def policy(self) -> FetchPolicy:
        """Which hosts and addresses may be contacted."""
        return FetchPolicy(self.allow_private, tuple(self.allowed_hosts), tuple(self.denied_hosts))

    @classmethod
    def from_settings(cls, settings) -> HttpOptions:
        """The fetch options of a ``query.settings.Settings``."""
        return cls(
            timeout_s=settings.fetch_timeout_s,
            retries=settings.fetch_retries,
            concurrency=settings.fetch_concurrency,
            max_bytes=settings.fetch_max_bytes,
            user_agent=settings.user_agent,
            deadline_s=settings.fetch_deadline_s,
            retry_after_max_s=settings.fetch_retry_after_max_s,
            allow_private=settings.fetch_allow_private,
            allowed_hosts=tuple(settings.fetch_allowed_hosts),
            denied_hosts=tuple(settings.fetch_denied_hosts),
        )


class _Retryable(Exception):
    """A transient failure (I/O error, 5xx, 429): worth another try after a back-off."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Failed(Exception):
    """A permanent failure of this URL (bad redirect, invalid URL, ...): retrying cannot help."""


class _Gone(Exception):
    """HTTP 410 or 404 from the page itself: the server says it was removed (not retried)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _DeadlinePassed(Exception):
    """The URL's overall time budget ran out."""


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _markdown_path(url: str) -> bool:
    """Whether ``url``'s path names a markdown file (``.md``, ``.markdown``, any case)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return False
    return path.lower().endswith((".md", ".markdown"))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


#: What the client asks for, and all it decodes (``_Inflater``): never an encoding it could not check.
ACCEPT_ENCODING = "gzip, deflate"


class _Inflater:
    """Decode a gzip or deflate body as it arrives, and know whether the compressed stream really ended.

    httpx's own decoders cannot tell a stream cut short (a server dying mid-response) from a whole one,
    nor read a gzip body of several members: either was indexed as the whole page, its missing paragraphs
    deleted. Output is bounded per call, so a small compressed chunk cannot expand past the size limit.
    """

    def __init__(self, encoding: str) -> None:
        self.gzip = encoding in ("gzip", "x-gzip")
        self.raw_deflate = False  # deflate as sent by some servers: without its zlib header
        self.started = False
        self.trailing = False  # past the end of the last stream
        self.pending = b""  # the first byte of a next gzip member, whose second byte is in the next chunk
        self.d = self._new()

    def _new(self):
        return zlib.decompressobj(zlib.MAX_WBITS | 16 if self.gzip else -zlib.MAX_WBITS if self.raw_deflate
                                  else zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decoded bytes of ``data``: at most about ``limit`` (more means the body is over its limit)."""
        out, n = [], 0
        data, self.pending = self.pending + data, b""
        while data and n < limit and not self.trailing:
            if self.d.eof:
                if self.gzip and data == b"\x1f":  # a next member's magic cut between two chunks
                    self.pending = data
                    break
                if not (self.gzip and data[:2] == b"\x1f\x8b"):
                    # Bytes after a complete stream that begin no gzip member (zero padding, a server's junk):
                    # ignored, as browsers and curl ignore them. The page itself ended whole.
                    self.trailing = True
                    break
                self.d = self._new()  # RFC 1952: a gzip body may hold several members, one after another
            try:
                piece = self.d.decompress(data, limit - n)
            except zlib.error as exc:
                if self.gzip or self.started or self.raw_deflate:
                    raise _Failed(f"cannot decode the response's {'gzip' if self.gzip else 'deflate'} body: {exc}") from exc
                self.raw_deflate = True
                self.d = self._new()
                continue
            self.started = True
            out.append(piece)
            n += len(piece)
            data = self.d.unused_data if self.d.eof else self.d.unconsumed_tail
        return b"".join(out)

    def finish(self) -> bytes:
        """The last decoded bytes; a compressed stream that did not reach its end is this URL's failure."""
        if not self.started:
            return b""  # no body at all: the caller says "empty response"
        if not self.d.eof:
            raise _Failed(f"the response's {'gzip' if self.gzip else 'deflate'} body ends before its compressed stream "
                          "does (cut short in transfer?): the page is not indexed from it, and its indexed rows are kept")
        return self.d.flush()


def _inflater(resp: httpx.Response) -> _Inflater | None:
    """The decoder of the response's ``Content-Encoding`` (None: not encoded); one it cannot check fails."""
    header = resp.headers.get("content-encoding", "")
    encodings = [e.strip().lower() for e in header.split(",") if e.strip().lower() not in ("", "identity")]
    if not encodings:
        return None
    if len(encodings) > 1 or encodings[0] not in ("gzip", "x-gzip", "deflate"):
        raise _Failed(f"unsupported Content-Encoding {header!r} (corpus-search asks for {ACCEPT_ENCODING})")
    return _Inflater(encodings[0])


def _read_body(resp: httpx.Response, opts: HttpOptions, until: float) -> bytes:
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > opts.max_bytes:
        raise _Failed(f"response of {int(declared)} bytes exceeds the limit of {opts.max_bytes} (CORPUS_SEARCH_FETCH_MAX_BYTES)")
    inflater = _inflater(resp)
    chunks, size = [], 0

    def add(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > opts.max_bytes:
            raise _Failed(f"response exceeds the limit of {opts.max_bytes} bytes (CORPUS_SEARCH_FETCH_MAX_BYTES)")
        chunks.append(chunk)

    for raw in resp.iter_raw():
        add(inflater.feed(raw, opts.max_bytes - size + 1) if inflater else raw)
        if time.monotonic() > until:  # a drip must not be indexed truncated
            raise _DeadlinePassed
    if inflater:
        add(inflater.finish())
    return b"".join(chunks)


#: The statuses whose body is the page itself. 206 is a part of it (never asked for: no Range is sent);
#: 201, 202 and the like describe something else. Indexing either would replace the page's rows.
PAGE_STATUS = {200, 203}


def _article(url: str, source: str, resp: httpx.Response, opts: HttpOptions, until: float, conditional: bool,
             final: str | None = None) -> FetchOutcome:
    """The outcome of a final (non-redirect) response; ``final``: the URL it answered, when redirected there."""
    code = resp.status_code
    at = f" from {final}, where {url} redirects" if final and final != url else ""
    if code == 304:
        if not conditional:  # "unchanged" would keep rows the server never confirmed, or index nothing
            raise _Failed(f"HTTP 304 (not modified){at} to a request that was not conditional: the server sent no page; "
                          "any rows indexed before are kept")
        return NotModified(url, source)
    if code in RETRY_STATUS:
        after = parse_retry_after(resp.headers.get("retry-after")) if code in RETRY_AFTER_STATUS else None
        raise _Retryable(f"HTTP {code}{at}", retry_after=after)
    if code in (404, 410):
        if (final and final != url) or resp.headers.get("retry-after"):
            # Only the page's own word deletes it: a redirect (temporary or permanent, same site or not; an
            # http -> https one too, for now) that ends in a 410 or 404 says nothing of this URL for certain, and
            # one with Retry-After is no "gone". Such a URL keeps its rows, as a failed fetch does.
            raise _Failed(f"HTTP {code}{at}" + (" with Retry-After" if resp.headers.get("retry-after") else "")
                          + ": any rows indexed before are kept")
        if code == 410:
            raise _Gone("HTTP 410 (gone): the server says this page was removed", 410)
        raise _Gone("HTTP 404 (not found)", 404)
    if code == 206:
        raise _Failed(f"HTTP 206 (partial content){at}: a part of the page, not the page; any rows indexed before "
                      "are kept")
    if code not in PAGE_STATUS:
        raise _Failed(f"HTTP {code}{at}")
    # A repeated header arrives joined with commas ("text/html, text/html"): the last one is the server's
    # final word, as browsers read it.
    ctype = (resp.headers.get_list("content-type") or [None])[-1]
    media = _media_type(ctype)
    if media and media not in HTML_TYPES and media not in TEXT_TYPES:
        raise _Failed(f"unsupported content type {media!r} (expected HTML or text)")
    raw = _read_body(resp, opts, until)
    if not raw.strip():  # indexing it would delete the article's rows
        raise _Failed(f"empty response ({len(raw)} bytes){at}; any rows indexed before are kept")
    wide = wide_charset(ctype)  # declared utf-16/32 without a byte-order mark: its NUL bytes are text
    if why := binary_signature(raw, wide=wide):
        raise _Failed(f"binary content, not text ({why})")
    from tasks.html import decode_body

    kind = TEXT_TYPES.get(media, "html")
    if kind == "text" and _markdown_path(final or url):  # raw.githubusercontent.com serves .md as text/plain
        kind = "markdown"
    body = decode_body(raw, ctype, html=kind == "html")
    if why := binary_reason(raw, body, wide=wide):
        raise _Failed(f"binary content, not text ({why})")
    if not body.strip():
        raise _Failed(f"empty response (whitespace only){at}; any rows indexed before are kept")
    return Article(
        doc_id=url,
        source=url,  # what a user opens; the site (``source`` here) is the article's origin
        origin=source,
        title="",
        body=body,
        kind=kind,  # type: ignore[arg-type]
        etag=resp.headers.get("etag"),
        last_modified=resp.headers.get("last-modified"),
        final_url=final if final and final != url else None,
    )


_LOCATION = "x-corpus-search-location"


def _own_redirects(response: httpx.Response) -> None:
    """Response hook: hide ``Location`` from httpx, which otherwise parses it into a ``next_request``
    even with ``follow_redirects=False`` and raises on a bad one before we can check and report it."""
    if "location" in response.headers:
        response.headers[_LOCATION] = response.headers["location"]
        del response.headers["location"]


def _fetch_once(client: httpx.Client, url: str, source: str, state: ArticleState | None, opts: HttpOptions,
                until: float, resolve: Resolver) -> FetchOutcome:
    """One attempt: follow up to ``max_redirects`` redirects, checking every hop against the policy."""
    validators = {}
    if state is not None:
        if state.etag:
            validators["If-None-Match"] = state.etag
        if state.last_modified:
            validators["If-Modified-Since"] = state.last_modified
    # The stored validators are those of the URL that answered last time (the page itself, or where it
    # redirected then): sent to another resource, an older Last-Modified or a shared ETag may get a 304,
    # and a moved page would stay stale for good. A redirect that still leads there keeps its 304s.
    answered = validators_url(state.file_stamp if state is not None else None, url)
    current = url
    for _hop in range(opts.max_redirects + 1):
        headers = validators if current == answered else {}
        try:
            check_url(current, opts.policy, resolve)
        except OSError as exc:  # DNS failure: transient
            raise _Retryable(f"cannot resolve the host of {current}: {exc}") from exc
        left = until - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        try:
            with client.stream("GET", current, headers=headers, timeout=min(opts.timeout_s, left)) as resp:
                if resp.status_code in REDIRECT_STATUS:
                    location = resp.headers.get(_LOCATION) or resp.headers.get("location")
                    if not location:
                        raise _Failed(f"HTTP {resp.status_code} redirect without a Location header")
                    current = urljoin(current, location.strip())
                    continue
                return _article(url, source, resp, opts, until, conditional=bool(headers), final=current)
        except httpx.UnsupportedProtocol as exc:
            raise _Failed(f"unsupported URL scheme: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise _Failed(f"invalid URL: {exc}") from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            if time.monotonic() >= until:
                raise _DeadlinePassed from exc
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        except httpx.DecodingError as exc:
            raise _Failed(f"cannot decode the response: {exc}") from exc
    raise _Failed(f"too many redirects (more than {opts.max_redirects})")


def _safe_origin(url: str) -> str:
    try:
        return url_origin(url)
    except ValueError:  # an unparseable URL is its own source
        return url


def fetch_url(client: httpx.Client, url: str, state: ArticleState | None, opts: HttpOptions,
              *, resolve: Resolver = bounded_getaddrinfo) -> FetchOutcome:
    """GET one URL conditionally within ``opts.deadline_s``; retries transport errors, 5xx and 429
    with exponential back-off (or the server's ``Retry-After``). Never raises."""
    source = _safe_origin(url)
    until = time.monotonic() + opts.deadline_s
    expired = f"no complete response within the fetch deadline of {opts.deadline_s:g}s (CORPUS_SEARCH_FETCH_DEADLINE_S)"
    attempt = 0
    with deadline(until):
        while True:
            try:
                return _fetch_once(client, url, source, state, opts, until, resolve)
            except (Refused, _Failed) as exc:
                return FetchFailure(url, source, str(exc))
            except _Gone as exc:
                return Removed(url, source, str(exc), exc.status)
            except _DeadlinePassed:
                return FetchFailure(url, source, expired)
            except _Retryable as exc:
                if attempt >= opts.retries:
                    return FetchFailure(url, source, f"{exc} (after {attempt + 1} attempts)")
                delay = opts.backoff_s * 2**attempt
                if exc.retry_after is not None:
                    if exc.retry_after > opts.retry_after_max_s:
                        return FetchFailure(url, source, f"{exc}: the server asks to retry after {exc.retry_after:g}s, "
                                            f"more than CORPUS_SEARCH_FETCH_RETRY_AFTER_MAX_S={opts.retry_after_max_s:g}")
                    delay = exc.retry_after
                if time.monotonic() + delay >= until:
                    return FetchFailure(url, source, f"{exc}; a retry in {delay:g}s would pass the fetch deadline "
                                        f"of {opts.deadline_s:g}s (CORPUS_SEARCH_FETCH_DEADLINE_S)")
                log.warning("retrying %s in %.1fs (attempt %d of %d): %s", url, delay, attempt + 2, opts.retries + 1, exc)
                time.sleep(delay)
                attempt += 1
            except Exception as exc:  # anything else is this URL's failure, never the run's
                if time.monotonic() >= until:
                    return FetchFailure(url, source, expired)
                log.warning("fetching %s failed unexpectedly", url, exc_info=True)
                return FetchFailure(url, source, f"{type(exc).__name__}: {exc}")


def _fetch_guarded(client: httpx.Client, url: str, states: Mapping[str, ArticleState], opts: HttpOptions) -> FetchOutcome:
    """``fetch_url`` with even the state lookup inside the safety net (a bad URL can fail to parse)."""
    try:
        return fetch_url(client, url, states.get(article_key(_safe_origin(url), url)), opts)
    except Exception as exc:  # noqa: BLE001 - one URL never aborts the batch
        return FetchFailure(url, _safe_origin(url), f"{type(exc).__name__}: {exc}")


def fetch_urls(urls: Iterable[str], states: Mapping[str, ArticleState], opts: HttpOptions) -> list[FetchOutcome]:
    """Fetch ``urls`` with bounded concurrency; results keep the input order. Never raises per URL."""
    urls = list(urls)
    limits = httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency)
    with httpx.Client(
        timeout=httpx.Timeout(opts.timeout_s),
        limits=limits,
        follow_redirects=False,  # followed by _fetch_once, which checks every hop
        headers={"User-Agent": opts.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
        transport=guarded_transport(opts.policy, limits),
        event_hooks={"response": [_own_redirects]},
    ) as client:
        with ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
            # Each in a copy of this thread's context (its Prefect run): the pool's log lines ("retrying URL in
            # 2 s") reach the run's logs in the UI only through it.
            futures = [pool.submit(contextvars.copy_context().run, _fetch_guarded, client, url, states, opts)
                       for url in urls]
            return [f.result() for f in futures]
