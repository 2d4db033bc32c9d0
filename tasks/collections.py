"""Collections you can manage: list them, drop one, delete documents from one. Plain functions, no Prefect.

A collection is its paragraph table ``C`` plus internal tables ``C__*`` (``C__articles``: per-article
fetch state; ``C__runs``: the run log of ``tasks.versions``) and, for a local database, its trained
re-rankers under ``<db>/_rerankers/C`` (``query.registry``). Dropping removes all of them; deleting
documents removes their paragraph rows and their article state, so a later index run of the same
source fetches and encodes them again.

Writes take the collection's writer lock (``tasks.lock``), so they never race an index run.
``corpus_search`` and the CLI import this module only when one of its functions is called.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from query.errors import CollectionNotFoundError, InvalidQueryError
from query.schema import is_internal_table
from query.versions import COMPANION_SUFFIXES
from tasks.records import printable
from tasks.store import chunks
from query.storage import table_names

log = logging.getLogger(__name__)

#: Values per ``IN (...)`` list / ``OR`` chain: keeps single SQL statements reasonable.
_CHUNK = 500


def _resolve_db(db_uri: str | None) -> str:
    """``db_uri``, or the configured database (CORPUS_SEARCH_DB_URI) when None."""
    if db_uri is None:
        from query.settings import get_settings

        return get_settings().db_uri
    return db_uri


def connect_existing(db_uri: str):
    """Connect to a database that must already exist: a missing local directory is a clear error, not a new db."""
    from query.storage import check_db_uri, connect

    return connect(check_db_uri(db_uri, must_exist=True))


def internal_tables(names: Iterable[str], collection: str) -> list[str]:
    """The internal tables of ``collection`` among ``names``: exactly its companions, never by prefix, because
    collection ``a_``'s tables (``a___articles``) start with ``a__`` too, and ``drop a`` deleted them."""
    own = {collection + suffix for suffix in COMPANION_SUFFIXES}
    return sorted(n for n in names if n in own)


def require_collection(db, collection: str) -> list[str]:
    """The database's table names; raises the usual CollectionNotFoundError when ``collection`` is not there."""
    names = table_names(db)
    if collection not in names:
        known = [n for n in names if not is_internal_table(n)]
        raise CollectionNotFoundError(
            f"collection {collection!r} does not exist in this database"
            + (f" (collections there: {', '.join(known)})" if known else " (it holds no collections)")
            + ". Check the name and --db; list them with: corpus-search collections"
        )
    return names


# --------------------------------------------------------------------------- list


def _tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 when missing); files removed while walking are skipped."""
    total = 0
    for p in path.rglob("*") if path.is_dir() else ():
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _last_index_run(db, name: str) -> dict | None:
    """Time (ISO 8601, UTC) and outcome of the collection's last logged index run, or None."""
    from tasks.versions import load_runs

    runs = [r for r in load_runs(db, name) if r["kind"] == "index"]
    if not runs:
        return None
    last = runs[-1]
    summary = last["summary"] or {}
    return {"at": last["at"].isoformat(), "outcome": summary.get("outcome"),
            "paragraphs_encoded": summary.get("paragraphs_encoded"), "seconds": summary.get("seconds")}


def _describe(db, db_uri: str, name: str, names: Sequence[str]) -> dict:
    from query.registry import read_registry
    from query.schema import IndexContractError, IndexMetadata, count_documents
    from query.storage import is_local_uri, local_path

    table = db.open_table(name)
    try:
        meta = IndexMetadata.from_schema(table.schema, table=name)
        encoder, dim, schema_version = meta.encoder, meta.dim, meta.schema_version
    except (IndexContractError, ValueError, KeyError, TypeError):  # not written by corpus-search, or damaged
        encoder = dim = schema_version = None
    try:
        reranker = read_registry(table).promoted
    except (ValueError, TypeError, KeyError):  # a damaged registry value must not break the listing
        reranker = None
    size = None
    if is_local_uri(db_uri):
        root = local_path(db_uri)
        size = sum(_tree_bytes(root / f"{t}.lance") for t in [name, *internal_tables(names, name)])
    return {
        "name": name,
        "rows": table.count_rows(),
        "documents": count_documents(db, table, name),
        "encoder": encoder,
        "dim": dim,
        "schema_version": schema_version,
        "last_indexed": _last_index_run(db, name),
        "size_bytes": size,
        "version": table.version,
        "reranker": reranker,
    }


