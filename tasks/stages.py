"""Thin Prefect task shells over the pure stage functions. Retries go on fetching only.

No task takes or returns a model, table or connection: each loads what it needs lazily,
once per process, from ``query.models`` and ``tasks.store``.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from query.filters import in_list
from query.models import bi_encoder_from_settings, canonical_model_name
from query.schema import IndexMetadata, articles_table_name, check_compatible
from query.settings import Settings
from tasks import heap, store, versions
from tasks.encode import encode_in_chunks, encode_step, slice_bounds
from tasks.fetch import (
    HttpOptions,
    SourceSpec,
    fetch_urls,
    parse_dump_lines,
    read_local_file,
    vanished,
)
from tasks.records import (
    Article,
    ArticleState,
    FetchFailure,
    NotModified,
    Paragraph,
    Removed,
    STATE_COLUMNS,
    article_key,
    printable,
    stable_hash,
)
from tasks.split import (
    SPLIT_RULES,
    SplitOptions,
    body_fingerprint,
    split_article,
    tokenizer_counter,
)
from query.storage import table_names
from tasks.meta import unread_published
from tasks.urls import page_stamp, stamp_settings

# Inputs are large batches: hashing them for a cache key would cost more than the work.
stage = functools.partial(task, cache_policy=NO_CACHE, persist_result=False)


def index_metadata(settings: Settings) -> IndexMetadata:
    enc = bi_encoder_from_settings(settings)
    return IndexMetadata(encoder=enc.name, dim=enc.dim, normalized=True, encode_title=settings.encode_title,
                         max_seq_length=enc.max_seq_length)


def split_options(settings: Settings, max_tokens: int | None = None) -> SplitOptions:
    """How articles are split; ``max_tokens`` (the encoder's limit) is read from the model when not given."""
    return SplitOptions(
        max_tokens=max_tokens or bi_encoder_from_settings(settings).max_seq_length,
        min_chars=settings.min_paragraph_chars,
        encode_title=settings.encode_title,
        main_content=settings.main_content,
        unit=settings.split_unit,
    )


_CONNECTIONS: dict[tuple[str, tuple], object] = {}


def _db(settings: Settings):
    """This process's connection to the settings' database, opened once per (URI, storage options): a Dask
    worker's settings carry the options of the process that sent them."""
    from query.storage import storage_options

    key = (settings.db_uri, tuple(sorted(storage_options(settings).items())))
    if key not in _CONNECTIONS:
        _CONNECTIONS[key] = store.connect(settings.db_uri, settings)
    return _CONNECTIONS[key]


def paragraph_table(settings: Settings, meta: IndexMetadata | None = None):
    """The collection's paragraph table, created if missing; ``meta`` (the encoder's metadata, as an encode
    shard reports it) spares the caller loading the encoder itself."""
    return store.open_paragraph_table(_db(settings), settings.collection, meta or index_metadata(settings),
                                      db_uri=settings.db_uri)


def collection_exists(settings: Settings) -> bool:
    """Whether the settings' collection has been made (without making it)."""
    return settings.collection in table_names(_db(settings))


def existing_table(settings: Settings):
    """The collection's paragraph table if it exists, checked for its schema version only.

    Counting and index upkeep need no bi-encoder: a run with nothing to encode never loads one. The
    configured encoder's name must still be the table's (a run with another one is refused at once).
    """
    table = store.open_existing_table(_db(settings), settings.collection, db_uri=settings.db_uri)
    if table is not None:
        stored = IndexMetadata.from_schema(table.schema, table=settings.collection)
        if canonical_model_name(settings.bi_encoder) != stored.encoder:
            check_compatible(stored, replace(stored, encoder=canonical_model_name(settings.bi_encoder)),
                             collection=settings.collection)
    return table


def _split_inputs(settings: Settings) -> tuple[str, ...]:
    """Every setting that shapes an article's paragraphs (a changed one re-splits it, as ``body_fingerprint`` would)."""
    return (settings.bi_encoder, str(settings.min_paragraph_chars), str(settings.encode_title),
            str(settings.main_content), settings.split_unit, SPLIT_RULES)


def file_stamp(info, settings: Settings) -> str:
    """What must be unchanged for a local file to be skipped unread: its size and mtime, and the split inputs."""
    return stable_hash(str(info.st_size), str(info.st_mtime_ns), *_split_inputs(settings))


def url_stamp(settings: Settings) -> str:
    """What must be unchanged for a page to be fetched conditionally: the split inputs. A 304 skips the
    split, so a page indexed under other settings (or older split rules) is fetched whole, once."""
    return stable_hash("url", *_split_inputs(settings))


# --------------------------------------------------------------------------- fetch


# No task retries here: fetch_urls retries each URL itself (transport errors, 5xx, 429 with Retry-After,
# within a per-URL deadline) and makes every other per-URL error that URL's failure. A task retry would
# re-fetch the whole batch, and could only repeat a bug. One retry mechanism, per URL.
@stage(name="fetch-urls")
def fetch_url_batch(urls: list[str], states: dict[str, ArticleState], settings: Settings) -> list:
    """Download a batch of URLs (bounded concurrency, conditional, each URL retried with back-off)."""
    return fetch_urls(urls, states, HttpOptions.from_settings(settings))


@dataclass(frozen=True)
class FileUnit:
    """One local file to read: its path under the source root, its full path as rows name it
    (``source``, printable), and the identity it is stored under (``doc_id`` and ``origin``: those of
    the root that first indexed it, when roots overlap)."""

    path: str
    source: str
    doc_id: str
    origin: str


def read_files(spec: SourceSpec, units: list[FileUnit], stamps: dict[str, str], settings: Settings) -> list:
    """Read a batch of local files of a file or directory source (size-capped, binary sniffed).

    A file whose size, mtime and split settings match its stored stamp (``stamps``, by article key)
    is not read at all: it comes back as ``NotModified``.
    """
    cap = settings.fetch_max_bytes
    root = Path(spec.root)
    out: list = []
    for unit in units:
        # The path opens the file; the row names it printably (a non-UTF-8 name cannot be stored as is).
        path = root if spec.kind == "file" else root / unit.path
        try:
            stamp = file_stamp(path.stat(), settings)
        except OSError:
            stamp = None  # read_local_file reports why
        if stamp is not None and stamps.get(article_key(unit.origin, unit.doc_id)) == stamp:
            out.append(NotModified(unit.doc_id, unit.origin))
            continue
        outcome = read_local_file(path, doc_id=unit.doc_id, source=unit.source, max_bytes=cap, origin=unit.origin)
        if isinstance(outcome, FetchFailure) and spec.kind == "directory" and vanished(path) and not vanished(root):
            # Removed since the folder was listed: gone, not broken (a cron job must not hear "failed" for
            # an editor's temporary file). A file given by name is a source, and a root that went away an
            # unmounted disk: their absence stays a failure.
            outcome = NotModified(unit.doc_id, unit.origin, gone=True)
        if isinstance(outcome, Article):
            outcome.file_stamp = stamp
        out.append(outcome)
    return out


read_file_batch = stage(read_files, name="read-files", retries=1, retry_delay_seconds=1)


@stage(name="read-dump")
def parse_dump_batch(spec: SourceSpec, lines: list[tuple[int, str]], settings: Settings) -> list:
    """Parse a batch of JSONL dump lines; a malformed line is a failure that names file and line."""
    named = SourceSpec(spec.spec, spec.kind, printable(spec.root), spec.origin)
    return parse_dump_lines(named, lines, max_bytes=settings.fetch_max_bytes)


# --------------------------------------------------------------------------- split


@dataclass
class SplitResult:
    paragraphs: list[Paragraph] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)  # article-state rows of changed articles
    unchanged: int = 0
    failed: list[FetchFailure] = field(default_factory=list)
    # key -> state columns to update of unchanged articles: a touched file's stamp, a page's new validators
    restamp: dict[str, dict[str, str | None]] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # doc ids of new articles with no text to index
    error_pages: list[str] = field(default_factory=list)  # new pages that look like error or sign-in pages
    # (doc id, "key: value") of changed articles whose publication date could not be read: indexed without
    # ``published``, so a ``published`` filter never matches them; the run says so.
    undated: list[tuple[str, str]] = field(default_factory=list)
    # The encoder's token limit, learnt from the model for an older table that does not store it yet: the
    # writer stores it (a split never writes), so later runs with nothing to do need no model.
    remember_max_tokens: int | None = None


