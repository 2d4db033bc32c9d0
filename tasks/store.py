"""LanceDB writes: idempotent upserts on the stable paragraph id, deletions, fresh FTS/ANN indexes.

Plain functions over a table handle; the handle comes from ``open_paragraph_table`` inside the task
that uses it and is never passed between Prefect tasks.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pyarrow as pa

from query.filters import in_list, sql_literal
from query.schema import (
    ARTICLE_SCHEMA,
    IndexContractError,
    METADATA_KEY,
    METADATA_TYPE,
    IndexMetadata,
    articles_table_name,
    check_compatible,
    check_schema_version,
    migrate_hint,
    paragraph_schema,
)
from tasks.records import COLLECTION_STATE_COLUMNS, ArticleState, Paragraph, now_utc
from query.storage import table_names

log = logging.getLogger(__name__)

#: Size of IN (...) lists; keeps single SQL statements reasonable for big batches.
IN_CHUNK = 1000
#: Columns with a full-text index. Lexical retrieval matches all of those a table has (BM25 per column,
#: summed), so a title word counts like Anserini's flat "contents" field, which holds title + text.
FTS_COLUMNS = ("text", "title")


#: Bound of the index writer's LanceDB metadata cache (manifests, fragment metadata). Every batch commits a
#: version whose manifest lists every fragment, and LanceDB's default cache keeps them all: the writer's
#: memory grew with the square of the number of batches (the cache held 58 MB after 200 batches of 512
#: rows). A writer only ever reads the latest version, so a small bound loses nothing: 300 merge_inserts of
#: 512 rows ran 15 s with 4 MiB against 18 s with 64 MiB, and the bigger cache was simply filled (+64 MB).
WRITER_METADATA_CACHE_BYTES = 8 * 2**20


@functools.cache
def writer_session():
    """The LanceDB session (cache sizes) of this process's index writes, shared by its connections."""
    import lancedb

    return lancedb.Session(metadata_cache_size_bytes=WRITER_METADATA_CACHE_BYTES)


def connect(db_uri: str, settings=None):
    """Open a LanceDB database for index writes (local directory or object-store URI; see
    ``query.storage.connect``), with the writer's bounded metadata cache."""
    from query.storage import connect as connect_db

    return connect_db(db_uri, settings, session=writer_session())


def chunks(items: Sequence, size: int = IN_CHUNK) -> Iterable[Sequence]:
    """``items`` in slices of at most ``size`` (bounded ``IN (...)`` lists)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def open_paragraph_table(db, collection: str, meta: IndexMetadata, *, create: bool = True, db_uri: str | None = None):
    """Open the collection's paragraph table, creating it with ``meta``; refuse an incompatible one."""
    if collection in table_names(db):
        table = db.open_table(collection)
        stored = IndexMetadata.from_schema(table.schema, table=collection)
        check_compatible(stored, meta, collection=collection, db_uri=db_uri)
        if stored.encode_title != meta.encode_title:
            raise IndexContractError(
                f"collection {collection!r} was indexed with encode_title={stored.encode_title}, "
                f"but the setting is now {meta.encode_title}. Set CORPUS_SEARCH_ENCODE_TITLE="
                f"{str(stored.encode_title).lower()} or index into a new collection."
            )
        if stored.max_seq_length is None and meta.max_seq_length is not None:
            remember_max_seq_length(table, meta.max_seq_length)
        return table
    if not create:
        return None
    return db.create_table(collection, schema=paragraph_schema(meta))


def remember_max_seq_length(table, max_seq_length: int) -> None:
    """Store the encoder's token limit in an older table's metadata, so later runs with nothing to do
    compare fingerprints without loading the encoder."""
    stored = IndexMetadata.from_schema(table.schema)
    table.to_lance().update_schema_metadata(
        {METADATA_KEY.decode(): replace(stored, max_seq_length=max_seq_length).to_bytes().decode()})


