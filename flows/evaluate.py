"""The ``evaluate`` flow: index a test collection (incrementally), run its queries, score the rankings.

index (the real ``index-corpus`` flow, as a subflow: a rerun with nothing changed re-encodes
nothing, so calling it *is* reusing an up-to-date index) → ``Searcher.search_many`` per mode →
MaxP to document level → nDCG@10 / MRR@10 / Recall@100 / MAP from ``ir-measures``, overall and per
query → paired t-tests of each mode against the best one (Holm-corrected) → a warning for every
``+rerank`` row worse than its base mode → a JSON file, TREC run files (``run_dir``) and a Prefect
table artifact (key ``eval-<collection>``).
"""

from __future__ import annotations

import collections
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

from flows.hooks import log_cancellation, log_crash, log_failure
from flows.index_corpus import index_corpus
from flows.summary import artifact_key
from query.errors import InvalidQueryError
from query.settings import MODES, Settings, refuse_secret_overrides, settings_with
from tasks.datasets import DatasetFormatError, default_collection, html_doc_id, load_dataset
from tasks.metrics import (
    MEASURES,
    TTEST,
    RunFileError,
    compare_to_best,
    evaluate_per_query,
    holm,
    maxp,
    paired_ttest,
    trec_run_lines,
    write_trec_run,
)

#: The retrieval modes (query.settings.MODES), in report order: the lexical (BM25) baseline first.
BASE_MODES: tuple[str, ...] = ("lexical", *(m for m in MODES if m != "lexical"))
RERANK_SUFFIX = "+rerank"
JSON_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map", "queries_per_s")
#: Significance level of the marks in the table and of ``significant`` in the JSON.
ALPHA = 0.05
#: The table's marker for a mean that differs significantly from the best mode's.
SIG_MARK = "*"
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


def html_folder(root: Path) -> str:
    """The folder (``"pages/"``, or ``""``) under ``root`` that holds every HTML file, as a doc-id prefix.

    An archive of ``pages/*.html`` indexes ``pages/A-1.html``, where its judgments name ``A-1``: without the
    prefix every metric was 0. Only the HTML files count (a README beside the folder is no document of the
    collection's judgments), and the prefix is cut from the ids when scoring, never from the index: a
    collection indexed before keeps its ids, and scores right too.
    """
    parents = {p.parent.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in (".html", ".htm")}
    if not parents:
        return ""
    common = os.path.commonpath(sorted(parents)) if len(parents) > 1 else next(iter(parents))
    return "" if common in ("", ".") else common + "/"


def html_ids(prefix: str):
    """``html_doc_id`` of a doc id under ``prefix`` (see :func:`html_folder`)."""
    return lambda d: html_doc_id(d.removeprefix(prefix))


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


def parse_modes(modes: str | Sequence[str] | None) -> list[str]:
    if modes is None:
        return list(BASE_MODES)
    items = [m.strip() for m in (modes.split(",") if isinstance(modes, str) else modes) if m.strip()]
    bad = [m for m in items if m not in BASE_MODES]
    if bad or not items:
        raise InvalidQueryError(f"--modes {','.join(items)!r}: choose from {', '.join(BASE_MODES)} (comma-separated)")
    return list(dict.fromkeys(items))