#: Titles (or one part of a title: "Page not found | Example") of the pages a server sends in place of an
#: article with status 200: a soft 404, a sign-in wall, a bot challenge. Whole parts only, lower-case.
ERROR_TITLES = frozenset({
    "not found", "page not found", "404 not found", "error", "access denied", "forbidden", "unauthorized",
    "sign in", "sign-in", "log in", "login", "log on", "please sign in", "please log in", "just a moment...",
    "attention required!", "service unavailable", "internal server error", "bad gateway", "site maintenance",
    "service temporarily unavailable", "temporarily unavailable", "gateway timeout", "gateway time-out",
    "too many requests", "under maintenance", "down for maintenance",
})
# "404", "Error 503", "503 Service Unavailable", "HTTP 404 - Not Found" (but not "500 Days of Summer")
_STATUS_TITLE = re.compile(r"(?:error\s+|http\s+)?[45]\d\d(?:\s*(?:error|not found|forbidden|unauthori[sz]ed|gone|"
                           r"bad request|bad gateway|gateway time-?out|service (?:temporarily )?unavailable|"
                           r"internal server error|too many requests|backend fetch failed|request time-?out|"
                           r"method not allowed|payload too large|request entity too large)\b.*)?", re.I)
_TITLE_PARTS = re.compile(r"\s+[|\-–—:·•»]\s+")
#: An error page is short: a real article about signing in, titled "Login | Docs", is longer than this.
ERROR_PAGE_MAX_CHARS = 600


