"""The ``index-corpus`` flow: sources → articles → paragraphs → vectors → LanceDB.

Reads like the pipeline's table of contents; the logic lives in ``tasks/``. Incremental and
idempotent: unchanged articles cost no encoding, only new paragraph ids are encoded, vanished
paragraphs and articles are deleted, failed fetches keep what was indexed before.

Nothing is lost to bad input: one bad article (or a whole batch that raised) is that article's
failure, never the run's; an empty or unreadable source root keeps its rows unless
``allow_empty_source``; and a run that would delete more than ``max_delete_fraction`` of the
collection deletes nothing unless ``allow_mass_delete``. When nothing at all could be indexed the
run ends Failed and raises ``NothingIndexedError`` (carrying the summary) to direct callers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State

# Task arguments are big batches of plain data: quote() spares Prefect walking every element of them
# in search of futures to resolve (seconds per run on a few thousand articles).
from prefect.utilities.annotations import quote

from flows.hooks import log_cancellation, log_crash, log_failure, report_partial
from flows.runners import Shards, api_for_workers, task_runner
from flows.summary import (
    IndexSummary,
    NothingIndexedError,
    api_only,
    artifact_key,
    printable,
)
from query.errors import CorpusSearchError, DatabaseLocationError, ModelUnavailableError
from query.hits import whole_number
from query.schema import IndexContractError, validate_collection_name
from query.settings import Settings, refuse_secret_overrides, settings_with
from tasks import stages
from tasks.fetch import (
    LOCAL_SUFFIXES,
    SourceSpec,
    classify_source,
    hidden_path,
    list_directory,
    open_text,
)
from tasks.lock import writer_lock
from tasks.not_found import judge_not_found
from tasks.store import DatabaseWriteError, database_io_error, storage_exhausted
from tasks.records import ArticleState, article_key
from tasks.text import READ_ERRORS
from tasks.urls import without_credentials


def work_units(spec: SourceSpec, batch: int, settings: Settings, unreadable: list[str] | None = None) -> Iterator[list]:
    """Cheap enumeration of a source in batches: URLs, relative file paths, or (line number, line) pairs.

    ``unreadable`` collects a directory's folders and files that could not be listed or looked at.

    A dump line longer than ``fetch_max_bytes`` is cut there (and fails as oversized when parsed),
    so one runaway line never has to fit in memory.
    """
    if spec.kind == "file":
        yield [Path(spec.root).name]
    elif spec.kind == "directory":
        paths = list_directory(Path(spec.root), follow_symlinks=settings.follow_symlinks, unreadable=unreadable)
        for i in range(0, len(paths), batch):
            yield paths[i : i + batch]
    elif spec.kind == "jsonl":
        limit = settings.fetch_max_bytes
        with open_text(Path(spec.root)) as fh:
            lines: list[tuple[int, str]] = []
            lineno = 0
            while line := fh.readline(limit + 1):
                lineno += 1
                if len(line) > limit and not line.endswith("\n"):
                    while (rest := fh.readline(limit)) and not rest.endswith("\n"):
                        pass  # skip the remainder of the oversized line
                if line.strip():
                    lines.append((lineno, line))
                if len(lines) >= batch:
                    yield lines
                    lines = []
            if lines:
                yield lines


def _progress(enabled: bool):
    """The run's progress bar on stderr (paragraphs encoded, articles read), or None when not ``enabled``."""
    if not enabled:
        return None
    from flows.progress import IndexProgress

    return IndexProgress()


def _unit_label(spec: SourceSpec, unit) -> str:
    """A work unit as a failure names it: a URL, a file path under its root, or dump:line."""
    if isinstance(unit, tuple):
        return f"{spec.origin or Path(spec.root).name}:{unit[0]}"
    return printable(str(unit))


@dataclass
class Vanished:
    """Articles of one origin that disappeared from a fully enumerated source; ``confirmed`` by
    --allow-empty-source."""

    origin: str
    doc_ids: list[str]
    confirmed: bool = False
    rows: int = 0
    gone_pages: bool = False  # pages whose server answered 410 Gone, not files missing from a listing


