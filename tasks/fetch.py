"""Sources → Article records: http(s) URLs (httpx), local files and directories, JSONL dumps.

Pure functions over plain data; the Prefect shells live in ``tasks/stages.py``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from tasks.records import Article, ArticleState, FetchFailure, NotModified, article_key

log = logging.getLogger(__name__)

LOCAL_SUFFIXES = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown", ".txt": "text"}
HTML_TYPES = {"text/html", "application/xhtml+xml"}
TEXT_TYPES = {"text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown"}
RETRY_STATUS = {429, 500, 502, 503, 504}

SourceKind = Literal["url", "file", "directory", "jsonl"]
FetchOutcome = Article | NotModified | FetchFailure


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source argument. ``root`` is what the rows' ``source`` column holds for local sources."""

    spec: str
    kind: SourceKind
    root: str

    @property
    def enumerable(self) -> bool:
        """True when one run sees every article of the source, so vanished articles can be deleted."""
        return self.kind != "url"


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, drop the fragment and default ports: one URL, one doc_id."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


def url_origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


def classify_source(spec: str) -> SourceSpec:
    """Say what kind of source ``spec`` is. Unknown URL schemes and missing paths are clear errors."""
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"source {spec!r}: only http:// and https:// URLs are fetched (got {scheme}://)")
        url = canonical_url(spec)
        return SourceSpec(url, "url", url_origin(url))
    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(f"source {spec!r} does not exist: give a URL, a directory, a file, or a .jsonl(.gz) dump")
    root = str(path.resolve())
    if path.is_dir():
        return SourceSpec(spec, "directory", root)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return SourceSpec(spec, "jsonl", root)
    if path.suffix.lower() in LOCAL_SUFFIXES:
        return SourceSpec(spec, "file", root)
    raise ValueError(
        f"source {spec!r}: unsupported file type {path.suffix!r}; "
        f"supported: {', '.join(sorted(LOCAL_SUFFIXES))}, .jsonl, .jsonl.gz"
    )


# --------------------------------------------------------------------------- local files