def error_page(article: Article, paragraphs: list[Paragraph], indexed_title: str | None = None) -> str | None:
    """Why a fetched page is a server's error or sign-in page rather than the indexed article (None: it is not).

    Served with status 200 (or reached through a redirect to a sign-in form), such a page replaced an
    indexed article's paragraphs with one junk row, outcome ok. It is that URL's failure instead, its rows
    kept. Only a page whose title changed from ``indexed_title`` is judged: a real short page titled "Error
    404" (a song) or "Login" (an API's doc) keeps its title, and is indexed, and updated, as any other.
    """
    if "://" not in article.doc_id or article.kind != "html":
        return None
    title = (paragraphs[0].title if paragraphs else article.title).strip()
    if not title or title == (indexed_title or "").strip() or sum(len(p.text) for p in paragraphs) > ERROR_PAGE_MAX_CHARS:
        return None
    parts = [p.strip().lower() for p in _TITLE_PARTS.split(title)]
    if any(p in ERROR_TITLES or _STATUS_TITLE.fullmatch(p) for p in parts):
        return (f"the server sent an error or sign-in page, not the article (title {title!r}, "
                f"{sum(len(p.text) for p in paragraphs)} characters of text): not indexed, and any rows indexed before are kept")
    return None


def split_articles(articles: list[Article], states: Mapping[str, ArticleState], settings: Settings) -> SplitResult:
    """Split the articles whose content fingerprint changed from their stored state (``states``, by key);
    count the others as unchanged. Writes nothing.

    An unchanged article whose file stamp or validators (ETag, Last-Modified) differ from the stored ones gets
    them updated (``restamp``), so the next run can skip it unread (a file) or get a 304 (a page whose server
    changed its ETag but not its text would otherwise be downloaded on every run).

    An article that held paragraphs and now makes none (a file emptied by a crashed editor, a failed sync or
    a full disk), or a page turned into a server's error or sign-in page (:func:`error_page`), is a failure
    that keeps them: deletions need evidence, and neither is evidence that its text should go.
    """
    result = SplitResult()
    if not articles:  # nothing read: no tokenizer, no model
        return result
    # The stored token limit of the collection's encoder (the encoder itself is checked against the
    # table when anything is written), so that unchanged articles cost no model load.
    table = existing_table(settings)
    stored = IndexMetadata.from_schema(table.schema).max_seq_length if table is not None else None
    opts = split_options(settings, stored)
    if table is not None and stored is None:
        result.remember_max_tokens = opts.max_tokens  # an older table: learnt once, from the model
    counter: list = []

    def count(texts):
        if not counter:
            counter.append(counting_tokenizer(settings))
        return counter[0](texts)

    for article in articles:
        fingerprint = body_fingerprint(article, opts)
        stored = states.get(article.key)
        if stored is not None and stored.body_hash == fingerprint:
            result.unchanged += 1
            update: dict[str, str | None] = {}
            if article.file_stamp is not None and stored.file_stamp != article.file_stamp:
                update["file_stamp"] = article.file_stamp  # touched, not changed: skip it unread next time
            # The response's own validators, none included: a page that now answers from another URL (its
            # redirect moved) without an ETag must not keep the old URL's, sent to the new one next time.
            if (stored.etag, stored.last_modified) != (article.etag, article.last_modified):
                update |= {"etag": article.etag, "last_modified": article.last_modified}
            if update:
                result.restamp[article.key] = update
            continue
        try:
            paragraphs = split_article(article, opts, count)
        except Exception as exc:  # noqa: BLE001 - one bad article must not stop the batch
            result.failed.append(FetchFailure(article.doc_id, article.source, f"cannot split: {exc}"))
            continue
        held = stored.paragraphs if stored is not None else 0
        if why := error_page(article, paragraphs, stored.title if stored is not None else None):
            if held:
                result.failed.append(FetchFailure(article.doc_id, article.source, why))
                continue
            result.error_pages.append(article.doc_id)  # new: indexed as it is (it may be the page), and said
        if not paragraphs and held:
            result.failed.append(FetchFailure(
                article.doc_id, article.source,
                f"no text any more (emptied?): its {held} indexed paragraphs are kept. To delete "
                "them, remove it from its source or use corpus-search delete"))
            continue
        if not paragraphs:
            result.empty.append(article.doc_id)
        result.paragraphs.extend(paragraphs)
        # What the split read (front matter lives in the body) or the reader gave (a record's fields); a
        # page's own <meta> dates are its site's business, not the user's, and often junk.
        metadata, published = (paragraphs[0].metadata, paragraphs[0].published) if paragraphs else \
            (article.metadata, article.published)
        if article.kind != "html" and published is None and metadata and (raw := unread_published(metadata)):
            result.undated.append((article.doc_id, raw))
        result.changed.append(
            {
                "key": article.key,
                "doc_id": article.doc_id,
                "source": article.source,
                "title": paragraphs[0].title if paragraphs else article.title,
                "body_hash": fingerprint,
                "etag": article.etag,
                "last_modified": article.last_modified,
                "paragraphs": len(paragraphs),
                "fetched_at": article.fetched_at,
                "origin": article.origin or article.source,
                "file_stamp": article.file_stamp,
            }
        )
    return result