@dataclass
class Batch:
    """One batch in flight: its work ``units`` as the shards get them, the ``unit`` list its failures name,
    and the futures of its prepare and encode shards."""

    spec: SourceSpec
    unit: list
    units: list
    prepared: Any
    encoded: Any
    broken: bool = False  # a dump line of it could not be parsed
    results: list = field(default_factory=list)  # its shards' results, once the flow has them
    futures: list = field(default_factory=list)  # its shards' futures, the retried ones included

    def release(self, shards: Shards) -> None:
        """Free what it held once it is written (or failed): the run's memory must not grow with the corpus."""
        stages.release_batch(self.units, *self.results)
        shards.release(self.prepared, self.encoded, *self.futures)
        self.results, self.futures = [], []


def is_local_file_state(state: ArticleState) -> bool:
    """Whether a remembered article is one local file (not a dump record, a URL or a Python record):
    its source is a file path under its origin (a directory) or the origin itself (a single file)."""
    source, origin = state.source, state.origin or state.source
    return ("://" not in source and Path(source).suffix.lower() in LOCAL_SUFFIXES
            and (source == origin or source.startswith(origin.rstrip("/") + "/")))


def under(root: str, state: ArticleState) -> bool:
    """Whether a remembered article belongs to the fully enumerated source ``root``: indexed through it,
    or a file below it that an inner root indexed first (roots may overlap) and that ``root``'s walk lists.

    A hidden file or folder given as a source of its own (``notes/.drafts``) is below ``notes`` but never
    listed by its walk: counted as ``notes``'s, it looked deleted on every run that indexed ``notes``.
    """
    origin = state.origin or state.source
    if origin == root:
        return True
    prefix = root.rstrip("/") + "/"
    return (is_local_file_state(state) and state.source.startswith(prefix)
            and not hidden_path(Path(state.source[len(prefix):])))


def local_order(specs: list[SourceSpec]) -> list[SourceSpec]:
    """Outer directories before the directories inside them, so that a file reached through two
    overlapping roots is stored under the outer one (with its path relative to it)."""
    return sorted(specs, key=lambda s: (s.kind != "directory", len(Path(s.root).parts)))


@flow(name="index-corpus", flow_run_name="index-{collection}", log_prints=True, on_failure=[log_failure],
      on_crashed=[log_crash], on_cancellation=[log_cancellation])
