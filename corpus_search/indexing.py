"""Index from Python: ``index(sources, ...)`` for files, directories, dumps and URLs, and
``index_records(records, ...)`` for texts or dicts a program already holds.

Both run the same ``index-corpus`` flow as ``corpus-search index`` (so the Prefect UI shows them, and
they keep its incremental rules) and return the same summary as ``index --json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from query.errors import CorpusSearchError, InvalidQueryError

#: The origin of records indexed from Python when the caller names none.
DEFAULT_RECORDS_ORIGIN = "records"


class RecordError(CorpusSearchError, ValueError):
    """A record that ``index_records`` cannot take (not text or a mapping, no text): that record's failure."""


def _run_flow(**kwargs: Any) -> dict:
    """Run the index flow in this process and return its summary, whatever the outcome."""
    from deployments.prefect_env import prefect_environment

    prefect_environment()
    from flows.index_corpus import index_corpus
    from flows.summary import NothingIndexedError

    try:
        return index_corpus(**kwargs)
    except NothingIndexedError as exc:  # nothing could be indexed: the summary says why
        return exc.summary


def index(sources: str | Iterable[str], collection: str, db_uri: str | None = None, *,
          allow_empty_source: bool = False, allow_mass_delete: bool = False,
          workers: int | None = None, dask_address: str | None = None) -> dict:
    """Index files, directories, JSONL dumps or URLs into ``collection``, as ``corpus-search index`` does.

    ``workers`` / ``dask_address``: fetch, split and encode on a local Dask cluster of that many worker
    processes, or on the running cluster at that address (``--workers`` / ``--dask-address``; default:
    the ``CORPUS_SEARCH_WORKERS`` / ``CORPUS_SEARCH_DASK_ADDRESS`` settings).

    Returns the summary (the keys of ``index --json``: ``outcome``, ``articles_fetched``,
    ``paragraphs_encoded``, ``failures``...). One bad source or article is listed in ``failures``; it
    raises only when the arguments or the settings are wrong (``CorpusSearchError``: e.g. the collection was
    indexed with another encoder), or when the run cannot go on, whatever the articles: a full or read-only
    disk (``OSError``), a database that refuses writes (``tasks.store.DatabaseWriteError``). What it wrote
    before stays, and the next call resumes.
    """
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    elif not isinstance(sources, Iterable):
        raise InvalidQueryError(f"sources must be a path, a URL or a list of them, got {type(sources).__name__}")
    sources = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in sources]
    if bad := [s for s in sources if not isinstance(s, str)]:
        raise InvalidQueryError(f"a source is a path or URL (text or pathlib.Path), got {bad[0]!r}")
    from tasks.fetch import refuse_credential_urls

    refuse_credential_urls(sources)
    overrides: dict[str, Any] = {}
    if dask_address is not None:
        overrides["dask_address"] = dask_address
    elif workers is not None:
        overrides.update(workers=workers, dask_address=None)
    return _run_flow(sources=sources, collection=collection, db_uri=db_uri, settings_overrides=overrides or None,
                     allow_empty_source=allow_empty_source, allow_mass_delete=allow_mass_delete)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def record_line(record: Any, number: int) -> dict:
    """One record as a dump line: a string is a text whose id is its hash; a mapping needs ``text``
    (or ``paragraphs``) and gets ``id`` = the hash of its title and text when it has none."""
    from tasks.records import stable_hash

    if isinstance(record, str):
        if not record.strip():
            raise RecordError(f"record {number} is empty text")
        return {"id": stable_hash(record), "text": record}
    if not isinstance(record, Mapping):
        raise RecordError(
            f"record {number} is a {type(record).__name__}: give text, or a mapping like "
            "{'id': 'a1', 'title': 'Raft', 'text': '...', 'author': 'Ann'}"
        )
    text = record.get("text")
    if not isinstance(text, str) and "paragraphs" not in record:
        raise RecordError(f"record {number} has no 'text' (str): e.g. {{'id': 'a1', 'text': '...'}}")
    line = dict(record)
    if line.get("id") is None and line.get("_id") is None:
        line["id"] = stable_hash(str(line.get("title") or ""), text if isinstance(text, str) else
                                 json.dumps(line.get("paragraphs"), default=_json_default))
    elif line.get("id") is None:
        line["id"] = line.pop("_id")
    if line.get("id") is not None and not isinstance(line["id"], str):
        line["id"] = str(line["id"])  # as every version wrote it (a datetime id keeps its form)
    return line  # checked where every dump's id is (tasks.fetch.record_id)