split_batch = stage(split_articles, name="split")

#: One lock per process around the counting tokenizer: a split shard may run beside another one.
_count_lock = threading.Lock()
_counters: dict[int, object] = {}


def counting_tokenizer(settings: Settings):
    """A token counter over a private copy of the encoder's tokenizer (one per process and encoder).

    A copy, because a fast tokenizer is one Rust object that each call re-configures (truncation on to
    encode, off to count): counting in a split shard while the encode shard of the previous batch runs in
    another thread would fail with "Already borrowed".
    """
    encoder = bi_encoder_from_settings(settings)
    with _count_lock:
        if id(encoder) not in _counters:
            _counters[id(encoder)] = tokenizer_counter(copy.deepcopy(encoder.tokenizer))
        count = _counters[id(encoder)]

    def locked(texts):
        with _count_lock:
            return count(texts)

    def token_spans(text):  # text without spaces is cut from one tokenisation (tasks.split._cut_at_spans)
        with _count_lock:
            return count.token_spans(text)

    locked.token_spans = token_spans
    return locked


# --------------------------------------------------------------------------- plan / encode / write


def plan_paragraphs(paragraphs: list[Paragraph], changed: list[dict], settings: Settings) -> store.BatchPlan:
    """Which paragraphs are new (to insert: encoded, or their vector copied), moved (update position only)
    or vanished (delete).

    Reads the table (when there is one) and writes nothing: every paragraph of a new collection is new.
    """
    table = existing_table(settings)
    plan = store.BatchPlan()
    if table is None:
        plan.new = list(paragraphs)
        plan.settle({})
        return plan
    by_origin: dict[str, list[str]] = {}
    for row in changed:
        by_origin.setdefault(row["origin"], []).append(row["doc_id"])
    for origin, doc_ids in by_origin.items():
        existing = store.existing_rows(table, origin, doc_ids)
        part = store.plan_batch([p for p in paragraphs if p.origin == origin], existing, doc_ids)
        plan.new += part.new
        plan.moved += part.moved
        plan.deleted_ids += part.deleted_ids
        plan.unchanged += part.unchanged
    # A renamed or moved file, or a paragraph another article holds too: its vector is in the table already.
    plan.settle(store.vectors_by_content(table, (p.content_hash for p in plan.new)))
    return plan


