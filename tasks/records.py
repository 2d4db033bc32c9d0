"""Plain records that flow between the stages. Data only: no models, tables or connections."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Literal

BodyKind = Literal["html", "markdown", "text", "paragraphs"]


def stable_hash(*parts: str, size: int = 16) -> str:
    """A short, stable hex digest of ``parts`` (separated so that ("ab", "c") != ("a", "bc"))."""
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (surrogate escapes) shown as ``\\xNN``.

    A file name that is not UTF-8 reaches Python as lone surrogates, which Arrow, JSON and the
    Prefect API all refuse; this keeps such names readable and distinct instead of failing the run.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (e.g. from a JSON "\\ud800")
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def article_key(source: str, doc_id: str) -> str:
    """The identity of an article within a collection."""
    return stable_hash(source, doc_id)


def now_utc() -> datetime:
    return datetime.now(UTC)


class _Keyed:
    """``key``: the article identity, from its ``origin`` (the root it was indexed through) and ``doc_id``.

    A failure or a 304 has no separate origin: its ``source`` names the root.
    """

    source: str
    doc_id: str

    @property
    def key(self) -> str:
        return article_key(getattr(self, "origin", "") or self.source, self.doc_id)


@dataclass
class Article(_Keyed):
    """One fetched document. ``body`` is HTML, markdown or text; ``paragraphs`` when the source pre-split it.

    ``source`` is what a user opens (the file's full path, the URL, a dump's path); ``origin`` is the
    root it was indexed through (a directory, a site, the dump); empty means the same as ``source``.
    """

    doc_id: str
    source: str
    title: str
    body: str
    kind: BodyKind
    fetched_at: datetime = field(default_factory=now_utc)
    etag: str | None = None
    last_modified: str | None = None
    paragraphs: list[str] | None = None
    #: What the article says about itself (author, keywords, a dump's or a record's own fields...): text
    #: values, kept on every paragraph row. Filled by the readers (HTML ``<meta>``, markdown front matter).
    metadata: dict[str, str] = field(default_factory=dict)
    #: When the article was published, if it says so (``article:published_time``, ``<time>``, ``date:``).
    published: datetime | None = None
    origin: str = ""
    #: Size, mtime and split settings of a local file when read; a page's split settings (``url_stamp``:
    #: its validators are sent only while they match) and the URL that answered it (``page_stamp``);
    #: ``None`` for other sources.
    file_stamp: str | None = None
    #: The URL that answered, when a redirect led there: the page's ETag and Last-Modified are its own.
    final_url: str | None = None
    #: Whether a missing title may be made from ``doc_id`` (a file or page name says what it holds; a
    #: record id such as "8841823" does not, and would be encoded in front of every passage).
    title_from_id: bool = True
    #: A dump line whose bytes were not all UTF-8: read with U+FFFD in their place (a notice says so).
    replaced_bytes: bool = False


@dataclass(frozen=True)
class FetchFailure(_Keyed):
    """A source or article that could not be fetched. Its previously indexed rows are kept."""

    doc_id: str
    source: str
    error: str
    #: The failure is one known article's (a dump record that parsed, with its id): its key keeps that
    #: article's rows, and the rest of its source is still judged for deletions. Else the source's reading
    #: is incomplete, and nothing of it is taken for deleted.
    keyed: bool = False


@dataclass(frozen=True)
class Removed(_Keyed):
    """A page its own server says is not there: HTTP 410 (gone for good), whose rows are deleted at the run's end,
    or 404 (not found), whose rows are deleted once it has answered 404 for ``not_found_grace_s`` (a 404 may be a
    passing mistake); both under the run's mass-delete guards."""

    doc_id: str
    source: str
    error: str
    status: int = 410


@dataclass(frozen=True)
class NotModified(_Keyed):
    """An article the server says is unchanged (HTTP 304): no download, no encoding."""

    doc_id: str
    source: str
    #: A file listed, then removed before it was read (an editor's temporary file, a sync in progress): no
    #: failure and nothing to index; its rows, if any, stay until a run no longer lists it.
    gone: bool = False


@dataclass(frozen=True)
class Paragraph:
    """One paragraph of an article, ready to be encoded. ``encoded`` is the exact text given to the encoder."""

    id: str
    doc_id: str
    source: str
    title: str
    position: int
    text: str
    encoded: str
    content_hash: str
    #: The article's metadata and publication time, repeated on each of its paragraphs (filterable per row).
    metadata: dict[str, str] | None = None
    published: datetime | None = None
    origin: str = ""  # the article's origin (empty: the same as source)


@dataclass(frozen=True)
class ArticleState:
    """What the index remembers of an article: enough for conditional re-fetching."""

    key: str
    doc_id: str
    source: str
    body_hash: str
    etag: str | None
    last_modified: str | None
    origin: str = ""
    file_stamp: str | None = None
    paragraphs: int = 0  # rows it holds: an article that now makes none must not silently lose them
    title: str | None = None  # as indexed: a page that comes back as an error page has another one


#: The articles-table columns an ``ArticleState`` is read from.
STATE_COLUMNS = [f.name for f in fields(ArticleState)]
#: The same for the whole collection at once (an index run's start): the titles, which only a batch's split
#: reads (``tasks.stages.error_page``), would hold every article's title in the flow's memory for the run.
COLLECTION_STATE_COLUMNS = [c for c in STATE_COLUMNS if c != "title"]