def list_collections(db_uri: str | None = None) -> list[dict]:
    """Every collection of the database, by name: what it holds, how it was built, when it was last indexed.

    Each item: ``name``, ``rows`` (paragraphs), ``documents`` (distinct articles), ``encoder``, ``dim``,
    ``schema_version``, ``last_indexed`` ({``at``, ``outcome``, ...} of the last index run, or None),
    ``size_bytes`` (the table and its internal tables on disk; None for object storage), ``version``
    (the current LanceDB version) and ``reranker`` (the promoted re-ranker's id, or None).
    ``db_uri`` None: the configured database. A missing local database is an error, not an empty list.
    """
    db_uri = _resolve_db(db_uri)
    db = connect_existing(db_uri)
    names = table_names(db)
    return [_describe(db, db_uri, n, names) for n in names if not is_internal_table(n)]


# --------------------------------------------------------------------------- drop


def _stored_rerankers(table, collection: str) -> list[str]:
    """What dropping the collection removes of its re-rankers, as paths relative to the database: its models
    directory and every registered model inside the database (see :func:`query.registry.remove_models`).
    Read before the table goes (it holds the registry)."""
    from query.registry import read_registry, rel_models_root

    rel = [rel_models_root(collection)]
    try:
        rel += [e.path for e in read_registry(table).models]
    except (ValueError, TypeError, KeyError):  # a damaged registry: the standard directory still goes
        pass
    return rel


def drop_collection(name: str, db_uri: str | None = None) -> dict:
    """Remove collection ``name``: its table, its companions (``name__articles``, ``name__runs``), its re-rankers.

    Takes the writer lock, so an index run of the collection finishes first. Returns what went:
    ``collection``, ``rows``, ``tables_dropped``, ``tags_dropped`` (the saved versions' names, which go with the
    tables) and ``rerankers_removed`` (directories, or ``s3://`` prefixes).
    Raises ``CollectionNotFoundError`` for an unknown collection.
    """
    from query.registry import RerankerRegistryError, remove_models
    from query.schema import validate_collection_name
    from tasks.lock import writer_lock
    from tasks.rerank_registry import CLAIM_MARKER, training_runs

    validate_collection_name(name)
    db_uri = _resolve_db(db_uri)
    require_collection(connect_existing(db_uri), name)  # before the lock: a typo must not create a lock file
    with writer_lock(db_uri, name):
        db = connect_existing(db_uri)
        names = require_collection(db, name)  # again, under the lock: another drop may have won
        if running := training_runs(db_uri, name):  # its model directory would go from under it
            raise RerankerRegistryError(f"collection {name!r} has a train-reranker run in progress (training into "
                                       f"{running[0]}): let it finish, or stop it, then drop the collection (if "
                                       f"no run is training, delete {running[0] / CLAIM_MARKER})")
        table = db.open_table(name)
        rows = table.count_rows()
        tags = sorted(table.tags.list())
        stored = _stored_rerankers(table, name)
        dropped = []
        # Internal tables first: if the process dies half-way, the collection is still listed and can be dropped again.
        for t in [*internal_tables(names, name), name]:
            db.drop_table(t)
            dropped.append(t)
        # Models last: a crash before here leaves them, never a collection whose promoted model is gone.
        rerankers = remove_models(db_uri, stored)
    log.info("dropped collection %s: %d rows, tables %s, re-rankers %s", name, rows, dropped, rerankers)
    return {"collection": name, "rows": rows, "tables_dropped": dropped, "tags_dropped": tags,
            "rerankers_removed": rerankers}


