"""The ``evaluate`` flow: index a test collection (incrementally), run its queries, score the rankings.

index (the real ``index-corpus`` flow, as a subflow: a rerun with nothing changed re-encodes
nothing, so calling it *is* reusing an up-to-date index) → ``Searcher.search_many`` per mode →
MaxP to document level → nDCG@10 / MRR@10 / Recall@100 / MAP from ``ir-measures`` → a JSON file and
a Prefect table artifact (key ``eval-<collection>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.hooks import log_crash, log_failure
from flows.index_corpus import index_corpus
from flows.summary import artifact_key
from query.errors import InvalidQueryError
from query.settings import MODES, Settings, get_settings
from tasks.datasets import DatasetFormatError, load_dataset
from tasks.fetch import LOCAL_SUFFIXES
from tasks.metrics import evaluate_run, maxp

#: The retrieval modes (query.settings.MODES), in report order: the lexical (BM25) baseline first.
BASE_MODES: tuple[str, ...] = ("lexical", *(m for m in MODES if m != "lexical"))
RERANK_SUFFIX = "+rerank"
JSON_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map", "queries_per_s")
UNITS = ("paragraph", "document")
#: The setting that makes the splitter index a whole document as one unit (``--unit document``).
UNIT_SETTING = "split_unit"


def cache_root() -> Path:
    base = os.environ.get("CORPUS_SEARCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "corpus-search"
    )
    return Path(base)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def extract_archive(archive: str | Path, dest_root: Path | None = None) -> Path:
    """Extract a .tar(.gz)/.tgz/.zip of HTML files to a cache directory keyed by the archive's hash.

    The directory is stable across runs, so the index flow sees the same source (same doc ids, same
    source root) and re-encodes nothing on a rerun. Extraction is refused outside the target dir.
    """
    archive = Path(archive)
    if archive.is_dir():
        return archive
    if not archive.is_file():
        raise DatasetFormatError(f"{archive}: no such archive or directory")
    name = archive.name
    for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
        if name.endswith(ext):
            stem = name[: -len(ext)]
            break
    else:
        raise DatasetFormatError(f"{archive}: expected a .tar.gz, .tgz, .tar or .zip of HTML files, or a directory")
    dest = (dest_root or cache_root() / "extracted") / f"{stem}-{_digest(archive)}"
    done = dest / ".complete"
    if done.is_file():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if PurePosixPath(member).is_absolute() or ".." in PurePosixPath(member).parts:
                    raise DatasetFormatError(f"{archive}: unsafe member path {member!r}")
            zf.extractall(tmp)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")  # refuses absolute paths, '..', devices and links out
    (tmp / ".complete").write_text(name)
    if dest.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    tmp.rename(dest)
    return dest


def html_doc_id(doc_id: str) -> str:
    """Directory-source doc id (relative path) → the collection's own id: ``CACM-0001.html`` → ``CACM-0001``."""
    p = PurePosixPath(doc_id)
    return str(p.with_suffix("")) if p.suffix.lower() in LOCAL_SUFFIXES else doc_id


def parse_modes(modes: str | Sequence[str] | None) -> list[str]:
    if modes is None:
        return list(BASE_MODES)
    items = [m.strip() for m in (modes.split(",") if isinstance(modes, str) else modes) if m.strip()]
    bad = [m for m in items if m not in BASE_MODES]
    if bad or not items:
        raise InvalidQueryError(f"--modes {','.join(items)!r}: choose from {', '.join(BASE_MODES)} (comma-separated)")
    return list(dict.fromkeys(items))


def default_collection(dataset_name: str, unit: str) -> str:
    return f"eval-{dataset_name}" + ("-document" if unit == "document" else "")


def format_table(result: dict) -> str:
    """The human-readable table: one row per mode."""
    head = f"{'mode':<16} {'NDCG@10':>8} {'MRR@10':>8} {'Recall@100':>10} {'MAP':>8} {'queries/s':>10} {'wall s':>8}"
    lines = [f"dataset {result['dataset']} ({result['details']['split']}, {result['queries']} queries, "
             f"unit {result['details']['unit']}, collection {result['details']['collection']})", head, "-" * len(head)]
    for mode, m in result["modes"].items():
        lines.append(
            f"{mode:<16} {m['ndcg@10']:>8.4f} {m['mrr@10']:>8.4f} {m['recall@100']:>10.4f} {m['map']:>8.4f} "
            f"{m['queries_per_s']:>10.1f} {result['details']['wall_s'][mode]:>8.2f}"
        )
    lines.extend(f"note: {n}" for n in result["details"]["notes"])
    return "\n".join(lines)