def open_existing_table(db, collection: str, *, db_uri: str | None = None):
    """The collection's paragraph table, or None if there is none; only its schema version is checked
    (what needs no bi-encoder: counting, deleting, index upkeep)."""
    if collection not in table_names(db):
        return None
    table = db.open_table(collection)
    check_schema_version(IndexMetadata.from_schema(table.schema, table=collection), collection=collection,
                         db_uri=db_uri)
    return table


#: Article-state columns that schema v2 added (``corpus-search migrate`` adds them to a v1 table).
V2_ARTICLE_COLUMNS = ("origin", "file_stamp")


def _check_articles_schema(table, name: str, db_uri: str | None = None) -> None:
    # A database written before names with "__" were reserved may hold a *collection* of that name.
    missing = [f.name for f in ARTICLE_SCHEMA if f.name not in table.schema.names]
    if missing and set(missing) <= set(V2_ARTICLE_COLUMNS):
        collection = name.rsplit("__", 1)[0]
        raise IndexContractError(
            f"collection {collection!r} was indexed by an older corpus-search (index schema v1): upgrade it "
            f"in place, keeping every vector: {migrate_hint(collection, db_uri)}"
        )
    if missing:
        raise IndexContractError(
            f"table {name!r} should hold the article state of collection {name.rsplit('__', 1)[0]!r}, but it is "
            f"another kind of table (no {', '.join(missing)} column): it was made as a collection before names "
            f"with '__' were reserved. Drop or rename it, or index into another collection."
        )


def open_articles_table(db, collection: str):
    name = articles_table_name(collection)
    if name in table_names(db):
        table = db.open_table(name)
        _check_articles_schema(table, name)
        return table
    return db.create_table(name, schema=ARTICLE_SCHEMA)


def load_article_states(db, collection: str, db_uri: str | None = None) -> dict[str, ArticleState]:
    """Every article the collection remembers, keyed by article key (small: one row per article)."""
    name = articles_table_name(collection)
    if name not in table_names(db):
        return {}
    table = db.open_table(name)
    _check_articles_schema(table, name, db_uri)
    rows = table.to_lance().to_table(columns=COLLECTION_STATE_COLUMNS).to_pylist()
    return {r["key"]: ArticleState(**r) for r in rows}


@dataclass
class BatchPlan:
    """What one batch of changed articles does to the table."""

    new: list[Paragraph] = field(default_factory=list)  # ids not in the table: to insert
    moved: list[Paragraph] = field(default_factory=list)  # same id, new position, title or metadata: update only
    deleted_ids: list[str] = field(default_factory=list)  # ids of these articles that vanished
    unchanged: int = 0
    #: Vectors the collection already holds for some new paragraphs' encoded text, by content hash (a file
    #: renamed or moved, a paragraph repeated in another article): copied, not encoded again.
    stored: dict[str, np.ndarray] = field(default_factory=dict)
    #: Indexes into ``new`` of the paragraphs to encode: the first of each text not in ``stored`` (see ``settle``).
    encode: list[int] | None = None

    def settle(self, stored: dict[str, np.ndarray]) -> None:
        """Decide which new paragraphs are encoded: each encoded text once, none the collection holds.

        The same encoded text under the same encoder is the same vector (the table refuses another
        encoder), so a vector is computed once per text, whichever article or file name it comes under.
        """
        self.stored = dict(stored)
        first: set[str] = set()
        self.encode = []
        for i, p in enumerate(self.new):
            if p.content_hash not in self.stored and p.content_hash not in first:
                first.add(p.content_hash)
                self.encode.append(i)

    def to_encode(self) -> list[Paragraph]:
        """The new paragraphs whose vectors must be computed, in order (all of them before ``settle``)."""
        return list(self.new) if self.encode is None else [self.new[i] for i in self.encode]

    def new_vectors(self, encoded: np.ndarray) -> np.ndarray:
        """One vector per new paragraph, from ``encoded`` (the vectors of :meth:`to_encode`, in its order)
        and the stored ones."""
        if self.encode is None or (len(self.encode) == len(self.new)):
            return encoded
        row = {self.new[i].content_hash: j for j, i in enumerate(self.encode)}
        return np.stack([self.stored[p.content_hash] if p.content_hash in self.stored else encoded[row[p.content_hash]]
                         for p in self.new])

    @property
    def reused(self) -> int:
        """New paragraphs whose vector is copied (stored, or another paragraph's of this batch), not encoded."""
        return len(self.new) - len(self.to_encode())