# --------------------------------------------------------------------------- delete documents


def source_predicate(source: str) -> str:
    """SQL matching the rows of one ``--source`` value, bound safely.

    The value matches the ``source`` column exactly (a file path or URL). A directory -- a value ending
    in '/' or an existing local directory -- also matches every document under it, by prefix; a value
    ending in '/*' matches only the documents under it (not a page at the directory URL itself). Local
    paths match as given and as the indexer records them (absolute, symlinks resolved); URLs as given
    and in the indexer's canonical form (no fragment, lower-case scheme and host).
    """
    from query.filters import sql_literal

    if not isinstance(source, str) or not source:
        raise InvalidQueryError(f"a source to delete must be a non-empty path or URL, got {source!r}")
    # 'https://site/blog/*': every document under it, never the page 'https://site/blog/' itself.
    under_only = source.endswith("/*")
    exact, prefixes = _source_forms(source[:-1] if under_only else source)
    try:
        under = [f"starts_with(source, {sql_literal(p)})" for p in prefixes]
        if under_only:  # the directory page itself ('https://site/blog/') is not under it
            return f"(({' OR '.join(under)}) AND source NOT IN ({', '.join(sql_literal(p) for p in prefixes)}))"
        clauses = [f"source = {sql_literal(v)}" for v in exact] + under
    except ValueError as exc:  # a NUL character
        raise InvalidQueryError(f"source {source!r}: {exc}") from exc
    return "(" + " OR ".join(clauses) + ")"


def _source_forms(source: str) -> tuple[list[str], list[str]]:
    """The ``source`` values a ``--source`` value names: exactly (as given, resolved, canonical), and by prefix
    (a directory: every document under it), each as the indexer stores it."""
    exact = [source]
    prefixes = [source] if source.endswith("/") else []
    if source.lower().startswith(("http://", "https://")):
        # As the indexer stores it (`index` took the URL with a #fragment or an upper-case scheme too): an
        # exact match, and a prefix only for a directory URL the canonical form does not change beyond case
        # and port ('https://site/blog#/' is the page 'https://site/blog', never every URL under it).
        url = _canonical_if_url(source)
        exact.append(url)
        if source.endswith("/") and not {"#", "?"} & set(source) and url.endswith("/"):
            prefixes.append(url)
    elif "://" not in source:
        path = Path(source).expanduser()
        resolved = str(path.resolve())
        exact.append(resolved)
        if source.endswith("/") or path.is_dir():
            prefixes.append(resolved.rstrip("/") + "/")
    # As the indexer stores names that are not UTF-8 (a shell hands them over as surrogate escapes): \xNN.
    return list(dict.fromkeys(map(printable, exact))), list(dict.fromkeys(map(printable, prefixes)))


def origin_predicate(origin: str) -> str:
    """SQL matching the rows indexed through one root (``origin``): as given, and for a local path as
    the indexer records it (absolute, symlinks resolved, no trailing '/')."""
    from query.filters import sql_literal

    if not isinstance(origin, str) or not origin or "\x00" in origin:
        raise InvalidQueryError(f"an origin must be a non-empty path, URL or records origin, got {origin!r}")
    values = [origin, origin.rstrip("/") or origin]
    if "://" not in origin:
        values.append(str(Path(origin).expanduser().resolve()))
    values = [printable(v) for v in values]  # as the indexer stores a name that is not UTF-8
    return "(" + " OR ".join(f"origin = {sql_literal(v)}" for v in dict.fromkeys(values)) + ")"