def index_corpus(
    sources: list[str],
    collection: str = "default",
    db_uri: str | None = None,
    batch_articles: int = 512,
    settings_overrides: dict | None = None,
    progress: bool = False,
    allow_empty_source: bool = False,
    allow_mass_delete: bool = False,
    records_path: str | None = None,
    records_origin: str = "records",
    complete_records: bool = False,
) -> dict:
    """Index ``sources`` (URLs, files, directories, JSONL dumps) into ``collection``; returns the summary.

    ``allow_empty_source``: an existing but empty source root really is empty, so its indexed articles
    are deleted (without it they are kept: an empty mount point looks exactly like that).
    ``allow_mass_delete``: go ahead when the run would delete more than ``max_delete_fraction`` of the
    collection's rows. Raises ``NothingIndexedError`` (the run ends Failed) when nothing could be indexed.
    ``records_path``: a JSONL dump of records from ``corpus_search.index_records``, stored under
    ``records_origin``; its vanished records are deleted only when ``complete_records``.
    """
    logger = get_run_logger()
    validate_collection_name(collection)  # before any file is touched
    batch_articles = whole_number("batch_articles", batch_articles, "articles per batch, e.g. 512")
    refuse_secret_overrides(settings_overrides)
    overrides = dict(settings_overrides or {})
    overrides["collection"] = collection
    if db_uri:
        overrides["db_uri"] = db_uri
    settings = settings_with(overrides)
    started = time.perf_counter()
    summary = IndexSummary(collection)
    specs, local = [], []
    for s in sources:
        # A source that cannot be indexed as given is that source's failure, never the run's: a missing
        # path may be an unmounted disk (its rows are kept), and one malformed URL in a scheduled list
        # must not stop the other pages from being indexed, run after run.
        try:
            spec = classify_source(s)
        except ValueError as exc:
            summary.fail(without_credentials(s), str(exc))  # the failure is logged and stored: no password
            continue
        (specs if spec.kind == "url" else local).append(spec)
    if records_path:
        local.append(SourceSpec(records_path, "jsonl", records_path, origin=records_origin))
    if not specs and not local and not stages.collection_exists(settings):
        # Every source failed as given, and the collection is new: create no empty collection. (An existing
        # one goes on below, so that the failed run is in its run log, as any other.)
        summary.seconds = time.perf_counter() - started
        return _report(summary, collection, logger)
    bar = _progress(progress)

    runner = task_runner(settings)  # a bad --dask-address fails here, before anything is written
    with writer_lock(settings.db_uri, collection), api_for_workers(runner, settings.dask_address), (runner or contextlib.nullcontext()), \
            _published_if_aborted(summary, settings, logger, started):
        shards = Shards(settings, runner)
        logger.info("index run: %s, %d batches in flight", shards.where, shards.depth)
        states = stages.load_states(settings)
        # A local file is stored once, under the identity (origin, doc_id) of the root that first indexed it:
        # its full path finds that identity when another, overlapping root reaches it.
        claimed = {s.source: (s.origin or s.source, s.doc_id) for s in states.values() if is_local_file_state(s)}
        done: set[str] = set()  # files already handled in this run (through an overlapping root)
        rows_before = stages.count_rows(settings)
        removed: list[tuple[str, str]] = []  # (origin, URL) of indexed pages that answered 410 Gone
        not_found: list[tuple[str, str, str]] = []  # (origin, URL, error) of indexed pages that answered 404

        def commit(batch: Batch, seen: set[str]) -> None:
            """Write one batch whose shards ran (in batch order; only the flow writes); counted once written.

            Raises what its shards raised: ``guarded`` makes that the batch's failure.
            """
            prepared, encoded = batch.prepared.result(), batch.encoded.result()
            batch.results += [prepared, encoded]
            if states and not prepared.saw_articles_table:
                # Every batch would be planned as new: all re-encoded, no stale paragraph ever deleted.
                raise DatabaseLocationError(
                    f"a Dask worker cannot see the database {printable(settings.db_uri)!r} (its collection "
                    f"{settings.collection!r} is missing there): every worker must reach the database at the same "
                    "path, a shared filesystem or an object store (s3://...), or index without --dask-address")
            if batch.spec.kind == "jsonl":
                again = frozenset(k for k in prepared.keys if k in seen)
                if again:  # a dump repeats an id of an earlier batch (rare): prepare it again without those
                    retry = shards.start(batch.spec, batch.units, skip_keys=again)
                    batch.futures += retry
                    prepared, encoded = (f.result() for f in retry)
                    batch.results += [prepared, encoded]
                if prepared.any_failed:
                    batch.broken = True
                for doc in prepared.duplicates:
                    summary.fail(doc, "duplicate doc_id in this source: the first copy is indexed, later ones skipped (a "
                                      "dump record without 'id' or '_id' is named by its title, one given to "
                                      "index_records by a hash of its text: give each record its own 'id')")
            seen.update(prepared.keys)
            split = prepared.split
            with _database_writes(settings):
                if split.remember_max_tokens:
                    stages.remember_max_tokens(split.remember_max_tokens, settings)
                if split.restamp:
                    stages.restamp_files(quote(split.restamp), settings)
            summary.tally("undated", [f"{doc} ({raw[:80]})" for doc, raw in split.undated])
            summary.tally("empty", split.empty)
            summary.tally("error_page", split.error_pages)
            summary.tally("not_utf8", prepared.not_utf8)
            summary.tally("gone", prepared.gone)
            removed.extend(prepared.removed)
            not_found.extend(prepared.not_found)
            if split.changed:
                plan = prepared.plan
                with _database_writes(settings):
                    stages.write_batch(quote(plan), quote(encoded.vectors), quote(split.changed), settings, encoded.meta)
                summary.articles_fetched += len(split.changed)
                encoded_n = len(plan.new) - plan.reused
                summary.paragraphs_added += len(plan.new)
                summary.paragraphs_encoded += encoded_n
                summary.paragraphs_reused += plan.reused
                summary.paragraphs_moved += len(plan.moved)
                summary.paragraphs_deleted += len(plan.deleted_ids)
                summary.encode_seconds += encoded.seconds
                logger.info(
                    "batch: %d articles changed, %d paragraphs encoded (%.0f/s), %d reused, %d moved, %d deleted",
                    len(split.changed), encoded_n, encoded_n / encoded.seconds if encoded.seconds else 0,
                    plan.reused, len(plan.moved), len(plan.deleted_ids),
                )
                if bar is not None and shards.remote:  # in this process, the encode shard moves the bar itself
                    bar.planned(encoded_n)
                    bar.encoded(encoded_n)
            summary.articles_unchanged += prepared.unchanged
            for doc, err in prepared.failed:
                summary.fail(doc, err)
            if bar is not None:
                bar.articles_read(len(prepared.keys))

        def guarded(spec: SourceSpec, unit: list, work) -> bool:
            """Run one batch; if it raises (after its task's retries), each of its units fails, the run goes on."""
            try:
                work()
                return True
            except (DatabaseLocationError, ModelUnavailableError, DatabaseWriteError, IndexContractError):
                # No batch of this run can be right (a Dask worker that cannot see the database, or load the
                # model, fails its share of every run; a database that refuses writes; settings the collection
                # was not indexed with): stop it, with the fix.
                raise
            except Exception as exc:  # noqa: BLE001 - one bad batch must not sink the run
                if storage_exhausted(exc):  # a full disk is no article's failure: every later batch would fail too
                    raise
                logger.warning("a batch of %s failed: %s: %s", printable(spec.spec), type(exc).__name__, exc)
                for u in unit:
                    summary.fail(_unit_label(spec, u), f"{type(exc).__name__}: {exc}")
                return False

        def drain(window: deque[Batch], seen: set[str], keep: int = 0) -> bool:
            """Commit the oldest batches in flight until ``keep`` remain; False if a batch failed (or a dump
            batch held a line that is no record): then nothing of its source is taken for deleted this run (a
            renamed file's old name would go while its new name's batch failed, and its text with them)."""
            intact = True
            while len(window) > keep:
                batch = window.popleft()
                ok = guarded(batch.spec, batch.unit, lambda batch=batch: commit(batch, seen))
                intact = intact and ok and not batch.broken
                batch.release(shards)
            return intact

        def launch(window: deque[Batch], seen: set[str], spec: SourceSpec, unit: list, units: list) -> bool:
            """Start one batch's shards, then commit the oldest batches beyond the pipeline's depth."""
            window.append(Batch(spec, unit, units, *shards.start(spec, units)))
            return drain(window, seen, keep=max(shards.depth - 1, 0))

        # URLs: fetched in concurrent batches, conditionally (ETag / Last-Modified).
        urls = list(dict.fromkeys(s.spec for s in specs))
        url_window: deque[Batch] = deque()
        url_seen: set[str] = set()
        for i in range(0, len(urls), batch_articles):
            chunk = urls[i : i + batch_articles]
            launch(url_window, url_seen, SourceSpec("urls", "url", ""), chunk, chunk)
        drain(url_window, url_seen)

        # Local sources are fully enumerated, so articles that vanished from them are deleted (below).
        vanished: list[Vanished] = []
        judged_gone: set[str] = set()
        dirs = [printable(s.root) for s in local if s.kind == "directory"]
        for spec in local_order(local):
            source = printable(spec.root)
            # A directory given inside this one judges its own files (an empty one keeps them, as a source
            # that holds no articles does): judged here, an unmounted inner disk's articles were deleted.
            inner = [d for d in dirs if d != source and d.startswith(source.rstrip("/") + "/")]
            seen: set[str] = set()
            window: deque[Batch] = deque()
            complete, enumerated = True, 0
            unreadable: list[str] = []
            try:
                units = work_units(spec, batch_articles, settings, unreadable)
                if spec.kind == "directory":
                    units = list(units)  # list the whole tree first: an unreadable root fails before any write
                for unit in units:
                    enumerated += len(unit)
                    if spec.kind == "jsonl":
                        # A broken line's article is unknown: then no article of the dump may look vanished.
                        complete = launch(window, seen, spec, unit, unit) and complete
                        continue
                    files: list[stages.FileUnit] = []
                    for u in unit:
                        label = _unit_label(spec, u)
                        path = source if spec.kind == "file" else f"{source.rstrip('/')}/{label}"
                        origin, doc_id = claimed.setdefault(path, (source, label))
                        # Everything this batch names counts as seen, even if the batch fails: a failed
                        # read must keep its rows, never look like a deletion.
                        seen.add(article_key(origin, doc_id))
                        if path not in done:  # else an overlapping root already handled it in this run
                            done.add(path)
                            files.append(stages.FileUnit(u, path, doc_id, origin))
                    if files:
                        complete = launch(window, seen, spec, unit, files) and complete
                complete = drain(window, seen) and complete
            except (DatabaseLocationError, DatabaseWriteError):
                raise  # the database's, not the source's
            except READ_ERRORS as exc:  # unreadable root, or a dump that breaks mid-stream (a truncated .gz)
                if storage_exhausted(exc):  # a batch's write on a full disk, re-raised by guarded: no read error
                    raise
                drain(window, seen)  # the batches read before the break are written, as without pipelining
                summary.fail(spec.spec, f"cannot read source {printable(spec.spec)!r}: {exc}; its indexed articles are kept")
                continue
            if spec.origin and not complete_records:  # records: only a complete set says what vanished
                continue
            if not complete:
                # In the summary, not only the log: a nightly dump that keeps one unreadable line would
                # otherwise never delete a withdrawn record again, and nobody would know why.
                said = (f"{printable(spec.origin or source)}: some of it could not be read (a line that is not a JSON record, "
                        "or a batch that failed), so no article of it was taken for deleted this run: fix what "
                        "`failures` lists, and the next run deletes what is gone")
                logger.warning(said)
                summary.notices.append(said)
                continue
            # What could not be listed is unknown, not gone: its articles are kept, and it is a failure.
            hidden_from_us = [f"{source.rstrip('/')}/{printable(rel)}" for rel in unreadable]
            for path in hidden_from_us:
                summary.fail(path, "cannot list or read it (permission denied, or a mount that went away?): the "
                                   "articles indexed from it are kept")
            gone_states = [s for k, s in states.items() if under(spec.origin or source, s) and k not in seen
                           and k not in judged_gone  # overlapping roots both see it gone: count it once
                           and not any(under(d, s) for d in inner)
                           and not any(s.source == p or s.source.startswith(p + "/") for p in hidden_from_us)]
            judged_gone.update(s.key for s in gone_states)
            gone = [s.doc_id for s in gone_states]
            if enumerated == 0 and spec.kind != "file":
                # Records arrive through a temporary dump: name their origin, which the caller chose.
                name, what = ((spec.origin, f"no records were given for origin {spec.origin!r}")
                              if records_path and spec.spec == records_path
                              else (spec.spec, f"source {printable(spec.spec)!r} exists but holds no articles "
                                               "(an unmounted disk?)"))
                if gone and not allow_empty_source:
                    summary.fail(
                        name,
                        f"{what}: its {len(gone)} indexed articles are kept. If it really is empty, rerun with "
                        "--allow-empty-source (allow_empty_source=True) to delete them.",
                    )
                    continue
                if not gone:
                    summary.fail(name, f"{what}: nothing to index")
                    continue
            by_origin: dict[str, list[str]] = {}
            for s in gone_states:
                by_origin.setdefault(s.origin or s.source, []).append(s.doc_id)
            for origin, doc_ids in by_origin.items():
                vanished.append(Vanished(origin, doc_ids, confirmed=allow_empty_source and enumerated == 0))

        # A 404 page keeps its rows until its 404 has lasted the grace (tasks.not_found); then it goes as a 410 page.
        streaks = judge_not_found(not_found, stages.previous_not_found(settings), attempted=set(urls),
                                  indexed={s.doc_id for s in states.values()}, grace_s=settings.not_found_grace_s)
        for url, message in streaks.waiting:
            summary.fail(url, message)
        removed.extend(streaks.due)
        if removed:  # deleted as vanished files are, under the same guard, and under one per site (below)
            by_site: dict[str, list[str]] = {}
            for origin, url in dict.fromkeys(removed):
                by_site.setdefault(origin, []).append(url)
            indexed = Counter(s.origin or s.source for s in states.values())  # pages per site
            for origin, urls in by_site.items():
                pages = indexed[origin]
                # A site that answers 410 to most of its pages at once (a broken deploy, a blocked crawler) is
                # no evidence that they are gone: a collection of many sites would not notice it in its total.
                if len(urls) > 1 and len(urls) > settings.max_delete_fraction * pages and not allow_mass_delete:
                    summary.fail(origin, f"{len(urls)} of the {pages} indexed pages of {printable(origin)} answered HTTP "
                                 f"410 (gone), or 404 for longer than CORPUS_SEARCH_NOT_FOUND_GRACE_S, in this run, "
                                 f"more than CORPUS_SEARCH_MAX_DELETE_FRACTION="
                                 f"{settings.max_delete_fraction:g} of them: nothing of them was deleted. If they are "
                                 "gone, rerun with --allow-mass-delete (allow_mass_delete=True).", article=False)
                    continue
                vanished.append(Vanished(origin, urls, gone_pages=True))
        if vanished:
            for v in vanished:
                v.rows = stages.count_vanished_rows(v.origin, quote(v.doc_ids), settings)
            unconfirmed = sum(v.rows for v in vanished if not v.confirmed)
            limit = settings.max_delete_fraction * rows_before
            kept = 0
            if unconfirmed > limit and not allow_mass_delete:
                # A renamed or moved folder: its text is indexed under the new names now, so deleting the old
                # rows loses nothing, and the guard against losing text has nothing to guard.
                kept = sum(k for v, k in zip(vanished, stages.count_text_kept(
                    [(v.origin, v.doc_ids) for v in vanished], settings), strict=True) if not v.confirmed)
                unconfirmed -= kept
            if unconfirmed > limit and not allow_mass_delete:
                share = unconfirmed / rows_before if rows_before else 1.0
                elsewhere = f" (not counting {kept} whose text stays indexed under another name)" if kept else ""
                summary.fail(
                    collection,
                    f"this run would delete {unconfirmed} of {rows_before} rows ({share:.0%}) of articles that "
                    f"vanished from their sources{elsewhere}, more than CORPUS_SEARCH_MAX_DELETE_FRACTION="
                    f"{settings.max_delete_fraction:g}; nothing was deleted. If that is intended, rerun with "
                    "--allow-mass-delete (allow_mass_delete=True).",
                    article=False,
                )
                vanished = [v for v in vanished if v.confirmed]
            for v in vanished:
                summary.paragraphs_deleted += stages.delete_vanished(v.origin, quote(v.doc_ids), settings)
                summary.articles_deleted += len(v.doc_ids)
            due = {u for _, u in streaks.due}
            if pages := [u for v in vanished if v.gone_pages for u in v.doc_ids if u not in due]:
                summary.notices.append(f"{len(pages)} indexed page(s) answered HTTP 410 (gone: removed for good), e.g. "
                                       f"{', '.join(printable(u) for u in pages[:3])}: their rows are deleted")
            if pages := [u for v in vanished if v.gone_pages for u in v.doc_ids if u in due]:
                summary.notices.append(
                    f"{len(pages)} indexed page(s) answered HTTP 404 (not found) on every run for "
                    f"CORPUS_SEARCH_NOT_FOUND_GRACE_S={settings.not_found_grace_s:g} s or more, e.g. "
                    f"{', '.join(printable(u) for u in pages[:3])}: their rows are deleted")

        if bar is not None:
            bar.close()  # encoding is over: the bar's final rate must not count the index refresh
        summary.close_notices()
        info = stages.refresh_indexes(settings)
        summary.rows = info["rows"]
        summary.seconds = time.perf_counter() - started
        # Inside the lock, so the summary lands on this run's versions and no other writer's.
        # The 404 streaks go with the run's record, for the next run (tasks.not_found).
        summary.not_found = streaks.streaks
        stages.record_run(summary.result(), settings)
    if bar is not None:
        bar.close()
    return _report(summary, collection, logger)