#: What decides whether a kept paragraph's row must be rewritten (its vector never is).
ROW_STATE = ["id", "doc_id", "position", "title", "source", "published", "metadata"]


def existing_rows(table, origin: str, doc_ids: Sequence[str]) -> pa.Table:
    """Current :data:`ROW_STATE` rows of some articles of one origin."""
    parts = []
    for chunk in chunks(list(doc_ids)):
        where = f"origin = {sql_literal(origin)} AND {in_list('doc_id', chunk)}"
        parts.append(table.search().where(where).select(ROW_STATE).limit(None).to_arrow())
    if not parts:
        return pa.table({"id": pa.array([], pa.string())})
    return pa.concat_tables(parts)


def plan_batch(paragraphs: Sequence[Paragraph], existing: pa.Table, changed_doc_ids: Iterable[str]) -> BatchPlan:
    """Compare freshly split paragraphs of changed articles against what the table holds for them."""
    current = {r["id"]: r for r in existing.to_pylist()}
    plan = BatchPlan()
    keep: set[str] = set()
    for p in paragraphs:
        keep.add(p.id)
        row = current.get(p.id)
        if row is None:
            plan.new.append(p)
        elif (row["position"] != p.position or (row["title"] or "") != p.title or row["source"] != p.source
              or row["published"] != p.published or dict(row["metadata"] or ()) != (p.metadata or {})):
            plan.moved.append(p)
        else:
            plan.unchanged += 1
    changed = set(changed_doc_ids)
    plan.deleted_ids = [i for i, r in current.items() if i not in keep and r["doc_id"] in changed]
    return plan