plan_writes = stage(plan_paragraphs, name="plan-writes")


@stage(name="encode")
def encode_paragraphs(texts: list[str], settings: Settings) -> tuple[np.ndarray, float]:
    """Encode texts in bounded chunks; returns the vectors and the seconds spent encoding."""
    return encode_in_chunks(bi_encoder_from_settings(settings), texts, settings.encode_chunk_size)


# --------------------------------------------------------------------------- shards: prepare and encode
#
# An index run's batches go through two shards that never write, then through the flow, which alone writes
# (in batch order, under the writer lock). Shards may run in threads beside each other or on Dask workers;
# a shard that is run again (a retry, a dead worker) can therefore never duplicate a row.


class PreparedBatch:
    """One batch read, split and compared with the table, nothing written yet (the result of ``prepare``).

    A plain class, not a dataclass: Prefect walks dataclasses and lists it finds in a task's inputs, and
    passing this (thousands of paragraphs) from the prepare shard to the encode shard must cost nothing.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []  # article key of every outcome kept, in order (failures included)
        self.any_failed = False  # some unit could not be read or parsed (before duplicates were dropped)
        self.duplicates: list[str] = []  # doc ids of later copies of an article already in this batch
        self.failed: list[tuple[str, str]] = []  # (doc id, error): unreadable units, unsplittable articles
        self.unchanged = 0  # not modified (HTTP 304, stamp) or same fingerprint
        #: Whether the process that prepared it saw the collection's article table: a Dask worker on another
        #: machine, given a local ``--db`` path, sees none, and would re-encode everything and delete nothing.
        self.saw_articles_table = False
        #: Doc ids of dump records read with U+FFFD for bytes that were not UTF-8.
        self.not_utf8: list[str] = []
        #: Doc ids of files removed between the folder's listing and their reading.
        self.gone: list[str] = []
        #: (origin, doc id) of indexed pages whose server said they were removed for good (HTTP 410).
        self.removed: list[tuple[str, str]] = []
        #: (origin, doc id, error) of indexed pages that answered HTTP 404: the flow deletes them after a grace.
        self.not_found: list[tuple[str, str, str]] = []
        self.split = SplitResult()
        self.plan = store.BatchPlan()

    @property
    def texts(self) -> list[str]:
        """What the encode shard encodes: the texts of the new paragraphs whose vectors are not copied."""
        return [p.encoded for p in self.plan.to_encode()]

    def release(self) -> None:
        """Drop the paragraphs once the batch is written (see ``release_batch``)."""
        self.split, self.plan, self.keys, self.failed = SplitResult(), store.BatchPlan(), [], []


class Encoded:
    """The encode shard's result: vectors of a batch's new paragraphs, the seconds it took, and the
    encoder's metadata (so that the writer opens the table without loading the model itself)."""

    def __init__(self, vectors: np.ndarray, seconds: float, meta: IndexMetadata | None) -> None:
        self.vectors, self.seconds, self.meta = vectors, seconds, meta

    def release(self) -> None:
        """Drop the vectors once the batch is written (see ``release_batch``)."""
        self.vectors = np.empty((0, 0), dtype=np.float32)


def articles_table_present(settings: Settings) -> bool:
    """Whether this process sees the collection's article table (one listing of the database)."""
    return articles_table_name(settings.collection) in table_names(_db(settings))