@contextlib.contextmanager
def _published_if_aborted(summary: IndexSummary, settings, logger, started: float):
    """On an exception that ends the run (a full disk, a lost connection), log and publish what it did so far
    before the exception fails it: its failures and partial summary were lost, though rows had been written."""
    try:
        yield
    except Exception as exc:
        collection = settings.collection
        summary.seconds, summary.stopped = time.perf_counter() - started, True
        try:  # the artifact's rows must not read 0 (a wiped collection) when the run never counted them
            summary.rows = stages.count_rows(settings)
        except Exception:  # noqa: BLE001 - the database may be what failed
            summary.rows = None
        # A run-level failure, so that the artifacts (the UI's latest) do not read as a clean run's.
        then = ("; fix that, and the next run resumes" if isinstance(exc, CorpusSearchError)  # settings: it would again
                else ", and the next run resumes")
        summary.fail(collection, f"the run stopped early ({type(exc).__name__}: {exc}): what it wrote stays{then}",
                     article=False)
        try:
            _publish(summary, collection, logger)
        except Exception:  # noqa: BLE001 - never mask the run's own error
            logger.exception("could not publish the stopped run's summary")
        with contextlib.suppress(Exception):  # what it did so far, for the caller (the CLI's --json prints it)
            exc.index_summary = summary.result()
        raise