def paragraph_rows(paragraphs: Sequence[Paragraph], vectors: np.ndarray, dim: int, at: datetime) -> pa.Table:
    """Arrow rows for ``paragraphs`` with their vectors, in the paragraph schema's column order."""
    if len(paragraphs) != len(vectors):
        raise ValueError(f"{len(paragraphs)} paragraphs but {len(vectors)} vectors")
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.table(
        {
            "id": pa.array([p.id for p in paragraphs], pa.string()),
            "doc_id": pa.array([p.doc_id for p in paragraphs], pa.string()),
            "source": pa.array([p.source for p in paragraphs], pa.string()),
            "title": pa.array([p.title for p in paragraphs], pa.string()),
            "position": pa.array([p.position for p in paragraphs], pa.int32()),
            "text": pa.array([p.text for p in paragraphs], pa.string()),
            "content_hash": pa.array([p.content_hash for p in paragraphs], pa.string()),
            "indexed_at": pa.array([at] * len(paragraphs), pa.timestamp("us", tz="UTC")),
            "origin": pa.array([p.origin or p.source for p in paragraphs], pa.string()),
            "published": pa.array([p.published for p in paragraphs], pa.timestamp("us", tz="UTC")),
            "metadata": pa.array([sorted(p.metadata.items()) if p.metadata else None for p in paragraphs],
                                 METADATA_TYPE),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    )


def stored_vectors(table, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Vectors already in the table for ``ids`` (moved rows keep theirs: they are never re-encoded)."""
    out: dict[str, np.ndarray] = {}
    for chunk in chunks(list(ids)):
        t = table.search().where(in_list("id", chunk)).select(["id", "vector"]).limit(None).to_arrow()
        vecs = np.asarray(t["vector"].combine_chunks().flatten(), dtype=np.float32).reshape(len(t), -1)
        out.update(zip(t["id"].to_pylist(), vecs, strict=True))
    return out


def vectors_by_content(table, hashes: Iterable[str]) -> dict[str, np.ndarray]:
    """Vectors the table holds for these content hashes (encoded texts), one per hash.

    One scan of the table's ``content_hash`` column (a set-membership filter, not chunked ``IN`` lists): 1,000
    hashes in 1M rows take 0.035 s, 2 % of encoding 1,000 paragraphs on a 2-core CPU; a BTREE index on the column
    made it no faster (``benchmarks/content_lookup.py``).
    """
    found = _rows_by_content(table, ["content_hash", "vector"], hashes)
    if not found.num_rows:
        return {}
    vecs = np.asarray(found["vector"].combine_chunks().flatten(), dtype=np.float32).reshape(found.num_rows, -1)
    return dict(zip(found["content_hash"].to_pylist(), vecs, strict=True))


def _rows_by_content(table, columns: list[str], hashes: Iterable[str]) -> pa.Table:
    """``columns`` of every row whose ``content_hash`` is one of ``hashes``: one scan, a set-membership filter."""
    import pyarrow.compute as pc

    wanted = sorted(set(hashes))
    if not wanted:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return table.to_lance().to_table(columns=columns, filter=pc.field("content_hash").isin(wanted))


def apply_batch(table, plan: BatchPlan, new_vectors: np.ndarray, dim: int) -> None:
    """Insert new rows, update moved rows and delete vanished ones in ONE merge_insert (one version).

    ``new_vectors``: the vectors of ``plan.to_encode()``, in its order (the others are copied).

    Only rows that really changed are in it (``plan_batch``): rewriting identical rows would make a new
    version and push them out of the indexes for nothing.
    """
    if not (plan.new or plan.moved or plan.deleted_ids):
        return
    at = now_utc()
    parts = []
    if plan.new:
        parts.append(paragraph_rows(plan.new, plan.new_vectors(new_vectors), dim, at))
    if plan.moved:
        old = stored_vectors(table, [p.id for p in plan.moved])
        moved = [p for p in plan.moved if p.id in old]
        if moved:
            parts.append(paragraph_rows(moved, np.stack([old[p.id] for p in moved]), dim, at))
    # Deletions in the same commit, however many: in chunks, the versions between them held a changed article's
    # old paragraphs beside its new ones, and a reader saw both (lance takes an IN list of 100,000 ids at once).
    if not parts:  # deletions only
        table.delete(in_list("id", plan.deleted_ids))
        return
    # A migrated table has the v2 columns at its end: write in the table's own column order.
    data = pa.concat_tables(parts).select(table.schema.names)
    merge = table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
    if plan.deleted_ids:
        merge = merge.when_not_matched_by_source_delete(in_list("id", plan.deleted_ids))
    merge.execute(data)


#: What an article state says while its rows are being deleted: matches no stamp and no fingerprint.
DELETING = "deleting"


def delete_articles(table, articles, origin: str, doc_ids: Sequence[str]) -> int:
    """Delete every row of these articles of ``origin`` (articles that vanished from their source).

    Three steps, each safe to be the last: the states are marked first (no stamp, fingerprint or
    validator matches them), then the rows go, then the states. A run killed between the rows and the
    states left states that said "unchanged": a file restored with its old size and time (``cp -p``,
    ``rsync -a``, a snapshot) was skipped unread by every later run, its rows gone. Marked, it is read
    again; and a state whose article stays gone is still found gone by the next run, which finishes.
    """
    removed = 0
    for chunk in chunks(list(doc_ids)):
        where = f"origin = {sql_literal(origin)} AND {in_list('doc_id', chunk)}"
        if table is not None:
            articles.update(where=where, values={"body_hash": DELETING, "file_stamp": None, "etag": None,
                                                 "last_modified": None, "paragraphs": 0})
            removed += table.count_rows(where)
            table.delete(where)
        articles.delete(where)
    return removed


def count_article_rows(table, origin: str, doc_ids: Sequence[str]) -> int:
    """Rows of these articles of ``origin``: what ``delete_articles`` would remove."""
    return sum(
        table.count_rows(f"origin = {sql_literal(origin)} AND {in_list('doc_id', chunk)}")
        for chunk in chunks(list(doc_ids))
    )


def rows_whose_text_stays(table, groups: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
    """For each group of articles (an origin and doc ids) about to be deleted together: how many of their
    rows hold an encoded text that a row outside every group holds too (a renamed or moved file, whose
    new name this run indexed): deleting those loses no text."""
    hashes: list[list[str]] = []
    gone: set[str] = set()
    for origin, doc_ids in groups:
        mine: list[str] = []
        for chunk in chunks(list(doc_ids)):
            where = f"origin = {sql_literal(origin)} AND {in_list('doc_id', chunk)}"
            rows = table.search().where(where).select(["id", "content_hash"]).limit(None).to_arrow()
            gone.update(rows["id"].to_pylist())
            mine += rows["content_hash"].to_pylist()
        hashes.append(mine)
    same = _rows_by_content(table, ["id", "content_hash"], (h for mine in hashes for h in mine))
    staying = {h for i, h in zip(same["id"].to_pylist(), same["content_hash"].to_pylist(), strict=True) if i not in gone}
    return [sum(h in staying for h in mine) for mine in hashes]


def upsert_article_states(articles, rows: Sequence[dict]) -> None:
    """Remember fetch validators and body hashes of the articles just indexed."""
    if not rows:
        return
    data = pa.Table.from_pylist(list(rows), schema=ARTICLE_SCHEMA).select(articles.schema.names)
    articles.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(data)


def restamp_articles(articles, updates: dict[str, dict[str, str | None]]) -> None:
    """Set new state columns (``file_stamp``, ``etag``, ``last_modified``) on some articles, by key (full rows
    rewritten in one merge: one version, not one per article)."""
    for chunk in chunks(list(updates)):
        rows = articles.search().where(in_list("key", chunk)).limit(None).to_arrow()
        if rows.num_rows:
            keys = rows["key"].to_pylist()
            for column in sorted({c for k in keys for c in updates[k]}):
                old = rows[column].to_pylist()
                new = pa.array([updates[k].get(column, old[i]) for i, k in enumerate(keys)], pa.string())
                rows = rows.set_column(rows.schema.get_field_index(column), column, new)
            articles.merge_insert("key").when_matched_update_all().execute(rows)


def has_index(table, column: str) -> bool:
    return any(column in idx.columns for idx in table.list_indices())


def fts_unindexed_rows(table) -> int:
    """Rows some full-text index does not cover yet (0 right after ``refresh_indexes``)."""
    worst, seen = 0, set()
    for idx in table.list_indices():
        if str(idx.index_type).upper().startswith("FTS"):
            stats = table.index_stats(idx.name)
            worst = max(worst, int(stats.num_unindexed_rows) if stats else table.count_rows())
            seen.update(idx.columns)
    missing = [c for c in FTS_COLUMNS if c not in seen]
    return table.count_rows() if missing else worst


#: Vectors the IVF training sample may hold before fewer are taken per partition (see ``ann_sample_rate``).
ANN_SAMPLE_VECTORS = 65_536
#: The fewest training vectors per partition: k-means wants a few dozen per centroid (faiss warns below 39).
ANN_MIN_SAMPLE_RATE = 64


def ann_sample_rate(partitions: int) -> int:
    """Training vectors per IVF partition: LanceDB's 256 up to ``ANN_SAMPLE_VECTORS`` in all, then fewer,
    never under ``ANN_MIN_SAMPLE_RATE``.

    LanceDB loads 256 vectors per partition into memory to train the index, so with sqrt(rows) partitions
    that sample (and the index build's peak memory) grew with sqrt(rows) without end: 175 MB of vectors at
    200k rows, 1.7 GB at 20M. Recall with the capped sample: ``benchmarks/ann_sample.py``.
    """
    return max(ANN_MIN_SAMPLE_RATE, min(256, ANN_SAMPLE_VECTORS // max(1, partitions)))


def ann_config(index_type: str, rows: int):
    """A cosine ANN index config with about sqrt(rows) partitions (see benchmarks/ann_recall.py) and a
    bounded training sample (``ann_sample_rate``)."""
    from lancedb.index import IvfFlat, IvfPq, IvfSq, HnswSq

    partitions = max(1, round(rows**0.5))
    classes = {"IVF_SQ": IvfSq, "IVF_FLAT": IvfFlat, "IVF_PQ": IvfPq, "IVF_HNSW_SQ": HnswSq}
    if index_type not in classes:
        raise ValueError(f"unknown ANN index type {index_type!r}: use one of {', '.join(classes)}")
    return classes[index_type](distance_type="cosine", num_partitions=partitions,
                               sample_rate=ann_sample_rate(partitions))


def refresh_indexes(table, *, ann_min_rows: int, ann_index_type: str = "IVF_SQ",
                    retention_days: float | None = None) -> dict:
    """Bring the FTS index up to every row, build the ANN index past ``ann_min_rows``, compact, and
    remove untagged versions older than ``retention_days`` (default: the ``version_retention_days``
    setting; 0 keeps every version).

    LanceDB indexes go stale after writes: new rows are searched flat (FTS) or brute force (vectors)
    until ``optimize()`` merges them in.
    """
    from lancedb.index import FTS

    from query.settings import get_settings
    from tasks.versions import NO_CLEANUP, cleanup

    rows = table.count_rows()
    created = []
    for column in FTS_COLUMNS:
        if rows and not has_index(table, column):
            # English stemming and stop words: BM25 as Anserini/Lucene does it.
            table.create_index(column, config=FTS(stem=True, remove_stop_words=True, ascii_folding=True))
            created.append(f"fts:{column}")
    if rows >= ann_min_rows and not has_index(table, "vector"):
        table.create_index("vector", config=ann_config(ann_index_type, rows))
        created.append(ann_index_type.lower())
    # optimize() would also clean up versions older than 7 days, and fail outright once a tagged
    # version is that old; so it only compacts and merges new rows into every index here, and
    # cleanup() applies the retention setting, keeping tagged versions.
    table.optimize(cleanup_older_than=NO_CLEANUP)
    days = get_settings().version_retention_days if retention_days is None else retention_days
    cleaned = cleanup(table, days)
    return {"rows": rows, "created": created, "fts_unindexed": fts_unindexed_rows(table) if rows else 0,
            "versions_removed": cleaned["old_versions"]}


#: What a database's disk says when it cannot take more: every later write of the run would fail the same way.
_EXHAUSTED_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS})
#: The same, as lance's Rust errors carry them in their text (they are RuntimeErrors and OSErrors without errno).
_EXHAUSTED_TEXT = tuple(f"os error {n})" for n in sorted(_EXHAUSTED_ERRNOS)) + (
    "No space left on device", "File too large", "Disk quota exceeded", "Read-only file system")


class DatabaseWriteError(RuntimeError):
    """The collection's tables could not be written (permission denied, an I/O error of the database's disk or
    object store): no article's failure, since every later batch would fail the same way, so the run stops
    (the CLI's exit 5) with what to check."""


#: What lance's errors say when the database's storage, not the data, failed (they carry no errno).
_IO_TEXT = ("(os error ", "LanceError(IO)")


def _causes(exc: BaseException | None, limit: int = 10) -> Iterator[BaseException]:
    """``exc`` and what caused it (``__cause__``, else ``__context__``), at most ``limit`` deep."""
    for _ in range(limit):
        if exc is None:
            return
        yield exc
        exc = exc.__cause__ or exc.__context__


def database_io_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it), raised by a write to the database, is the storage's own error:
    an ``OSError``, or a lance error about I/O. A value the table refuses is neither: that is the batch's."""
    return any(isinstance(e, OSError) or any(t in str(e) for t in _IO_TEXT) for e in _causes(exc))


def _exhausted(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in _EXHAUSTED_ERRNOS  # the OS's own word; its text may name a file ("Read-only file system.md")
    return isinstance(exc, OSError | RuntimeError) and any(t in str(exc) for t in _EXHAUSTED_TEXT)


def storage_exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database's storage is full, over a size limit or read-only:
    no article's fault, so a run stops on it (exit 5) instead of failing every article after it."""
    return any(_exhausted(e) for e in _causes(exc))