def stored_states(settings: Settings, column: str, values: list[str], present: bool | None = None
                  ) -> dict[str, ArticleState]:
    """The remembered state of some articles only (``column``: ``key``, or ``doc_id`` for URLs), by article key.

    A shard reads what it needs from the table instead of receiving the whole collection's state: on a
    Dask cluster, every batch would otherwise ship it to a worker. ``present``: what
    :func:`articles_table_present` said, when the caller already asked.
    """
    db = _db(settings)
    name = articles_table_name(settings.collection)
    if not values or not (articles_table_present(settings) if present is None else present):
        return {}
    table = db.open_table(name)
    out: dict[str, ArticleState] = {}
    for chunk in store.chunks(list(dict.fromkeys(values))):
        rows = table.search().where(in_list(column, chunk)).select(STATE_COLUMNS).limit(None).to_arrow()
        out.update({r["key"]: ArticleState(**r) for r in rows.to_pylist()})
    return out


def load_units(spec: SourceSpec, units: list, settings: Settings, present: bool | None = None
               ) -> tuple[list, dict[str, ArticleState] | None]:
    """Fetch, read or parse one batch of work units (URLs, ``FileUnit`` s, dump lines) into outcomes.

    Also returns the stored states of the batch's articles when loading needed them (None for a dump,
    whose article keys are known only once its lines are parsed).
    """
    if spec.kind == "url":
        # A URL article's doc id is its URL (its key also names its origin, which only fetching tells).
        states = stored_states(settings, "doc_id", list(units), present)
        stamp = url_stamp(settings)
        # Validators are sent only for pages split under these settings: a 304 would skip their new split.
        outcomes = fetch_urls(units, {k: s for k, s in states.items() if stamp_settings(s.file_stamp) == stamp},
                              HttpOptions.from_settings(settings))
        for o in outcomes:
            if isinstance(o, Article):
                o.file_stamp = page_stamp(stamp, o.final_url)
        return outcomes, states
    if spec.kind == "jsonl":
        named = SourceSpec(spec.spec, spec.kind, printable(spec.root), spec.origin)
        return parse_dump_lines(named, units, max_bytes=settings.fetch_max_bytes), None
    states = stored_states(settings, "key", [article_key(u.origin, u.doc_id) for u in units], present)
    return read_files(spec, units, {k: s.file_stamp for k, s in states.items() if s.file_stamp}, settings), states


class BatchWork:
    """One batch's work as the prepare shard gets it: ``spec``'s work ``units`` (URLs, ``FileUnit`` s or
    dump lines) and the article keys to skip. A plain class: neither Prefect nor Dask walks (or rewrites:
    Dask takes tuples for tasks) the thousands of units inside it."""

    def __init__(self, spec: SourceSpec, units: list, skip_keys: frozenset[str] = frozenset()) -> None:
        self.spec, self.units, self.skip_keys = spec, units, skip_keys


def release_batch(units: list, *results: PreparedBatch | Encoded) -> None:
    """Empty a written batch's work units and shard results in place.

    Prefect's task-run machinery keeps a task's parameters and result in reference cycles, which only
    Python's rare full garbage collection frees: without this, the lines, paragraphs and vectors of every
    batch of a run stayed in memory until the end of the run (measured: +2.8 MB per 512-paragraph batch).
    """
    units.clear()
    for result in results:
        result.release()
    heap.trim()