def _dump_line(record: Any, number: int) -> str:
    """The record's dump line, or a line that fails as that record (keyed by its id when it has one)."""
    from tasks.fetch import RECORD_ERROR_KEY

    try:
        # ASCII: a lone surrogate (a broken export's "\udce9") reaches the reader, which names its field,
        # instead of failing this file's write.
        return json.dumps(record_line(record, number), ensure_ascii=True, default=_json_default)
    except (RecordError, TypeError, ValueError, RecursionError) as exc:
        error = str(exc) if isinstance(exc, RecordError) else f"record {number} cannot be written as JSON: {exc}"
        line: dict[str, Any] = {RECORD_ERROR_KEY: error}
        if isinstance(record, Mapping):
            for name in ("id", "_id"):
                if record.get(name) is not None:
                    line[name] = str(record[name])
        return json.dumps(line, ensure_ascii=True)


def index_records(records: Iterable[Any], collection: str, db_uri: str | None = None, complete: bool = False,
                  *, origin: str = DEFAULT_RECORDS_ORIGIN, allow_empty_source: bool = False,
                  allow_mass_delete: bool = False) -> dict:
    """Index texts or dicts (``{"id", "title", "text", **metadata}``) into ``collection``.

    The same incremental rules as files: a record with the same id and content is not re-encoded, a
    changed one is re-split (only its changed paragraphs re-encoded), and with ``complete=True`` the
    records of ``origin`` that are not in ``records`` any more are deleted (an empty ``records`` only with
    ``allow_empty_source``, and more than ``max_delete_fraction`` of the rows only with ``allow_mass_delete``,
    as for ``index``). Extra keys become the
    paragraphs' ``metadata`` (filter them as ``metadata.<key>``); ``published`` or ``date`` sets the
    ``published`` column; ``url`` or ``source`` is the hit's ``source``. ``origin`` keeps independent sets
    of records apart (``complete=True`` only ever deletes records of its own origin).

    ``records`` may be any iterable, a generator too: it is streamed to a temporary dump file, so a big
    corpus never has to fit in memory twice. Returns the summary of ``index --json``. A record that cannot
    be indexed (no text, an empty id, a field no text can hold) is that record's failure in ``failures``,
    named by its id when it has one; the others are indexed, and with ``complete=True`` the records gone
    are still deleted. A record without ``id`` is named by a hash of its title and text: an edited one is
    a new record (the old version stays unless ``complete=True``), so give records their own ids.
    """
    if not isinstance(origin, str) or not origin.strip() or "://" in origin:
        raise RecordError(f"origin must be a short name like 'records' or 'crm-notes', got {origin!r}")
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise RecordError("records must be a list (or iterable) of texts or mappings, not "
                          + ("one record" if isinstance(records, str | bytes | Mapping) else type(records).__name__))
    fd, path = tempfile.mkstemp(prefix="corpus-search-records-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for number, record in enumerate(records, start=1):
                fh.write(_dump_line(record, number))
                fh.write("\n")
        return _run_flow(sources=[], collection=collection, db_uri=db_uri, records_path=path,
                         records_origin=origin, complete_records=complete, allow_empty_source=allow_empty_source,
                         allow_mass_delete=allow_mass_delete)
    finally:
        os.unlink(path)
