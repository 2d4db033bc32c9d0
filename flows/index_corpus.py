"""The ``index-corpus`` flow: sources → articles → paragraphs → vectors → LanceDB.

Reads like the pipeline's table of contents; the logic lives in ``tasks/``. Incremental and
idempotent: unchanged articles cost no encoding, only new paragraph ids are encoded, vanished
paragraphs and articles are deleted, failed fetches keep what was indexed before.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from deployments.hooks import log_crash, log_failure
from flows.summary import IndexSummary, artifact_key
from query.settings import Settings, get_settings
from tasks import stages
from tasks.fetch import SourceSpec, classify_source, list_directory, open_text
from tasks.lock import writer_lock
from tasks.records import FetchFailure, NotModified


def work_units(spec: SourceSpec, batch: int) -> Iterator[list]:
    """Cheap enumeration of a source in batches: URLs, relative file paths, or (line number, line) pairs."""
    if spec.kind == "file":
        yield [Path(spec.root).name]
    elif spec.kind == "directory":
        paths = list_directory(Path(spec.root))
        for i in range(0, len(paths), batch):
            yield paths[i : i + batch]
    elif spec.kind == "jsonl":
        with open_text(Path(spec.root)) as fh:
            lines: list[tuple[int, str]] = []
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    lines.append((lineno, line))
                if len(lines) >= batch:
                    yield lines
                    lines = []
            if lines:
                yield lines


def _progress(enabled: bool, total: int | None):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="article", desc="indexing", file=sys.stderr, dynamic_ncols=True)


@flow(name="index-corpus", log_prints=True, on_failure=[log_failure], on_crashed=[log_crash])
def index_corpus(
    sources: list[str],
    collection: str = "default",
    db_uri: str | None = None,
    batch_articles: int = 512,
    settings_overrides: dict | None = None,
    progress: bool = False,
) -> dict:
    """Index ``sources`` (URLs, files, directories, JSONL dumps) into ``collection``; returns the summary."""
    logger = get_run_logger()
    overrides = dict(settings_overrides or {})
    overrides["collection"] = collection
    if db_uri:
        overrides["db_uri"] = db_uri
    settings = Settings(**{**get_settings().model_dump(), **overrides})
    started = time.perf_counter()
    summary = IndexSummary(collection)
    specs = [classify_source(s) for s in sources if "://" in s]  # bad URL schemes fail before any write
    local = []
    for s in sources:
        if "://" in s:
            continue
        try:
            local.append(classify_source(s))
        except ValueError as exc:  # a missing path may be an unmounted disk: keep its rows
            summary.articles_failed += 1
            summary.failures.append((s, str(exc)))
            logger.warning("%s", exc)
    bar = _progress(progress, None)

    with writer_lock(settings.db_uri, collection):
        states = stages.load_states(settings)
        known = {k: s.body_hash for k, s in states.items()}

        def process(outcomes: list) -> set[str]:
            """Split, plan, encode and write one batch of fetch outcomes; returns the keys seen."""
            articles, seen = [], set()
            for o in outcomes:
                seen.add(o.key)
                if isinstance(o, FetchFailure):
                    summary.articles_failed += 1
                    summary.failures.append((o.doc_id, o.error))
                elif isinstance(o, NotModified):
                    summary.articles_unchanged += 1
                else:
                    articles.append(o)
            split = stages.split_batch(articles, {a.key: known.get(a.key, "") for a in articles}, settings)
            summary.articles_unchanged += split.unchanged
            summary.articles_fetched += len(split.changed)
            for f in split.failed:
                summary.articles_failed += 1
                summary.failures.append((f.doc_id, f.error))
            if split.changed:
                plan = stages.plan_writes(split.paragraphs, split.changed, settings)
                vectors, seconds = stages.encode_paragraphs([p.encoded for p in plan.new], settings)
                stages.write_batch(plan, vectors, split.changed, settings)
                summary.paragraphs_added += len(plan.new)
                summary.paragraphs_encoded += len(plan.new)
                summary.paragraphs_moved += len(plan.moved)
                summary.paragraphs_deleted += len(plan.deleted_ids)
                summary.encode_seconds += seconds
                logger.info(
                    "batch: %d articles changed, %d paragraphs encoded (%.0f/s), %d moved, %d deleted",
                    len(split.changed), len(plan.new), len(plan.new) / seconds if seconds else 0,
                    len(plan.moved), len(plan.deleted_ids),
                )
            if bar is not None:
                bar.update(len(outcomes))
            return seen

        # URLs: fetched in concurrent batches, conditionally (ETag / Last-Modified).
        urls = list(dict.fromkeys(s.spec for s in specs))
        for i in range(0, len(urls), batch_articles):
            process(stages.fetch_url_batch(urls[i : i + batch_articles], states, settings))

        # Local sources are fully enumerated, so articles that vanished from them are deleted.
        for spec in local:
            seen: set[str] = set()
            for unit in work_units(spec, batch_articles):
                if spec.kind == "jsonl":
                    outcomes = stages.parse_dump_batch(spec, unit)
                else:
                    outcomes = stages.read_file_batch(spec, unit)
                fresh, dupes = [], []
                for o in outcomes:
                    (dupes if o.key in seen else fresh).append(o)
                    seen.add(o.key)
                for d in dupes:
                    summary.articles_failed += 1
                    summary.failures.append((d.doc_id, "duplicate doc_id in this source: later copy skipped"))
                process(fresh)
            vanished = [s.doc_id for k, s in states.items() if s.source == spec.root and k not in seen]
            if vanished:
                summary.paragraphs_deleted += stages.delete_vanished(spec.root, vanished, settings)
                summary.articles_deleted += len(vanished)

        info = stages.refresh_indexes(settings)
        summary.rows = info["rows"]
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - started
    logger.info("%s", summary.to_text())
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
    result = summary.to_json()
    result["failures"] = [{"doc_id": d, "error": e} for d, e in summary.failures]
    result["encode_seconds"] = round(summary.encode_seconds, 3)
    return result


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