def read_local_file(path: Path, *, doc_id: str, source: str) -> Article | FetchFailure:
    """Read one local file as an Article (bytes are decoded later, with charset detection for HTML)."""
    kind = LOCAL_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        return FetchFailure(doc_id, source, f"unsupported file type {path.suffix!r}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return FetchFailure(doc_id, source, f"cannot read {path}: {exc.strerror or exc}")
    if kind == "html":
        from tasks.html import decode_body

        body = decode_body(raw)
    else:
        body = raw.decode("utf-8", errors="replace")
    return Article(doc_id=doc_id, source=source, title="", body=body, kind=kind)  # type: ignore[arg-type]


def list_directory(root: Path) -> list[str]:
    """Relative POSIX paths of every supported file under ``root``, sorted; hidden files and folders skipped."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in LOCAL_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)  # .git and friends
    )


def iter_directory(spec: SourceSpec) -> Iterator[Article | FetchFailure]:
    """Every supported file under the directory, in a stable order; doc_id is the relative POSIX path."""
    root = Path(spec.root)
    for rel in list_directory(root):
        yield read_local_file(root / rel, doc_id=rel, source=spec.root)


# --------------------------------------------------------------------------- JSONL dumps


def open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by the caller


def parse_dump_line(obj: Mapping, *, source: str) -> Article:
    """One JSONL record → Article. Two formats: Simple-Wikipedia (title, paragraphs) and BEIR (_id, title, text)."""
    if "paragraphs" in obj:
        paragraphs = obj["paragraphs"]
        if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
            raise ValueError("'paragraphs' must be a list of strings")
        title = str(obj.get("title") or "")
        doc_id = str(obj.get("id") or obj.get("_id") or title)
        if not doc_id:
            raise ValueError("a record needs 'id' or 'title'")
        return Article(doc_id, source, title, "\n\n".join(paragraphs), "paragraphs", paragraphs=list(paragraphs))
    if "text" in obj and ("_id" in obj or "id" in obj):
        doc_id = str(obj.get("_id", obj.get("id")))
        text = obj["text"]
        if not isinstance(text, str):
            raise ValueError("'text' must be a string")
        return Article(doc_id, source, str(obj.get("title") or ""), text, "text")
    raise ValueError(
        "unknown record format: expected {'title', 'paragraphs': [...]} (Simple Wikipedia) "
        "or {'_id', 'title', 'text'} (BEIR corpus.jsonl)"
    )


def parse_dump_lines(spec: SourceSpec, lines: Iterable[tuple[int, str]]) -> list[Article | FetchFailure]:
    """Parse numbered JSONL lines of a dump; a malformed line becomes a failure naming file:line."""
    path = Path(spec.root)
    out: list[Article | FetchFailure] = []
    for lineno, line in lines:
        try:
            out.append(parse_dump_line(json.loads(line), source=spec.root))
        except (ValueError, TypeError) as exc:
            out.append(FetchFailure(f"{path.name}:{lineno}", spec.root, f"{path}:{lineno}: {exc}"))
    return out


def iter_jsonl(spec: SourceSpec) -> Iterator[Article | FetchFailure]:
    """Stream a JSONL dump (plain or .gz) without loading it whole."""
    with open_text(Path(spec.root)) as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield from parse_dump_lines(spec, [(lineno, line)])


def iter_local_source(spec: SourceSpec) -> Iterator[Article | FetchFailure]:
    """Enumerate a local source (file, directory or dump)."""
    if spec.kind == "directory":
        yield from iter_directory(spec)
    elif spec.kind == "jsonl":
        yield from iter_jsonl(spec)
    elif spec.kind == "file":
        path = Path(spec.root)
        yield read_local_file(path, doc_id=path.name, source=spec.root)
    else:
        raise ValueError(f"{spec.spec!r} is not a local source")


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HttpOptions:
    timeout_s: float = 20.0
    retries: int = 3
    concurrency: int = 8
    max_bytes: int = 10 * 1024 * 1024
    user_agent: str = "corpus-search"
    backoff_s: float = 0.5

    @classmethod
    def from_settings(cls, settings) -> HttpOptions:
        """The fetch options of a ``query.settings.Settings``."""
        return cls(
            timeout_s=settings.fetch_timeout_s,
            retries=settings.fetch_retries,
            concurrency=settings.fetch_concurrency,
            max_bytes=settings.fetch_max_bytes,
            user_agent=settings.user_agent,
        )


class _Retryable(Exception):
    """A transient failure (I/O error, 5xx, 429): worth another try after a back-off."""


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _fetch_once(client: httpx.Client, url: str, state: ArticleState | None, opts: HttpOptions) -> FetchOutcome:
    source = url_origin(url)
    headers = {}
    if state is not None:
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
    try:
        with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 304:
                return NotModified(url, source)
            if resp.status_code in RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code}")
            if resp.status_code >= 400:
                return FetchFailure(url, source, f"HTTP {resp.status_code}")
            ctype = resp.headers.get("content-type")
            media = _media_type(ctype)
            if media and media not in HTML_TYPES and media not in TEXT_TYPES:
                return FetchFailure(url, source, f"unsupported content type {media!r} (expected HTML or text)")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > opts.max_bytes:
                return FetchFailure(url, source, f"response of {int(declared)} bytes exceeds the limit of {opts.max_bytes}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > opts.max_bytes:
                    return FetchFailure(url, source, f"response exceeds the limit of {opts.max_bytes} bytes")
                chunks.append(chunk)
            raw = b"".join(chunks)
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
    if media in TEXT_TYPES:
        kind, body = TEXT_TYPES[media], raw.decode(resp.charset_encoding or "utf-8", errors="replace")
    else:
        from tasks.html import decode_body

        kind, body = "html", decode_body(raw, ctype)
    return Article(
        doc_id=url,
        source=source,
        title="",
        body=body,
        kind=kind,  # type: ignore[arg-type]
        etag=resp.headers.get("etag"),
        last_modified=resp.headers.get("last-modified"),
    )


def fetch_url(client: httpx.Client, url: str, state: ArticleState | None, opts: HttpOptions) -> FetchOutcome:
    """GET one URL conditionally, retrying I/O errors and 5xx with exponential back-off."""
    attempt = 0
    while True:
        try:
            return _fetch_once(client, url, state, opts)
        except _Retryable as exc:
            if attempt >= opts.retries:
                return FetchFailure(url, url_origin(url), f"{exc} (after {attempt + 1} attempts)")
            delay = opts.backoff_s * 2**attempt
            log.info("retrying %s in %.1fs: %s", url, delay, exc)
            time.sleep(delay)
            attempt += 1


def fetch_urls(urls: Iterable[str], states: Mapping[str, ArticleState], opts: HttpOptions) -> list[FetchOutcome]:
    """Fetch ``urls`` with bounded concurrency; results keep the input order. Never raises per URL."""
    urls = list(urls)
    limits = httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency)
    with httpx.Client(
        timeout=httpx.Timeout(opts.timeout_s),
        limits=limits,
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": opts.user_agent},
    ) as client:
        with ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
            futures = [
                pool.submit(fetch_url, client, url, states.get(article_key(url_origin(url), url)), opts)
                for url in urls
            ]
            return [f.result() for f in futures]