def _refuse_page_and_site(table, sources: Sequence[str]) -> None:
    """Refuse a directory URL ('https://site/', 'https://site/docs/') that is both an indexed page and the
    root of other indexed pages: a user naming a site's home page deleted the whole site. Either reading is
    one explicit flag away, so nothing is guessed."""
    for source in dict.fromkeys(sources):
        if not (source.lower().startswith(("http://", "https://")) and source.endswith("/")):
            continue
        # What the source matches is the page and what is under it: more than what is under it is the page.
        if (under := table.count_rows(source_predicate(source + "*"))) and \
                table.count_rows(source_predicate(source)) > under:
            raise InvalidQueryError(
                f"{source} is an indexed page and the root of other pages ({under} paragraphs under it): say "
                f"which to delete, --doc-id {_canonical_if_url(source)} for that page alone (doc_ids=), or "
                f"--source '{source}*' for every page under it, or both")


def _canonical_if_url(value: str) -> str:
    """``value`` in the indexer's canonical URL form when it is an http(s) URL, else unchanged."""
    if not value.lower().startswith(("http://", "https://")):
        return value
    from tasks.urls import canonical_url

    try:
        return canonical_url(value)
    except ValueError:
        return value


def _predicates(doc_ids: Sequence[str], sources: Sequence[str], origin: str | None = None) -> list[str]:
    """WHERE clauses (each bounded in size) that together match the documents named."""
    from query.filters import in_list

    for d in doc_ids:
        if not isinstance(d, str) or not d or "\x00" in d:
            raise InvalidQueryError(f"a doc id to delete must be non-empty text without NUL, got {d!r}")
    scope = f" AND {origin_predicate(origin)}" if origin is not None else ""
    # A page's doc id is its canonical URL: the URL as it was given to index matches too. A file name that is
    # not UTF-8 is stored as the indexer shows it (\xNN), which is also what the shell's form becomes here.
    named = [form for d in map(printable, doc_ids) for form in (d, _canonical_if_url(d))]
    out = [f"({in_list('doc_id', chunk)}){scope}" for chunk in chunks(list(dict.fromkeys(named)), _CHUNK)]
    out += [" OR ".join(chunk) for chunk in chunks([source_predicate(s) for s in dict.fromkeys(sources)], 50)]
    return out


def _article_predicates(pairs: set[tuple[str, str]]) -> list[str]:
    """Article-state rows of the given (source, doc_id) pairs, grouped by source."""
    from query.filters import in_list, sql_literal

    by_source: dict[str, list[str]] = {}
    for source, doc_id in sorted(pairs):
        by_source.setdefault(source, []).append(doc_id)
    return [f"source = {sql_literal(s)} AND {in_list('doc_id', chunk)}"
            for s, ids in by_source.items() for chunk in chunks(ids, _CHUNK)]


class NothingDeletedWarning(UserWarning):
    """A delete matched no document; the message says what the collection holds under the names given."""


def _roots(table, doc_id_predicates: list[str]) -> dict[str, set[str]]:
    """The roots (origins) each matched doc id is held under."""
    roots: dict[str, set[str]] = {}
    for where in doc_id_predicates:
        for r in table.search().where(where).select(["doc_id", "origin"]).limit(None).to_arrow().to_pylist():
            roots.setdefault(r["doc_id"], set()).add(r["origin"])
    return roots


def _refuse_ambiguous_doc_ids(tables: list, doc_id_predicates: list[str]) -> None:
    """Raise, before anything is deleted, when a doc id names documents under more than one root, in the
    paragraph table or the article states (a document with no text has a state and no rows: an unscoped
    delete removed another root's state that nobody named)."""
    roots: dict[str, set[str]] = {}
    for table in tables:
        for d, o in _roots(table, doc_id_predicates).items():
            roots.setdefault(d, set()).update(o)
    ambiguous = {d: sorted(o) for d, o in roots.items() if len(o) > 1}
    if ambiguous:
        shown = "; ".join(f"{d!r} under {', '.join(map(repr, o))}" for d, o in sorted(ambiguous.items())[:5])
        raise InvalidQueryError(
            f"{len(ambiguous)} doc id(s) name documents under more than one root ({shown}): nothing was deleted. "
            "Say which with --origin ROOT (origin= from Python)")