def public_json(result: dict) -> dict:
    """The ``--json`` document: exactly dataset, queries, modes{MODE: the five metrics}."""
    return {
        "dataset": result["dataset"],
        "queries": result["queries"],
        "modes": {mode: {k: m[k] for k in JSON_METRICS} for mode, m in result["modes"].items()},
    }


def _try_reranker(searcher) -> tuple[object | None, str | None]:
    """The re-ranker a search would use (explicit cross-encoder, else the collection's promoted one)."""
    try:
        reranker = searcher.active_reranker()
    except Exception as exc:  # noqa: BLE001 - any failure to load means: no rerank rows, and say why
        name = searcher.settings.cross_encoder
        return None, f"re-rank rows omitted: cross-encoder {name!r} cannot be loaded ({type(exc).__name__}: {exc})"
    return reranker, None


@flow(name="evaluate", log_prints=True, on_failure=[log_failure], on_crashed=[log_crash])
def evaluate(
    dataset: str,
    collection: str | None = None,
    db_uri: str | None = None,
    modes: list[str] | str | None = None,
    split: str = "test",
    unit: str = "paragraph",
    corpus_html: str | None = None,
    queries: str | None = None,
    qrels: str | None = None,
    cross_encoder: str | None = None,
    rerank: bool = True,
    depth: int = 100,
    candidates: int = 100,
    paragraphs: int | None = None,
    out: str | None = None,
    settings_overrides: dict | None = None,
    tag: str | None = None,
) -> dict:
    """Evaluate retrieval (and re-ranking, when a cross-encoder loads) on a test collection.

    ``depth`` documents per query are scored (Recall@``depth``, MAP over them). ``paragraphs`` hits
    are retrieved per query before MaxP (default ``depth``): with several paragraphs per document, MaxP
    leaves fewer than ``depth`` documents, so raise it to score a full ``depth`` documents.

    ``tag`` names the evaluated version of the collection (both its tables); the metrics are stored
    with the tag and shown by ``corpus-search versions``. Queries run against that exact version,
    even if another writer commits meanwhile.

    Returns ``{"dataset", "queries", "modes": {MODE: metrics}, "details": {...}}``; ``public_json``
    trims it to the documented ``--json`` keys.
    """
    logger = get_run_logger()
    if unit not in UNITS:
        raise InvalidQueryError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if depth < 1:
        raise InvalidQueryError(f"depth must be >= 1, got {depth}")
    hits_per_query = max(paragraphs or depth, depth)
    if tag is not None:
        from query.versions import check_tag_name

        check_tag_name(tag)  # before minutes of indexing
    base_modes = parse_modes(modes)
    data = load_dataset(dataset, split=split, queries=queries, qrels=qrels)
    notes: list[str] = []

    # ------------------------------------------------------------------ what to index, and how
    if corpus_html:
        source, map_id = str(extract_archive(corpus_html)), html_doc_id
    elif data.corpus is not None:
        source, map_id = str(data.corpus), (lambda d: d)
    else:
        raise DatasetFormatError(f"{dataset}: no corpus.jsonl; give the documents with --corpus-html ARCHIVE_OR_DIR")
    overrides = dict(settings_overrides or {})
    if cross_encoder:
        overrides["cross_encoder"] = cross_encoder
    if unit == "document":
        if UNIT_SETTING not in Settings.model_fields:
            raise InvalidQueryError(
                f"--unit document needs the {UNIT_SETTING!r} setting (index each document as one unit, truncated "
                "by the model), which this version of query/settings.py does not have"
            )
        overrides[UNIT_SETTING] = "document"
        notes.append("unit document: each document is one unit, truncated by the bi-encoder (as published BEIR runs do)")
    else:
        notes.append("unit paragraph: long documents are split; a document scores as its best paragraph (MaxP)")
    collection = collection or default_collection(data.name, unit)
    # Only what was set (environment, overrides): an unset cross-encoder lets the collection's promoted one apply.
    base = get_settings().model_dump(exclude_unset=True)
    settings = Settings(**{**base, **overrides, "collection": collection, **({"db_uri": db_uri} if db_uri else {})})
    index_overrides = {k: v for k, v in overrides.items() if k != "cross_encoder"}

    t0 = time.perf_counter()
    index = index_corpus([source], collection=collection, db_uri=settings.db_uri, settings_overrides=index_overrides or None)
    index_s = time.perf_counter() - t0
    logger.info("index %s: %d paragraphs encoded, %d rows, %.1f s", collection, index["paragraphs_encoded"], index["rows"], index_s)
    if index["articles_failed"]:
        notes.append(f"{index['articles_failed']} documents failed to index (see the index-failures artifact)")

    # ------------------------------------------------------------------ queries
    from query.searcher import Searcher
    from tasks.store import connect
    from tasks.versions import current_versions

    evaluated, _ = current_versions(connect(settings.db_uri), collection)
    searcher = Searcher(settings=settings, version=evaluated)  # the version the scores (and tag) belong to
    reranker, why = (None, "re-rank rows omitted: disabled (--no-rerank)") if not rerank else _try_reranker(searcher)
    if why:
        notes.append(why)
    run_modes = [(m, False) for m in base_modes] + ([(m, True) for m in base_modes] if reranker is not None else [])
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    if "dense" in base_modes or "hybrid" in base_modes:
        searcher.encode_queries(texts[:1])  # load the bi-encoder outside the timed region
    results: dict[str, dict] = {}
    wall: dict[str, float] = {}
    docs_per_query: dict[str, float] = {}  # distinct documents left after MaxP, mean over queries
    for mode, rr in run_modes:
        name = mode + (RERANK_SUFFIX if rr else "")
        t1 = time.perf_counter()
        hits = searcher.search_many(texts, k=hits_per_query, mode=mode, candidates=max(candidates, hits_per_query),
                                   rerank="require" if rr else False)
        seconds = time.perf_counter() - t1
        ranked = {
            qid: [map_id(d) for d, _ in maxp([h.doc_id for h in hs], [h.score for h in hs], depth)]
            for qid, hs in zip(qids, hits, strict=True)
        }
        docs_per_query[name] = round(sum(len(r) for r in ranked.values()) / max(1, len(ranked)), 1)
        metrics = evaluate_run(data.qrels, ranked)
        metrics["queries_per_s"] = len(qids) / seconds if seconds > 0 else float("inf")
        results[name] = {k: round(v, 4) if k != "queries_per_s" else round(v, 2) for k, v in metrics.items()}
        wall[name] = round(seconds, 3)
        logger.info("%s: %s (%.1f s)", name, results[name], seconds)
    notes.append(
        f"MAP is over the top {depth} documents (trec_eval AP over what was retrieved); Anserini's "
        "regressions retrieve 1000 hits, so their MAP can be slightly higher on the same ranking"
    )

    result = {
        "dataset": data.name,
        "queries": len(qids),
        "modes": results,
        "details": {
            "collection": collection,
            "db_uri": settings.db_uri,
            "split": split,
            "unit": unit,
            "depth": depth,
            "candidates": max(candidates, hits_per_query),
            "paragraphs_per_query": hits_per_query,
            "documents_per_query": docs_per_query,
            "bi_encoder": settings.bi_encoder,
            "cross_encoder": reranker.name if reranker is not None else None,
            "fusion_alpha": reranker.alpha if reranker is not None else None,
            "wall_s": wall,
            "index": {k: index[k] for k in ("paragraphs_encoded", "rows", "articles_fetched", "articles_unchanged", "articles_failed")}
            | {"seconds": round(index_s, 3)},
            "unjudged_queries_skipped": data.unjudged_queries,
            "notes": notes,
        },
    }
    result["details"]["version"] = evaluated
    if tag is not None:
        from tasks.versions import tag_version

        result["details"]["tag"] = tag_version(
            settings.db_uri, collection, tag, evaluated,
            metrics={"dataset": data.name, "split": split, "unit": unit, "queries": len(qids), "modes": results},
        )
        logger.info("tagged %s version %d as %r", collection, evaluated, tag)
    path = Path(out) if out else (Path(settings.db_uri).parent / "eval" / f"{collection}.json" if "://" not in settings.db_uri else None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        result["details"]["out"] = str(path)
    create_table_artifact(
        table=[{"mode": m, **v, "wall_s": wall[m]} for m, v in results.items()],
        key=artifact_key("eval", collection),
        description=f"corpus-search evaluation of {data.name} ({split}, {len(qids)} queries, unit {unit}) "
        f"on collection {collection!r}. " + " ".join(notes),
    )
    return result


if __name__ == "__main__":  # python -m flows.evaluate DATASET [--collection NAME]
    import argparse

    parser = argparse.ArgumentParser(description="Run the evaluate flow")
    parser.add_argument("dataset")
    parser.add_argument("--collection", default=None)
    parser.add_argument("--db", default=None)
    parser.add_argument("--corpus-html", default=None)
    args = parser.parse_args()
    res = evaluate(args.dataset, collection=args.collection, db_uri=args.db, corpus_html=args.corpus_html)
    print(format_table(res))