def format_table(result: dict) -> str:
    """The human-readable report: one row per mode, significance marks and their legend, notes, warnings."""
    sig = result["details"].get("significance") or {}
    marked = sig.get("significant") or {}
    head = (f"{'mode':<16} {'NDCG@10':>9} {'MRR@10':>9} {'Recall@100':>11} {'MAP':>9} {'queries/s':>10} {'wall s':>8}")
    lines = [f"dataset {result['dataset']} ({result['details']['split']}, {result['queries']} queries, "
             f"unit {result['details']['unit']}, collection {result['details']['collection']})", head, "-" * len(head)]
    for mode, m in result["modes"].items():
        cells = []
        for key, width in (("ndcg@10", 8), ("mrr@10", 8), ("recall@100", 10), ("map", 8)):
            mark = SIG_MARK if marked.get(mode, {}).get(key) else " "
            cells.append(f"{m[key]:>{width}.4f}{mark}")
        qps = m["queries_per_s"]
        best = "  (best)" if mode == sig.get("best") and len(result["modes"]) > 1 else ""
        lines.append(f"{mode:<16} {' '.join(cells)} {qps if qps is not None else float('nan'):>10.1f} "
                     f"{result['details']['wall_s'][mode]:>8.2f}{best}")
    if sig.get("best") and len(result["modes"]) > 1:
        if sig.get("reason"):
            lines.append(f"significance: not tested ({sig['reason']})")
        else:
            said = (f"{SIG_MARK} differs significantly from the best mode" if any(any(v.values()) for v in marked.values())
                    else "no mode differs significantly from the best mode")  # a legend of no mark read as a claim
            lines.append(f"{said} ({sig['best']}, by nDCG@10): "
                         f"{sig['test']} over {sig['queries']} queries, {sig['correction']}, alpha = {sig['alpha']}")
    if (name := result["details"].get("cross_encoder")) is not None and any("+rerank" in m for m in result["modes"]):
        alpha = result["details"].get("fusion_alpha")
        fused = f", fused with retrieval at weight {alpha:g}" if alpha is not None and alpha < 1 else ""
        lines.append(f"+rerank rows: {name}{fused}")
    lines.extend(f"note: {n}" for n in result["details"]["notes"])
    if skipped := result["details"].get("unjudged_queries_skipped"):
        lines.append(f"note: {skipped} queries of the queries file have no judgments in split "
                     f"{result['details']['split']!r}: they were not run")
    lines.extend(f"WARNING: {w}" for w in result.get("warnings", []))
    return "\n".join(lines)


def public_json(result: dict) -> dict:
    """The ``--json`` document, identical to the ``--out`` file: dataset, queries, modes, warnings, details.

    ``modes[MODE]`` keeps the original keys (ndcg@10, mrr@10, recall@100, map, queries_per_s) and adds
    ir-measures' own names (nDCG@10, RR@10, R@100, AP) with the same values.
    """
    return {k: result[k] for k in ("dataset", "queries", "modes", "warnings", "details")}


def rerank_checks(
    per_query_by_mode: dict[str, dict[str, dict[str, float]]], *, cross_encoder: str | None = None,
    collection: str = "COLLECTION", dataset: str = "DATASET", alpha: float = ALPHA,
) -> tuple[dict[str, dict], list[str]]:
    """Compare every ``MODE+rerank`` row with ``MODE`` on per-query nDCG@10: (JSON block, warnings).

    The p-value is a paired t-test of the two rows over the same queries, Holm-corrected over the
    re-rank rows compared. A warning is written for every row whose mean nDCG@10 is lower than its
    base's, significant or not (a re-ranker costs most of a query's time, so not being better is
    already worth knowing); it says by how much, whether it is significant, and what to do.
    """
    pairs = [(m, m[: -len(RERANK_SUFFIX)]) for m in per_query_by_mode
             if m.endswith(RERANK_SUFFIX) and m[: -len(RERANK_SUFFIX)] in per_query_by_mode]
    means: dict[str, float] = {}
    raw: list[float | None] = []
    for rr, base in pairs:
        qids = list(per_query_by_mode[base])
        a = [per_query_by_mode[rr][q]["ndcg@10"] for q in qids]
        b = [per_query_by_mode[base][q]["ndcg@10"] for q in qids]
        means[rr], means[base] = (float(sum(a) / len(a)), float(sum(b) / len(b))) if qids else (0.0, 0.0)
        raw.append(paired_ttest(a, b))
    checks: dict[str, dict] = {}
    warnings: list[str] = []
    for (rr, base), p, adj in zip(pairs, raw, holm(raw), strict=True):
        delta = means[rr] - means[base]
        significant = adj is not None and adj < alpha
        checks[rr] = {"base": base, "ndcg@10": means[rr], "base_ndcg@10": means[base], "delta": delta,
                      "p": adj, "p_uncorrected": p, "significant": significant, "worse": delta < 0}
        if delta >= 0:
            continue
        rel = f", {delta / means[base]:+.1%}" if means[base] > 0 else ""
        n = len(per_query_by_mode[base])
        if adj is None:
            verdict = f"not tested for significance ({n} judged quer{'y' if n == 1 else 'ies'}; a paired test needs 2)"
        else:
            corr = f", Holm-corrected over {len(pairs)} re-rank rows" if len(pairs) > 1 else ""
            verdict = (f"{'significant' if significant else 'not significant'} (p = {adj:.3g} "
                       f"{'<' if significant else '>='} alpha = {alpha}; {TTEST} over {n} queries{corr})")
        who = f"The re-ranker {cross_encoder!r}" if cross_encoder else "The re-ranker"
        train = f"corpus-search train-reranker --collection {collection}"
        # Only a split the dataset has: never its test queries (an evaluation on them would overstate the model).
        how = (f"train one on its own judged queries and let the gate promote it ({train} --judgments {dataset} "
               "--split train, or --self-supervised without judgments)"
               if (Path(dataset) / "qrels" / "train.tsv").is_file() else
               f"train one for it and let the gate promote it ({train} --self-supervised: this dataset has no "
               "train split to learn from)")
        warnings.append(
            f"{rr} is worse than {base}: nDCG@10 {means[rr]:.4f} vs {means[base]:.4f} ({delta:+.4f}{rel}), {verdict}. "
            f"{who} does not help on this collection: {how}, or search without re-ranking (--no-rerank)."
        )
    return checks, warnings