@contextlib.contextmanager
def _database_writes(settings):
    """Writes of the collection's tables: a storage error there (permission denied, an I/O error) is the
    database's, raised as ``DatabaseWriteError`` so that the run stops, instead of failing each article of
    every later batch. A full disk stays what it is (``storage_exhausted``: its own message)."""
    try:
        yield
    except Exception as exc:
        if storage_exhausted(exc) or not database_io_error(exc):
            raise
        raise DatabaseWriteError(
            f"cannot write collection {settings.collection!r} in {printable(settings.db_uri)!r}: {type(exc).__name__}: "
            f"{exc}. Check that this user may write the database's files (or the object store's credentials); "
            "what earlier batches wrote stays, and the next run resumes") from exc


def _report(summary: IndexSummary, collection: str, logger) -> dict | State:
    """Log the run's failures and notices, publish its artifacts, and return its result (Failed: nothing indexed)."""
    _publish(summary, collection, logger)
    result = summary.result()
    if summary.outcome == "failed":
        return _nothing_indexed(summary, collection)
    if summary.outcome == "partial":
        report_partial(collection, summary.failures, summary.notices)
        # Completed (what it wrote is good), but not silently so: the runs list shows the message.
        return Completed(message=f"{len(summary.failures)} failures, the rest indexed (see the index-failures "
                                 "artifact)", data=result)
    return result