def prepare(work: BatchWork, settings: Settings) -> PreparedBatch:
    """Fetch/read/parse, split and plan one batch; write nothing.

    Later copies of an article already in this batch (a dump that repeats an id), and articles whose key
    is in ``work.skip_keys`` (seen in an earlier batch), are dropped and listed in ``duplicates``.
    """
    spec, skip_keys = work.spec, work.skip_keys
    out = PreparedBatch()
    out.saw_articles_table = articles_table_present(settings)  # one listing serves the states' reads too
    seen: set[str] = set()
    articles: list[Article] = []
    outcomes, states = load_units(spec, work.units, settings, out.saw_articles_table)
    for o in outcomes:
        if isinstance(o, FetchFailure) and not o.keyed:
            out.any_failed = True
        if spec.kind == "jsonl" and (o.key in seen or o.key in skip_keys):
            out.duplicates.append(o.doc_id)
            continue
        if not (isinstance(o, FetchFailure) and o.keyed):  # a failed copy does not hide a later good one
            seen.add(o.key)
        out.keys.append(o.key)
        if isinstance(o, FetchFailure):
            out.failed.append((o.doc_id, o.error))
        elif isinstance(o, Removed):
            if states and o.key in states and o.status == 404:  # deleted once its 404 has lasted (the flow)
                out.not_found.append((o.source, o.doc_id, o.error))
            elif states and o.key in states:  # an indexed page: deleted at the run's end (under its guard)
                out.removed.append((o.source, o.doc_id))
            else:
                out.failed.append((o.doc_id, f"{o.error}; nothing of it is indexed"))
        elif isinstance(o, NotModified) and o.gone:
            out.gone.append(o.doc_id)
        elif isinstance(o, NotModified):
            out.unchanged += 1
        else:
            articles.append(o)
    out.not_utf8 = [a.doc_id for a in articles if a.replaced_bytes]
    if not articles:
        return out
    if states is None:
        states = stored_states(settings, "key", [a.key for a in articles], out.saw_articles_table)
    split = split_articles(articles, states, settings)
    out.split, out.unchanged = split, out.unchanged + split.unchanged
    out.failed += [(f.doc_id, f.error) for f in split.failed]
    if split.changed:
        out.plan = plan_paragraphs(split.paragraphs, split.changed, settings)
    return out


# Shards are plain functions wrapped in tasks (not decorated): a Dask worker then unpickles them by
# reference, importing this module, so its caches (models, tokenizer copies) live once per worker process.
prepare_batch = stage(prepare, name="prepare")


#: Every encode of a process runs on this one thread, one after another: two at once only contend for the
#: CPU (on a GPU, for its memory), and torch called from changing threads gets an OpenMP team and malloc
#: arenas per thread (measured: +320 MB peak RSS on 120 SciFact docs, before this thread).
_encode_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpus-search-encode")


def encode_prepared(prepared: PreparedBatch, settings: Settings, part: int = 0, parts: int = 1) -> Encoded:
    """Encode a prepared batch's new paragraphs, or the ``part``-th of their ``parts`` contiguous slices
    (``join_encoded`` puts the slices back together). Nothing to encode: no model is loaded."""
    if not prepared.split.changed:
        return Encoded(np.empty((0, 0), dtype=np.float32), 0.0, None)
    texts = prepared.texts
    if not texts:  # every new paragraph's vector is copied (a renamed file): no model call
        return Encoded(np.empty((0, 0), dtype=np.float32), 0.0, None)
    if parts > 1:
        lo, hi = slice_bounds(len(texts), part, parts, encode_step(settings.batch_size, settings.encode_chunk_size))
        texts = texts[lo:hi]
    tuned = heap.keep_large_blocks()  # on a Dask worker: 1.5x faster encodes (see there)
    encoder = bi_encoder_from_settings(settings)
    # copy_context: the run's progress reporter (a context variable) goes along to the encode thread.
    job = _encode_thread.submit(contextvars.copy_context().run, encode_in_chunks, encoder, texts,
                                settings.encode_chunk_size)
    vectors, seconds = job.result()
    if tuned:
        heap.trim()  # the activations' blocks now stay in the heap: give them back between slices
    return Encoded(vectors, seconds, index_metadata(settings))


def join_encoded(parts: list[Encoded]) -> Encoded:
    """One batch's ``Encoded`` from the results of its encode slices, in slice order (seconds: summed)."""
    if len(parts) == 1:
        return parts[0]
    return Encoded(np.concatenate([p.vectors for p in parts]), sum(p.seconds for p in parts),
                   next((p.meta for p in parts if p.meta is not None), None))


encode_batch = stage(encode_prepared, name="encode")


@stage(name="write")
def write_batch(plan: store.BatchPlan, vectors: np.ndarray, changed: list[dict], settings: Settings,
                meta: IndexMetadata | None = None) -> None:
    """Apply one batch: one merge_insert for the paragraphs, then remember the articles' state.

    ``meta``: the encoder's metadata as the encode shard reported it. None when it encoded nothing (every
    vector copied, or only moved rows): then the table's own metadata, under the settings' ``encode_title``,
    so that such a batch loads no model (an empty collection's table is made from the encoder, loaded here).
    """
    if meta is None and (table := existing_table(settings)) is not None:  # its encoder checked against the settings
        meta = replace(IndexMetadata.from_schema(table.schema, table=settings.collection),
                       encode_title=settings.encode_title)
    table = paragraph_table(settings, meta)
    store.apply_batch(table, plan, vectors, table.schema.field("vector").type.list_size)
    store.upsert_article_states(store.open_articles_table(_db(settings), settings.collection), changed)