def _rounded(metrics: dict) -> dict:
    """A mode's original five metrics, 4 decimals: for places meant to be read (artifact, version tags)."""
    return {k: round(metrics[k], 4) if k != "queries_per_s" else metrics[k] for k in JSON_METRICS}


def _try_reranker(searcher) -> tuple[object | None, str | None]:
    """The re-ranker a search would use (explicit cross-encoder, else the collection's promoted one)."""
    try:
        reranker = searcher.active_reranker()
    except Exception as exc:  # noqa: BLE001 - any failure to load means: no rerank rows, and say why
        name = searcher.settings.cross_encoder
        return None, f"re-rank rows omitted: cross-encoder {name!r} cannot be loaded ({type(exc).__name__}: {exc})"
    return reranker, None


def reranked_then_retrieved(head: Sequence, retrieved: Sequence) -> tuple[list[str], list[float]]:
    """One query's paragraph ranking as a search serves it: the re-ranked ``head`` hits, then the rest of the
    ``retrieved`` ones in retrieval order, as (doc ids, scores) for MaxP. The rest score below every re-ranked
    hit (1 apart, so that a run file orders them as this does)."""
    seen = {h.id for h in head}
    rest = [h for h in retrieved if h.id not in seen]
    floor = min((h.score for h in head), default=0.0)
    return ([h.doc_id for h in head] + [h.doc_id for h in rest],
            [h.score for h in head] + [floor - (i + 1) for i in range(len(rest))])


def indexed_doc_ids(db, collection: str, map_id) -> set[str]:
    """The judged-id form (``map_id``) of every document the collection holds rows of (its article table: one
    row each; a document with no text to index is remembered there with 0 paragraphs, and cannot be retrieved)."""
    import pyarrow.compute as pc

    from query.schema import articles_table_name

    table = db.open_table(articles_table_name(collection))
    held = table.to_lance().to_table(columns=["doc_id"], filter=pc.field("paragraphs") > 0)
    return {map_id(d) for d in held.column("doc_id").to_pylist()}


def unjudgeable(qrels: dict[str, dict[str, int]], indexed: set[str]) -> str | None:
    """A warning when relevant judged documents are not in the collection, else None.

    A few missing is normal (BEIR's own qrels name some); most or all missing means the ids do not match
    (another corpus, a corpus-id column read wrongly), and every metric would be silently near 0.
    """
    relevant = {d for docs in qrels.values() for d, grade in docs.items() if grade > 0}
    missing = relevant - indexed
    if not missing:
        return None
    return (f"{len(missing)} of {len(relevant)} relevant judged documents are not in the collection, or have no "
            f"text to index "
            f"(e.g. {sorted(missing)[:3]}): they can never be retrieved"
            + ("; check that the qrels' corpus-ids are the corpus's _id values" if len(missing) > len(relevant) / 2 else ""))