def _publish(summary: IndexSummary, collection: str, logger) -> None:
    """Log the run's failures, notices and summary (to the UI), and publish its two artifacts."""
    for doc, err in summary.failures[:50]:
        logger.warning("failed: %s: %s", doc, err)
    if len(summary.failures) > 50:
        logger.warning("... and %d more failures (see the index-failures artifact)", len(summary.failures) - 50)
    for notice in summary.notices:
        logger.warning("note: %s", notice)
    # To the UI only: the caller prints the summary (the CLI) or gets it returned; in the console it showed twice.
    api_only(logger).info("%s", summary.to_text())
    create_table_artifact(
        table=summary.artifact_rows(),
        key=artifact_key("index-summary", collection),
        description=f"corpus-search index run of collection {collection!r}",
    )
    create_markdown_artifact(
        markdown=summary.failures_markdown(),
        key=artifact_key("index-failures", collection),
        description=f"sources that failed in the index run of {collection!r}",
    )


def _nothing_indexed(summary: IndexSummary, collection: str) -> State:
    """The Failed state of a run that indexed nothing, naming its first failure."""
    message = f"nothing could be indexed into {collection!r}: {len(summary.failures)} failures, first: " + (
        f"{summary.failures[0][0]}: {summary.failures[0][1]}" if summary.failures else "none"
    )
    return Failed(message=message, data=NothingIndexedError(message, summary.result()))


if __name__ == "__main__":  # python -m flows.index_corpus SOURCE... [--collection NAME]
    import argparse
    import json

    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(description="Run the index-corpus flow")
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--collection", default="default")
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    print(json.dumps(index_corpus(args.sources, collection=args.collection, db_uri=args.db), indent=2, default=str))
