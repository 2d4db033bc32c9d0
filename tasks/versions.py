"""Write side of collection versions: run log, tags, rollback and retention, on LanceDB's own versions.

A collection is two LanceDB tables that must move together: the paragraph table ``C`` and the
article-state table ``C__articles`` (body hashes and ETags, so unchanged articles are not
re-encoded). A third, small table ``C__runs`` logs which paragraph and article versions each index
run, rollback or eval tag ended at. That log maps a paragraph version to its article version:

1. a tag names the same point in both tables (``tag_version`` tags both);
2. else the run that ended at that paragraph version says which article version it wrote;
3. else the latest article version committed no later than the paragraph version (an index run
   writes paragraphs before article states, so this never claims an article whose rows are missing).

Plain functions over a db URI or table handle; no Prefect imports (the lock imports it lazily for
object-store URIs only).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from query.errors import CollectionNotFoundError
from query.schema import SCHEMA_VERSION, IndexMetadata, articles_table_name, validate_collection_name
from query.versions import (
    VersionNotFoundError,
    check_tag_name,
    is_companion_table,
    parse_version,
    resolve_version,
    runs_table_name,
)
from query.storage import table_names

log = logging.getLogger(__name__)

RUNS_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # index | rollback | tag | reranker
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("paragraph_version", pa.int64(), nullable=False),
        pa.field("articles_version", pa.int64()),
        pa.field("tag", pa.string()),
        pa.field("summary", pa.string()),  # JSON: the index flow's summary, or what a rollback did
        pa.field("metrics", pa.string()),  # JSON: eval metrics attached to a tag
    ]
)
#: Retention so long it never removes anything: how ``optimize`` is told not to clean up itself.
NO_CLEANUP = timedelta(days=365 * 100)


def _connect(db_uri: str):
    from tasks.collections import connect_existing

    return connect_existing(db_uri)  # a mistyped --db is an error, not a new database


def _names(db) -> set[str]:
    return set(table_names(db))


def open_collection(db, collection: str):
    """The paragraph table of ``collection``; the error lists the collections that do exist."""
    validate_collection_name(collection)  # an internal table (x__articles) is not a collection
    names = _names(db)
    if collection not in names:
        known = sorted(n for n in names if not is_companion_table(n))
        raise CollectionNotFoundError(
            f"collection {collection!r} does not exist in this database"
            + (f" (collections there: {', '.join(known)})" if known else " (it holds no collections)")
            + ". Check the name and --db."
        )
    return db.open_table(collection)


def _open_optional(db, name: str):
    return db.open_table(name) if name in _names(db) else None


def _runs_table(db, collection: str):
    name = runs_table_name(collection)
    return db.open_table(name) if name in _names(db) else db.create_table(name, schema=RUNS_SCHEMA)


def load_runs(db, collection: str) -> list[dict]:
    """Every logged run of ``collection``, oldest first, with ``summary``/``metrics`` decoded."""
    table = _open_optional(db, runs_table_name(collection))
    if table is None:
        return []
    rows = table.to_arrow().to_pylist()
    for r in rows:
        r["summary"] = json.loads(r["summary"]) if r["summary"] else None
        r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else None
    return sorted(rows, key=lambda r: (r["at"], r["paragraph_version"]))


def _log_run(db, collection: str, kind: str, paragraph_version: int, articles_version: int | None, *,
             tag: str | None = None, summary: dict | None = None, metrics: dict | None = None) -> dict:
    row = {
        "kind": kind,
        "at": datetime.now(UTC),
        "paragraph_version": int(paragraph_version),
        "articles_version": None if articles_version is None else int(articles_version),
        "tag": tag,
        "summary": json.dumps(summary, default=str) if summary is not None else None,
        "metrics": json.dumps(metrics, default=str) if metrics is not None else None,
    }
    _runs_table(db, collection).add(pa.Table.from_pylist([row], schema=RUNS_SCHEMA))
    return row


def current_versions(db, collection: str) -> tuple[int, int | None]:
    """(paragraph version, article-state version or None) of the latest commit of both tables."""
    table = open_collection(db, collection)
    articles = _open_optional(db, articles_table_name(collection))
    return table.version, (articles.version if articles is not None else None)


def record_run(db_uri: str, collection: str, summary: dict, kind: str = "index") -> dict:
    """Attach ``summary`` to the versions a write ended at (both tables): the index flow's summary, or
    (``kind="reranker"``) a change of the re-ranker registry, a model added or removed or a promotion.
    The registry lives in the table's metadata, so rolling back to a version restores its promotion;
    ``versions`` shows where each one happened.

    Call it at the end of the write, inside its writer lock (it takes no lock itself, so it
    cannot deadlock there), so that no other writer's version is recorded by mistake.
    """
    db = _connect(db_uri)
    paragraph_version, articles_version = current_versions(db, collection)
    return _log_run(db, collection, kind, paragraph_version, articles_version, summary=summary)


def _version_times(table) -> dict[int, datetime]:
    # list_versions gives naive local times; make them aware so they compare and print as UTC.
    return {int(v["version"]): v["timestamp"].astimezone(UTC) for v in table.list_versions()}


def articles_version_for(db, collection: str, paragraph_version: int, *, tag: str | None = None) -> int | None:
    """The article-state version that belongs with ``paragraph_version`` (see the module docstring).

    None means the article table did not exist yet at that point: its state must be emptied.
    """
    articles = _open_optional(db, articles_table_name(collection))
    if articles is None:
        return None
    return _articles_version(paragraph_version, tag, articles.tags.list(), _version_times(articles),
                             load_runs(db, collection), _version_times(open_collection(db, collection)))


def _articles_version(paragraph_version: int, tag: str | None, article_tags: dict, available: dict[int, datetime],
                      runs: list[dict], paragraph_times: dict[int, datetime]) -> int | None:
    """:func:`articles_version_for` over what it reads (the article table's tags and version times, the run
    log, the paragraph table's version times), so that a caller mapping many versions reads them once."""
    if tag is not None and tag in article_tags:
        return int(article_tags[tag]["version"])
    for run in reversed(runs):
        if run["paragraph_version"] == paragraph_version and run["articles_version"] in available:
            return int(run["articles_version"])
    at = paragraph_times.get(paragraph_version)
    if at is None:
        return None
    earlier = [v for v, t in available.items() if t <= at]
    return max(earlier) if earlier else None


def list_versions(db_uri: str, collection: str) -> list[dict]:
    """Every version of the collection's paragraph table, oldest first, with rows, tags and runs.

    Each item: ``version``, ``timestamp`` (ISO 8601, UTC), ``rows``, ``tags``, ``summary`` (the
    index flow's summary when the version ended an index run, else the rollback's, else None),
    ``kind`` (index, rollback, reranker or None), ``articles_version`` (when logged) and ``metrics``
    ({tag: eval metrics} for tags on this version that carry them).
    """
    db = _connect(db_uri)
    table = open_collection(db, collection)
    tags_by_version: dict[int, list[str]] = {}
    for name, info in sorted(table.tags.list().items()):
        tags_by_version.setdefault(int(info["version"]), []).append(name)
    runs = load_runs(db, collection)
    out = []
    for v in sorted(table.list_versions(), key=lambda v: v["version"]):
        number = int(v["version"])
        meta = v.get("metadata") or {}
        if "total_rows" in meta:
            rows = int(meta["total_rows"])  # the manifest counts live rows: no need to open the version
        else:
            table.checkout(number)
            rows = table.count_rows()
            table.checkout_latest()
        # The run that made the version comes first; later runs that wrote nothing end at it too, and their
        # empty summaries ("0 fetched, 0 encoded") must not hide what made it.
        made = next((r for r in runs if r["paragraph_version"] == number
                     and r["kind"] in ("index", "rollback", "reranker", "delete")), None)
        tags = tags_by_version.get(number, [])
        metrics = {}
        for r in runs:  # later eval tags overwrite earlier ones of the same name
            if r["kind"] == "tag" and r["tag"] in tags and r["paragraph_version"] == number and r["metrics"]:
                metrics[r["tag"]] = r["metrics"]
        out.append(
            {
                "version": number,
                "timestamp": v["timestamp"].astimezone(UTC).isoformat(),
                "rows": rows,
                "tags": tags,
                "kind": made["kind"] if made else None,
                "summary": made["summary"] if made else None,
                "articles_version": made["articles_version"] if made else None,
                "metrics": metrics,
            }
        )
    return out


def _set_tag(table, name: str, version: int) -> int | None:
    """Create or move tag ``name`` to ``version``; returns the version it pointed at before, if any."""
    tags = table.tags.list()
    if name in tags:
        previous = int(tags[name]["version"])
        if previous != version:
            table.tags.update(name, version)
        return previous
    table.tags.create(name, version)
    return None


def tag_version(db_uri: str, collection: str, name: str, version: int | str | None = None, *,
                metrics: dict | None = None) -> dict:
    """Tag ``version`` (default: the latest) of the collection, in BOTH tables, optionally with eval metrics.

    An existing tag moves (``prod`` follows the last good version); the answer says where it was.
    Tagged versions are never removed by retention cleanup.
    """
    from tasks.lock import writer_lock

    check_tag_name(name)
    open_collection(_connect(db_uri), collection)  # before the lock: a typo must not create a lock file
    with writer_lock(db_uri, collection):
        db = _connect(db_uri)
        table = open_collection(db, collection)
        number = table.version if version is None else resolve_version(table, version, collection=collection)
        articles_version = articles_version_for(db, collection, number)
        previous = _set_tag(table, name, number)
        articles = _open_optional(db, articles_table_name(collection))
        if articles is not None and articles_version is not None:
            _set_tag(articles, name, articles_version)
        elif articles is not None and name in articles.tags.list():
            # The version predates the article table: a tag left on it from before would make a rollback to
            # this tag restore a later article state, whose articles the next run then trusts and never re-adds.
            articles.tags.delete(name)
        _log_run(db, collection, "tag", number, articles_version, tag=name, metrics=metrics)
    log.info("tagged %s version %d as %r", collection, number, name)
    return {"collection": collection, "tag": name, "version": number, "articles_version": articles_version,
            "previous_version": previous, "metrics": metrics}


def rollback(db_uri: str, collection: str, to: int | str) -> dict:
    """Make version (or tag) ``to`` the latest version of the collection again, in both tables.

    LanceDB ``restore`` commits a NEW version equal to the old one, so history is kept and a
    rollback can itself be rolled back. The article state is restored with it; otherwise the next
    reindex would trust body hashes of articles whose rows the rollback removed (and never re-add
    them) or forget articles whose rows it brought back (and never delete them).
    """
    from tasks.lock import writer_lock

    target = parse_version(to)
    open_collection(_connect(db_uri), collection)  # before the lock: a typo must not create a lock file
    with writer_lock(db_uri, collection):
        db = _connect(db_uri)
        table = open_collection(db, collection)
        number = resolve_version(table, target, collection=collection)
        articles_version = articles_version_for(db, collection, number, tag=target if isinstance(target, str) else None)
        before = table.version
        table.restore(number)
        table.checkout_latest()
        articles = _open_optional(db, articles_table_name(collection))
        if articles is not None:
            if articles_version is None:
                articles.delete("true")  # the article table was empty at that point
            elif articles_version != articles.version:
                articles.restore(articles_version)
                articles.checkout_latest()
        summary = {
            "rolled_back_to": number,
            "tag": target if isinstance(target, str) else None,
            "from_version": before,
            "rows": table.count_rows(),
            "articles": articles.count_rows() if articles is not None else 0,
        }
        paragraph_version, new_articles_version = current_versions(db, collection)
        _log_run(db, collection, "rollback", paragraph_version, new_articles_version, summary=summary)
        restored_schema = IndexMetadata.from_schema(table.schema, table=collection).schema_version
    result = {"collection": collection, "version": paragraph_version, "articles_version": new_articles_version,
              "restored_articles_version": articles_version, **summary}
    if restored_schema < SCHEMA_VERSION:
        # A version from before `migrate` left a collection no search could read until migrate ran again:
        # upgraded now, keeping every vector (a rollback of this rollback is one step back).
        from tasks.migrate import migrate_collection

        migrated = migrate_collection(db_uri, collection)
        result.update(migrated_from=migrated["from_version"], version=current_versions(_connect(db_uri), collection)[0])
    return result


def cleanup(table, retention_days: float) -> dict:
    """Remove versions older than ``retention_days`` (0: keep every version); tagged versions stay.

    Lance refuses the whole cleanup when a tagged version is older than the cutoff
    (``error_if_tagged_old_versions``), which would fail every index run once a tag grows old;
    here tagged versions are skipped instead, and only untagged ones are removed.
    """
    if retention_days <= 0:
        return {"old_versions": 0, "bytes_removed": 0}
    stats = table.to_lance().cleanup_old_versions(
        older_than=timedelta(days=retention_days), error_if_tagged_old_versions=False
    )
    table.checkout_latest()
    return {"old_versions": int(stats.old_versions), "bytes_removed": int(stats.bytes_removed)}


def cleanup_companions(db, collection: str, retention_days: float) -> dict:
    """Compact the article-state and run-log tables, and remove their versions nothing can reach any more.

    Run after :func:`cleanup` of the paragraph table. The run log only grows (its old versions serve
    nothing), so it follows the retention as it is. An article-state version is kept while a paragraph
    version that remains maps to it, since a rollback to that version restores both together: the
    article table's cutoff is the retention or the oldest such version, whichever is older. Tagged
    versions stay in both tables.
    """
    removed = {"articles_versions": 0, "runs_versions": 0}
    runs = _open_optional(db, runs_table_name(collection))
    articles = _open_optional(db, articles_table_name(collection))
    for table in (t for t in (runs, articles) if t is not None):
        table.optimize(cleanup_older_than=NO_CLEANUP)  # each run appends small fragments: one file again
    if retention_days <= 0:
        return removed
    if runs is not None:
        removed["runs_versions"] = cleanup(runs, retention_days)["old_versions"]
    if articles is not None:
        paragraphs = open_collection(db, collection)
        article_tags, times = articles.tags.list(), _version_times(articles)
        paragraph_times, logged = _version_times(paragraphs), load_runs(db, collection)
        tag_of = {int(info["version"]): name for name, info in paragraphs.tags.list().items() if name in article_tags}
        needed = {_articles_version(v, tag_of.get(v), article_tags, times, logged, paragraph_times)
                  for v in paragraph_times}
        needed -= {int(info["version"]) for info in article_tags.values()}  # cleanup keeps tagged ones anyway
        days = retention_days
        if oldest := min((times[v] for v in needed if v in times), default=None):
            # A second's margin: the oldest needed version must stay whatever the clock's rounding.
            days = max(days, (datetime.now(UTC) - oldest + timedelta(seconds=1)) / timedelta(days=1))
        removed["articles_versions"] = cleanup(articles, days)["old_versions"]
    return removed


__all__ = [
    "NO_CLEANUP",
    "VersionNotFoundError",
    "articles_version_for",
    "cleanup",
    "cleanup_companions",
    "current_versions",
    "list_versions",
    "load_runs",
    "open_collection",
    "record_run",
    "rollback",
    "tag_version",
]