def _run_name() -> str:
    """``evaluate-<dataset>`` (its collection may be left to the flow's default)."""
    from prefect.runtime import flow_run

    dataset = str(flow_run.parameters.get("dataset") or "")
    return f"evaluate-{Path(dataset).name or 'dataset'}"


@flow(name="evaluate", flow_run_name=_run_name, log_prints=True, on_failure=[log_failure], on_crashed=[log_crash],
      on_cancellation=[log_cancellation])
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
    run_dir: str | None = None,
) -> dict:
    """Evaluate retrieval (and re-ranking, when a cross-encoder loads) on a test collection.

    ``depth`` documents per query are scored (Recall@``depth``, MAP over them). ``paragraphs`` hits
    are retrieved per query before MaxP (default ``depth``): with several paragraphs per document, MaxP
    leaves fewer than ``depth`` documents, so raise it to score a full ``depth`` documents.

    ``tag`` names the evaluated version of the collection (both its tables); the metrics are stored
    with the tag and shown by ``corpus-search versions``. Queries run against that exact version,
    even if another writer commits meanwhile.

    ``run_dir``: write one TREC run file per evaluated mode, ``<run_dir>/<mode>.run`` (e.g.
    ``hybrid+rerank.run``), the documents exactly as scored (after MaxP), for trec_eval or ir-measures.

    Returns ``{"dataset", "queries", "modes": {MODE: metrics}, "warnings": [...], "details": {...}}``
    (the ``--out`` file and ``--json`` both hold ``public_json`` of it). ``details["per_query"][MODE][QID]``
    holds each query's metrics, ``details["significance"]`` paired t-tests of every mode against the best
    (by nDCG@10), ``details["rerank_vs_base"]`` each re-rank row against its base mode.
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
    notes: list[str] = list(data.notes)

    # ------------------------------------------------------------------ what to index, and how
    if corpus_html:
        root = extract_archive(corpus_html)
        source, map_id = str(root), html_ids(html_folder(root))
    elif data.corpus is not None:
        source, map_id = str(data.corpus), (lambda d: d)
    else:
        raise DatasetFormatError(f"{dataset}: no corpus.jsonl; give the documents with --corpus-html ARCHIVE_OR_DIR")
    refuse_secret_overrides(settings_overrides)
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
    # settings_with keeps what was set (environment, overrides) apart from the defaults: an unset
    # cross-encoder lets the collection's promoted one apply. No score cache: the +rerank row of a second
    # mode would re-use the first one's scores of the same (query, paragraph) pairs, and report a
    # queries/s that no new query gets.
    settings = settings_with({**overrides, "collection": collection, "rerank_cache_size": 0,
                              **({"db_uri": db_uri} if db_uri else {})})
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

    db = connect(settings.db_uri)
    evaluated, _ = current_versions(db, collection)
    searcher = Searcher(settings=settings, version=evaluated)  # the version the scores (and tag) belong to
    data_warnings = [w for w in [unjudgeable(data.qrels, indexed_doc_ids(db, collection, map_id))] if w]
    reranker, why = (None, "re-rank rows omitted: disabled (--no-rerank)") if not rerank else _try_reranker(searcher)
    if why:
        notes.append(why)
    run_modes = [(m, False) for m in base_modes] + ([(m, True) for m in base_modes] if reranker is not None else [])
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    if "dense" in base_modes or "hybrid" in base_modes:
        searcher.encode_queries(texts[:1])  # load the bi-encoder outside the timed region
    results: dict[str, dict] = {}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {}  # what the run files hold: documents as scored
    no_hits: dict[str, int] = {}
    wall: dict[str, float] = {}
    docs_per_query: dict[str, float] = {}  # distinct documents left after MaxP, mean over queries
    # The re-rank rows re-rank as many candidates as a search does (a trained re-ranker's gate depth, else the
    # candidates setting), so that they measure what searches serve; the retrieval ranking follows below them
    # for the deeper measures (Recall@depth).
    rerank_depth = (reranker.depth or settings.candidates) if reranker is not None else None
    retrieved: dict[str, list] = {}
    ran_out: dict[str, bool] = {}
    for mode, rr in run_modes:
        name = mode + (RERANK_SUFFIX if rr else "")
        t1 = time.perf_counter()
        # distinct=False: a benchmark's judgments name each copy of a repeated document, as BEIR's runs keep them.
        if rr and rerank_depth < hits_per_query:
            heads = searcher.search_many(texts, k=rerank_depth, mode=mode, candidates=rerank_depth,
                                         rerank="require", distinct=False)
            ranked_hits = [reranked_then_retrieved(h, r) for h, r in zip(heads, retrieved[mode], strict=True)]
        else:
            # A re-rank row retrieves what a search of this many hits does: the re-ranker's depth (a page never
            # comes from fewer candidates than its last rank), not the retrieval rows' pool.
            hits = searcher.search_many(texts, k=hits_per_query, mode=mode,
                                        candidates=rerank_depth if rr else max(candidates, hits_per_query),
                                        rerank="require" if rr else False, distinct=False)
            ranked_hits = [([h.doc_id for h in hs], [h.score for h in hs]) for hs in hits]
            if not rr:
                retrieved[mode] = hits
        seconds = time.perf_counter() - t1
        # Whether some query got fewer paragraphs than asked for: the corpus (or its matches) ran out, not the pool.
        ran_out[name] = any(len(docs) < hits_per_query for docs, _ in ranked_hits)
        runs[name] = {
            qid: [(map_id(d), s) for d, s in maxp(docs, scores, depth)]
            for qid, (docs, scores) in zip(qids, ranked_hits, strict=True)
        }
        ranked = {qid: [d for d, _ in docs] for qid, docs in runs[name].items()}
        docs_per_query[name] = round(sum(len(r) for r in ranked.values()) / max(1, len(ranked)), 1)
        no_hits[name] = sum(1 for r in ranked.values() if not r)
        means, per_query[name] = evaluate_per_query(data.qrels, ranked)
        # Unrounded means (the table rounds): a run file read back with ir-measures gives these exact numbers.
        results[name] = {**means, "queries_per_s": round(len(qids) / seconds, 2) if seconds > 0 else None,
                         **{MEASURES[k]: v for k, v in means.items()}}
        wall[name] = round(seconds, 3)
        logger.info("%s: %s (%.1f s)", name, {k: round(means[k], 4) for k in MEASURES}, seconds)
    for name, n in no_hits.items():
        if n:
            notes.append(f"{name}: {n} queries retrieved nothing; they count 0 here (as with trec_eval -c) "
                         "and have no lines in a run file")
    # Only where MaxP left fewer documents than a full pool of paragraphs: more paragraphs would fill the depth.
    short = {name: n for name, n in docs_per_query.items() if n < depth and unit == "paragraph" and not ran_out[name]}
    if short:
        notes.append(f"fewer than {depth} documents per query were scored ({', '.join(f'{m}: {n}' for m, n in short.items())} "
                     f"on average: MaxP merges a document's paragraphs), so Recall@{depth} and MAP count only those; "
                     "retrieve more paragraphs per query with --paragraphs (e.g. 3x --depth) to score a full depth")
    if reranker is not None and rerank_depth < hits_per_query:
        notes.append(f"re-rank rows re-rank each query's top {rerank_depth} candidates, as a search does; the "
                     f"retrieval ranking follows below them up to {hits_per_query} paragraphs")
    significance = compare_to_best(per_query, alpha=ALPHA)
    rerank_vs_base, warnings = rerank_checks(
        per_query, cross_encoder=reranker.name if reranker is not None else None, collection=collection,
        dataset=dataset, alpha=ALPHA)
    warnings = data_warnings + warnings
    for w in warnings:
        logger.warning(w)
    if depth < 100:  # the measures keep their names: say which of them the depth cuts short
        cut = "Recall@100" + (", nDCG@10 and MRR@10" if depth < 10 else "")
        notes.append(f"--depth {depth} scores {depth} documents per query, fewer than the cut-off of {cut}: "
                     f"they are measured at {depth} here (use --depth 100 or more to compare with published numbers)")
    notes.append(
        f"MAP is over the top {depth} documents (trec_eval AP over what was retrieved); Anserini's "
        "regressions retrieve 1000 hits, so their MAP can be slightly higher on the same ranking"
    )

    result = {
        "dataset": data.name,
        "queries": len(qids),
        "modes": results,
        "warnings": warnings,
        "details": {
            "collection": collection,
            "db_uri": settings.db_uri,
            "split": split,
            "unit": unit,
            "depth": depth,
            "candidates": max(candidates, hits_per_query),
            "rerank_depth": rerank_depth,  # candidates a re-rank row re-ranks per query, as a search does
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
            "measures": dict(MEASURES),  # our metric name → ir-measures' name
            "significance": significance,
            "rerank_vs_base": rerank_vs_base,
            "per_query": per_query,
        },
    }
    result["details"]["version"] = evaluated
    unwritable: RunFileError | None = None
    if run_dir is not None:
        try:  # every line checked before any file is written: all the run files or none, and the metrics kept
            for name in results:
                collections.deque(trec_run_lines(runs[name], tag=name), maxlen=0)
        except RunFileError as exc:
            unwritable = exc
        else:
            result["details"]["run_files"] = {
                name: str(write_trec_run(Path(run_dir) / f"{name}.run", runs[name], tag=name)) for name in results
            }
            logger.info("TREC run files written to %s", run_dir)
    path = Path(out) if out else (Path(settings.db_uri).parent / "eval" / f"{collection}.json" if "://" not in settings.db_uri else None)
    if path is not None:
        result["details"]["out"] = str(path)  # before writing, so the file and --json hold the same details
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(public_json(result), indent=2, allow_nan=False) + "\n")
    if unwritable is not None:
        raise RunFileError(f"{unwritable}; no run file was written" + (f", and the metrics are in {path}" if path else "")
                           + ". Evaluate without --run-dir, or give the documents ids without spaces")
    if tag is not None:  # last: a failure to write the run files or --out above leaves no tag behind
        from tasks.versions import tag_version

        result["details"]["tag"] = tag_version(
            settings.db_uri, collection, tag, evaluated,
            metrics={"dataset": data.name, "split": split, "unit": unit, "queries": len(qids),
                     "modes": {m: _rounded(v) for m, v in results.items()}},
        )
        logger.info("tagged %s version %d as %r", collection, evaluated, tag)
        if path is not None:  # the file holds the tag too
            path.write_text(json.dumps(public_json(result), indent=2, allow_nan=False) + "\n")
    create_table_artifact(
        table=[{"mode": m, **_rounded(v), "wall_s": wall[m]} for m, v in results.items()],
        key=artifact_key("eval", collection),
        description=f"corpus-search evaluation of {data.name} ({split}, {len(qids)} queries, unit {unit}) "
        f"on collection {collection!r}. " + " ".join(notes) + "".join(f" WARNING: {w}" for w in warnings),
    )
    return result


if __name__ == "__main__":  # python -m flows.evaluate DATASET [--collection NAME]
    import argparse

    parser = argparse.ArgumentParser(description="Run the evaluate flow")
    parser.add_argument("dataset")
    parser.add_argument("--collection", default=None)
    parser.add_argument("--db", default=None)
    parser.add_argument("--corpus-html", default=None)
    parser.add_argument("--run-dir", default=None)
    args = parser.parse_args()
    res = evaluate(args.dataset, collection=args.collection, db_uri=args.db, corpus_html=args.corpus_html,
                   run_dir=args.run_dir)
    print(format_table(res))