def _exact_source(value: str) -> str:
    """SQL matching a document whose source is ``value`` itself (as given, resolved, or as a canonical URL),
    never the documents under a folder: the hint that says "use --source" must not name a folder's worth."""
    from query.filters import sql_literal

    return " OR ".join(f"source = {sql_literal(v)}" for v in _source_forms(value)[0])


def _warn_nothing_deleted(table, doc_ids: list[str], origin: str | None, has_origin: bool) -> None:
    """Doc ids that matched nothing: say where those ids are (another root), or what a doc id looks like.

    A doc id is a path under its root (``notes/a.md``), not the file's full path; a wrong ``--origin`` or a
    full path deletes 0 rows, and without a hint that reads as "deleted" to a script's author.
    """
    import warnings

    elsewhere = _roots(table, _predicates(doc_ids, [])) if has_origin and origin is not None else {}
    if elsewhere:
        roots = sorted({o for os_ in elsewhere.values() for o in os_})
        hint = (f"under --origin {origin!r} there is none of them, but {len(elsewhere)} of them are under "
                f"{', '.join(map(repr, roots[:5]))}: give one of those as --origin (origin=)")
    elif sources := [d for d in doc_ids if table.count_rows(_exact_source(d))]:
        hint = (f"{sources[0]!r} is a document's source (its full path or URL), not a doc id: delete it with "
                f"--source {sources[0]} (sources=)")
    else:
        # A sample of the kind of name given (a path, or a URL), so that the example shows what to type.
        url = any("://" in d for d in doc_ids)
        kind = "starts_with(doc_id, 'http')" if url else "NOT starts_with(doc_id, 'http')"
        sample = (table.search().where(kind).select(["doc_id", "source"]).limit(1).to_arrow().to_pylist()
                  or table.search().select(["doc_id", "source"]).limit(1).to_arrow().to_pylist())
        shape = ("" if not sample else
                 f" (a page's doc id is its URL, e.g. {sample[0]['doc_id']!r})" if "://" in sample[0]["doc_id"] else
                 f" (a doc id is a path under the root it was indexed through, e.g. {sample[0]['doc_id']!r} of "
                 f"{sample[0]['source']!r}; --source takes a full path or URL)")
        hint = "the collection holds no document with " + ("that id" if len(doc_ids) == 1 else "those ids") + shape
    warnings.warn(f"nothing deleted: {hint}", NothingDeletedWarning, stacklevel=3)