@stage(name="remember-max-tokens")
def remember_max_tokens(max_tokens: int, settings: Settings) -> None:
    """Store the encoder's token limit in an older table that lacks it (see ``SplitResult``)."""
    table = existing_table(settings)
    if table is not None and IndexMetadata.from_schema(table.schema).max_seq_length is None:
        store.remember_max_seq_length(table, max_tokens)


@stage(name="restamp")
def restamp_files(stamps: dict[str, dict[str, str | None]], settings: Settings) -> None:
    """Store the new stamps and validators of unchanged articles (so the next run skips them, or gets a 304)."""
    store.restamp_articles(store.open_articles_table(_db(settings), settings.collection), stamps)


@stage(name="delete-vanished")
def delete_vanished(origin: str, doc_ids: list[str], settings: Settings) -> int:
    """Delete rows of articles (of one origin) that disappeared from a fully enumerated source."""
    db = _db(settings)
    return store.delete_articles(existing_table(settings), store.open_articles_table(db, settings.collection),
                                 origin, doc_ids)


@stage(name="count-vanished-rows")
def count_vanished_rows(origin: str, doc_ids: list[str], settings: Settings) -> int:
    """How many rows deleting these vanished articles would remove (checked before deleting anything)."""
    table = existing_table(settings)
    return store.count_article_rows(table, origin, doc_ids) if table is not None else 0


@stage(name="count-rows-kept")
def count_text_kept(groups: list[tuple[str, list[str]]], settings: Settings) -> list[int]:
    """Per group of vanished articles: their rows whose text other rows of the collection still hold
    (see ``store.rows_whose_text_stays``)."""
    table = existing_table(settings)
    return store.rows_whose_text_stays(table, groups) if table is not None else [0] * len(groups)


@stage(name="count-rows")
def count_rows(settings: Settings) -> int:
    """Rows of the collection before this run (0 for a new one)."""
    table = existing_table(settings)
    return table.count_rows() if table is not None else 0


@stage(name="refresh-indexes")
def refresh_indexes(settings: Settings) -> dict:
    """FTS covers every row, ANN index past the threshold, files compacted."""
    table = existing_table(settings)
    if table is None:  # nothing was ever written: the empty table is made (with the encoder) as before
        table = paragraph_table(settings)
    done = store.refresh_indexes(
        table, ann_min_rows=settings.ann_min_rows, ann_index_type=settings.ann_index_type,
        retention_days=settings.version_retention_days,
    )
    # The collection's internal tables follow: compacted, and cleaned of what no kept version reaches.
    return done | versions.cleanup_companions(_db(settings), settings.collection, settings.version_retention_days)


@stage(name="read-not-found")
def previous_not_found(settings: Settings) -> dict[str, str]:
    """The last index run's pages that answered 404, with when each first did (``tasks.not_found``)."""
    from tasks.not_found import previous_streaks

    return previous_streaks(versions.load_runs(_db(settings), settings.collection))


@stage(name="record-run")
def record_run(result: dict, settings: Settings) -> None:
    """Attach the run's summary to the table versions it ended at (``corpus-search versions`` shows it)."""
    versions.record_run(settings.db_uri, settings.collection, result)


@stage(name="load-article-state")
def load_states(settings: Settings) -> dict[str, ArticleState]:
    return store.load_article_states(_db(settings), settings.collection, settings.db_uri)


__all__ = [
    "BatchWork",
    "Encoded",
    "NotModified",
    "PreparedBatch",
    "SplitResult",
    "delete_vanished",
    "encode_batch",
    "encode_paragraphs",
    "fetch_url_batch",
    "index_metadata",
    "load_states",
    "parse_dump_batch",
    "plan_writes",
    "prepare_batch",
    "read_file_batch",
    "refresh_indexes",
    "remember_max_tokens",
    "restamp_files",
    "split_batch",
    "write_batch",
]
