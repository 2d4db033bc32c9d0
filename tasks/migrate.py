"""Upgrade a collection to the current index schema in place, keeping every vector (``corpus-search migrate``).

v1 → v2 (issue 12): ``source`` held the root that was indexed (a directory, a site, a dump), and the
file's path was only in ``doc_id``. v2 keeps that root as ``origin`` and makes ``source`` what a user
opens: the file's full path, or the URL. Paragraph ids and article keys hash (origin, doc_id), so
they do not change, and the next index run re-encodes nothing. The new ``published`` and ``metadata``
columns start empty: an article's are filled when it next changes (or at once with a re-index into a
new collection).

Every step is a LanceDB schema evolution or update (new versions, old ones kept until cleanup), taken
under the collection's writer lock; a migration stopped half-way is finished by running it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from query.errors import CollectionNotFoundError
from query.filters import sql_literal
from query.schema import (
    METADATA_KEY,
    METADATA_TYPE,
    SCHEMA_VERSION,
    IndexContractError,
    IndexMetadata,
    articles_table_name,
    validate_collection_name,
)
from tasks.fetch import LOCAL_SUFFIXES
from query.storage import table_names

#: Dump suffixes (``tasks.fetch.classify_source``): a dump's records keep the dump as their source.
_DUMP_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")


def source_sql(origin: str) -> str | None:
    """The SQL that computes a v2 ``source`` from a v1 row of ``origin``, or None when it stays as it is."""
    if "://" in origin:
        return "doc_id"  # a page: its doc_id is its URL
    name = origin.lower()
    if name.endswith(_DUMP_SUFFIXES) or Path(name).suffix in LOCAL_SUFFIXES:
        return None  # a dump, or a single file indexed by its own path
    return "concat(origin, '/', doc_id)" if not origin.endswith("/") else "concat(origin, doc_id)"


def _add_v2_columns(table, fields: list[pa.Field]) -> None:
    names = set(table.schema.names)
    if "origin" not in names:
        table.add_columns({"origin": "source"})  # v1's source was the root: it becomes the origin
    missing = [f for f in fields if f.name not in names]
    if missing:
        table.add_columns(missing)


def _fix_sources(table) -> int:
    """Rewrite ``source`` from ``origin`` (rows still holding the root only); returns rows updated."""
    origins = table.search().select(["origin"]).limit(None).to_arrow()["origin"].unique().to_pylist()
    updated = 0
    for origin in origins:
        sql = source_sql(origin)
        if sql is None:
            continue
        # Only rows whose source is still the root: a rerun after an interruption skips done rows.
        where = f"origin = {sql_literal(origin)} AND source = origin"
        n = table.count_rows(where)
        if n:
            table.update(where=where, values_sql={"source": sql})
            updated += n
    return updated


def migrate_collection(db_uri: str, collection: str) -> dict:
    """Upgrade ``collection`` to the current schema; a current one is left as it is.

    Returns ``{"collection", "from_version", "to_version", "rows", "sources_updated", "articles_updated"}``.
    """
    from query.storage import connect
    from tasks.collections import connect_existing, require_collection
    from tasks.lock import writer_lock

    validate_collection_name(collection)
    # Before the lock: a typo in the name or --db must not create a lock file or a database.
    require_collection(connect_existing(db_uri), collection)
    with writer_lock(db_uri, collection):
        db = connect(db_uri)
        names = set(table_names(db))
        if collection not in names:
            raise CollectionNotFoundError(f"collection {collection!r} does not exist in {db_uri!r}")
        table = db.open_table(collection)
        meta = IndexMetadata.from_schema(table.schema, table=collection)
        result = {"collection": collection, "from_version": meta.schema_version, "to_version": SCHEMA_VERSION,
                  "rows": table.count_rows(), "sources_updated": 0, "articles_updated": 0}
        if meta.schema_version == SCHEMA_VERSION:
            return result
        if meta.schema_version > SCHEMA_VERSION:
            raise IndexContractError(
                f"collection {collection!r} uses index schema v{meta.schema_version}, newer than this "
                f"corpus-search's v{SCHEMA_VERSION}: upgrade corpus-search instead"
            )
        _add_v2_columns(table, [pa.field("published", pa.timestamp("us", tz="UTC")),
                                pa.field("metadata", METADATA_TYPE)])
        result["sources_updated"] = _fix_sources(table)
        articles_name = articles_table_name(collection)
        if articles_name in names:
            articles = db.open_table(articles_name)
            _add_v2_columns(articles, [pa.field("file_stamp", pa.string())])
            result["articles_updated"] = _fix_sources(articles)
        # Last: the version in the metadata says the table is complete (an interrupted run is redone).
        data = json.loads(table.schema.metadata[METADATA_KEY])
        data["schema_version"] = SCHEMA_VERSION
        table.to_lance().update_schema_metadata({METADATA_KEY.decode(): json.dumps(data, sort_keys=True)})
        # Every row was rewritten, so the full-text and vector indexes covered none of them: lexical search
        # scanned the whole table until the next index run. Brought up to date here (versions are kept).
        from query.settings import get_settings
        from tasks.store import refresh_indexes

        settings = get_settings()
        table.checkout_latest()
        refresh_indexes(table, ann_min_rows=settings.ann_min_rows, ann_index_type=settings.ann_index_type,
                        retention_days=0)
        return result