def delete_documents(collection: str, doc_ids: Sequence[str] | None = None, sources: Sequence[str] | None = None,
                     db_uri: str | None = None, origin: str | None = None) -> dict:
    """Delete documents from ``collection``: every paragraph row and the article state of each one named.

    ``doc_ids``: exact doc ids. A doc id is a path under the root a document was indexed through, so
    two roots can each hold one: ``origin`` (that root: the directory, dump, site or records origin)
    says which, and without it a doc id found under several roots deletes nothing and raises
    :class:`InvalidQueryError` naming them. ``sources``: file paths or URLs, exactly; a directory
    (trailing '/' or an existing local directory) means every document under it. A document matching
    any of them goes.
    Nothing matching is not an error: the counts are 0, and for doc ids a :class:`NothingDeletedWarning`
    says where those ids are (another root) or what a doc id looks like. Search indexes stay valid (deleted rows are never
    returned), and a later index run of the same source indexes the deleted documents again, since
    their article state is gone. Returns ``{"collection", "rows_deleted", "articles_deleted"}``.
    """
    from query.schema import IndexMetadata, articles_table_name, validate_collection_name
    from tasks.lock import writer_lock
    from tasks.versions import _log_run

    if isinstance(doc_ids, str) or isinstance(sources, str):
        raise InvalidQueryError("doc_ids and sources take lists, e.g. doc_ids=['blog/raft.md'], not one string")
    doc_ids, sources = list(doc_ids or []), list(sources or [])
    if not doc_ids and not sources:
        raise InvalidQueryError("say which documents to delete: --doc-id ID or --source PATH|URL (doc_ids=/sources=)")
    if origin is not None and not doc_ids:
        raise InvalidQueryError("--origin says which root a --doc-id is under (origin= scopes doc_ids=); a "
                                "source is already a full path or URL")
    validate_collection_name(collection)
    by_id = _predicates(doc_ids, [], origin)
    predicates = by_id + _predicates([], sources)
    db_uri = _resolve_db(db_uri)
    require_collection(connect_existing(db_uri), collection)
    with writer_lock(db_uri, collection):
        db = connect_existing(db_uri)
        names = require_collection(db, collection)
        table = db.open_table(collection)
        IndexMetadata.from_schema(table.schema, table=collection)  # a table corpus-search did not write: say so
        has_origin = "origin" in table.schema.names
        cols = ["id", "source", "doc_id"] + (["origin"] if has_origin else [])
        if has_origin and doc_ids and origin is None:
            states = [db.open_table(articles_table_name(collection))] if articles_table_name(collection) in names else []
            _refuse_ambiguous_doc_ids([table, *states], by_id)
        _refuse_page_and_site(table, sources)
        pairs: set[tuple[str, str]] = set()
        row_ids: set[str] = set()  # predicates may overlap (a doc id and its folder): each row counts once
        matching = []
        for where in predicates:
            hit = table.search().where(where).select(cols).limit(None).to_arrow().to_pylist()
            if not hit:
                continue
            # The article table may key a document by its file path or by the root it was indexed under.
            pairs |= {(r["source"], r["doc_id"]) for r in hit}
            pairs |= {(r["origin"], r["doc_id"]) for r in hit if has_origin and r["origin"]}
            row_ids.update(r["id"] for r in hit)
            matching.append(where)
        rows = len(row_ids)
        # The article state goes first: a crash before the rows go leaves rows without state, which the
        # next index run of the source reads again (encoding nothing), and a repeated delete removes. The
        # other order left state without rows: the next index run took the documents for unchanged, for good.
        articles_deleted = 0
        if articles_table_name(collection) in names:
            articles = db.open_table(articles_table_name(collection))
            # The same predicates catch article states without rows (e.g. an empty file); the pairs catch
            # states recorded under the indexed root rather than the document's own source.
            for where in [*predicates, *_article_predicates(pairs)]:
                if n := articles.count_rows(where):
                    articles_deleted += n
                    articles.delete(where)
        for where in matching:
            table.delete(where)
        result = {"collection": collection, "rows_deleted": rows, "articles_deleted": articles_deleted}
        if not rows and not articles_deleted and doc_ids:
            _warn_nothing_deleted(table, doc_ids, origin, has_origin)
        elif not rows and not articles_deleted:
            import warnings

            warnings.warn(f"nothing deleted: no document's source is {', '.join(map(repr, sources[:3]))} or under it: "
                          "--source takes a file's path or a URL exactly, a folder (every document under it) or "
                          "DIR/* (a shell pattern such as *.md is not one)", NothingDeletedWarning, stacklevel=2)
        if rows or articles_deleted:
            # Logged with both versions, so a rollback to this point restores the matching article state.
            articles_version = db.open_table(articles_table_name(collection)).version \
                if articles_table_name(collection) in names else None
            _log_run(db, collection, "delete", table.version, articles_version,
                     summary={**result, "doc_ids": doc_ids[:100], "sources": sources[:100]})
    log.info("deleted from %s: %d rows, %d articles", collection, rows, articles_deleted)
    return result


__all__ = ["NothingDeletedWarning", "connect_existing", "delete_documents", "drop_collection", "internal_tables", "list_collections",
           "origin_predicate", "require_collection", "source_predicate"]
