"""Query latency benchmark. Re-rank stage: ``Reranker.score`` vs ``CrossEncoder.predict`` (fp32, defaults).

For N SciFact test queries with K candidates each (BM25 top-K via ``bm25s`` when installed, else a fixed
random selection), both scorers re-rank the same (query, candidate) pairs with the same model in the same
run, alternating which goes first. Printed: median ms per 100 candidates for each, the speed-up (median
of per-query ratios), the share of queries whose top-10 order is identical, and the max |score diff|.

    HF_HUB_OFFLINE=1 python benchmarks/query_latency.py [--model DIR] [--queries 30] [--candidates 100] [--also bf16]

``--model`` takes a cross-encoder directory, e.g. one trained by ``corpus-search train-reranker``
(same architecture and speed as cross-encoder/ms-marco-MiniLM-L6-v2, not its quality); without it a
MiniLM body with a fresh random head is used, with a warning (its near-constant scores make the
agreement numbers meaningless).

Targets (re-rank of 100 candidates): speed-up >= 2.0, top-10 agreement >= 95 %, max score diff <= 0.01.
``--check`` exits 1 when one is missed.

Retrieval stages can be added next to :func:`rerank_benchmark`, which is importable.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from query.models import load_cross_encoder  # noqa: E402
from query.rerank import Reranker, logits_to_scores, rank_order  # noqa: E402

#: Shared data sets live beside the repository (``../shared/data``), resolved from the repository root, not the cwd.
DEFAULT_DATA = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact")
TARGET_SPEEDUP = 2.0
TARGET_AGREEMENT = 0.95
TARGET_MAX_DIFF = 0.01


def fresh_head_cross_encoder(num_labels: int = 1):
    """MiniLM-L6 body + a fresh random head: real speed, meaningless scores (fallback only)."""
    import torch
    import transformers
    from sentence_transformers import CrossEncoder
    from scifact_data import minilm_body_path

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    return CrossEncoder(minilm_body_path(), num_labels=num_labels, max_length=512, device="cpu", local_files_only=True)


def resolve_model(model: Any) -> tuple[Any, str]:
    """A CrossEncoder from a path/name (or passed through); without one (``--model`` not given), a
    fresh-head MiniLM with a warning."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model, type(model).__name__
    if model is None:
        warnings.warn(
            "no --model given (e.g. a re-ranker trained by corpus-search train-reranker: see corpus-search rerankers). Falling back to a MiniLM body "
            "with a FRESH RANDOM HEAD: its speed is real but its scores are near-constant, so agreement/score "
            "numbers are not meaningful.",
            stacklevel=2,
        )
        return fresh_head_cross_encoder(), "minilm-fresh-head (untrained!)"
    return load_cross_encoder(str(model)), str(model)


def _top10_same(a: np.ndarray, b: np.ndarray, k: int = 10) -> bool:
    return bool(np.array_equal(rank_order(a)[:k], rank_order(b)[:k]))


def rerank_benchmark(
    model_path: Any,
    queries: list[str],
    candidates: list[list[str]],
    *,
    batch_size: int = 32,
    precision: str = "auto",
    extra_variants: Sequence[tuple[str, dict]] = (),
    verbose: bool = False,
) -> dict:
    """Time ``CrossEncoder.predict`` (fp32, default settings) vs ``Reranker.score`` on the same pairs.

    Args:
        model_path: a cross-encoder directory/name, or a ``CrossEncoder`` instance.
        queries / candidates: ``candidates[i]`` are the passages to re-rank for ``queries[i]``.
        batch_size / precision: the ``Reranker`` settings under test ("as shipped").
        extra_variants: more ``(label, Reranker kwargs)`` to time in the same run (e.g. fp32 fast path).

    Returns a dict with ``baseline_ms_per_100`` / ``reranker_ms_per_100`` (medians), ``speedup`` (median
    of per-query ratios), ``top10_agreement`` (share of queries with an identical top-10 order),
    ``max_abs_score_diff``, the per-variant results under ``variants``, and the settings.
    """
    import torch

    if len(queries) != len(candidates):
        raise ValueError("queries and candidates must have the same length")
    ce, label = resolve_model(model_path)
    variants = [("reranker", dict(batch_size=batch_size, precision=precision))] + list(extra_variants)
    rerankers = {name: Reranker(ce, **kw) for name, kw in variants}
    identity = torch.nn.Identity()

    def baseline(q: str, cands: list[str]) -> np.ndarray:
        # fp32 CrossEncoder.predict with default settings; logits mapped to [0, 1] like Reranker does
        raw = ce.predict([(q, c) for c in cands], activation_fn=identity, show_progress_bar=False)
        return np.asarray(raw, dtype=np.float32).reshape(len(cands), -1)

    # warm-up (first-call allocations, oneDNN kernel selection)
    baseline(queries[0], candidates[0][:8])
    for r in rerankers.values():
        r.score(queries[0], candidates[0][:8])

    base_ms: list[float] = []
    per: dict[str, dict[str, list]] = {n: {"ms": [], "ratio": [], "same": [], "diff": [], "top_diff": []} for n in rerankers}
    for i, (q, cands) in enumerate(zip(queries, candidates)):
        scale = 100.0 / max(1, len(cands))
        timings: dict[str, float] = {}
        results: dict[str, np.ndarray] = {}
        names = ["__baseline__", *rerankers]
        if i % 2:
            names.reverse()  # alternate who goes first: cancels slow drift of a shared machine
        for n in names:
            t0 = time.perf_counter()
            if n == "__baseline__":
                results[n] = logits_to_scores(baseline(q, cands))
            else:
                results[n] = rerankers[n].score(q, cands, top_k=10)
            timings[n] = (time.perf_counter() - t0) * 1000.0 * scale
        base_ms.append(timings["__baseline__"])
        for n in rerankers:
            per[n]["ms"].append(timings[n])
            per[n]["ratio"].append(timings["__baseline__"] / timings[n])
            per[n]["same"].append(_top10_same(results["__baseline__"], results[n]))
            per[n]["diff"].append(float(np.max(np.abs(results["__baseline__"] - results[n]))))
            # the scores a caller sees: the top-10 hits of either ranking
            top = np.union1d(rank_order(results["__baseline__"])[:10], rank_order(results[n])[:10])
            per[n]["top_diff"].append(float(np.max(np.abs(results["__baseline__"][top] - results[n][top]))))
        if verbose:
            parts = " ".join(f"{n} {timings[n]:.0f}ms" for n in rerankers)
            print(f"  q{i + 1:02d}: baseline {timings['__baseline__']:.0f}ms {parts}", flush=True)

    out_variants = {}
    for n, kw in variants:
        p = per[n]
        out_variants[n] = {
            "settings": {**kw, "resolved_precision": rerankers[n].precision},
            "ms_per_100": statistics.median(p["ms"]),
            "speedup": statistics.median(p["ratio"]),
            "speedup_of_medians": statistics.median(base_ms) / statistics.median(p["ms"]),
            "top10_agreement": float(np.mean(p["same"])),
            "max_abs_score_diff": float(np.max(p["diff"])),
            "max_abs_score_diff_top10": float(np.max(p["top_diff"])),
        }
    main = out_variants["reranker"]
    return {
        "model": label,
        "num_labels": int(ce.num_labels),
        "device": str(ce.device),
        "queries": len(queries),
        "candidates_median": int(statistics.median(len(c) for c in candidates)),
        "baseline_ms_per_100": statistics.median(base_ms),
        "reranker_ms_per_100": main["ms_per_100"],
        "speedup": main["speedup"],
        "top10_agreement": main["top10_agreement"],
        "max_abs_score_diff": main["max_abs_score_diff"],
        "max_abs_score_diff_top10": main["max_abs_score_diff_top10"],
        "precision": main["settings"]["resolved_precision"],
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "variants": out_variants,
    }


def scifact_rerank_inputs(data_dir: str, n_queries: int, n_candidates: int, seed: int = 0):
    """Test queries with BM25 top-K candidates (or a fixed random selection without bm25s)."""
    from scifact_data import Bm25, doc_text, load_scifact

    corpus, queries, qrels = load_scifact(data_dir)
    qids = sorted(qrels["test"], key=lambda x: int(x) if x.isdigit() else x)[:n_queries]
    texts = [queries[q] for q in qids]
    try:
        bm25 = Bm25(corpus)
        cands = [[doc_text(corpus[d]) for d in bm25.search(t, n_candidates)] for t in texts]
        source = "bm25s top-%d" % n_candidates
    except ImportError:
        rng = random.Random(seed)
        ids = list(corpus)
        cands = [[doc_text(corpus[d]) for d in rng.sample(ids, n_candidates)] for _ in texts]
        source = "fixed random docs (bm25s not installed)"
    return texts, cands, source


def print_rerank_report(res: dict) -> None:
    print(f"model: {res['model']} ({res['num_labels']} logit{'s' if res['num_labels'] > 1 else ''}), device {res['device']}, "
          f"torch threads {res['torch_threads']}")
    print(f"{res['queries']} queries x {res['candidates_median']} candidates; baseline = CrossEncoder.predict fp32 defaults")
    print(f"{'variant':<14} {'ms/100 cand':>11} {'speed-up':>9} {'top-10 same':>12} {'top-10 |diff|':>13} "
          f"{'all |diff|':>11}  settings")
    print(f"{'baseline':<14} {res['baseline_ms_per_100']:>11.0f} {1.0:>8.2f}x {'-':>12} {'-':>13} {'-':>11}")
    for name, v in res["variants"].items():
        print(f"{name:<14} {v['ms_per_100']:>11.0f} {v['speedup']:>8.2f}x {v['top10_agreement']:>11.1%} "
              f"{v['max_abs_score_diff_top10']:>13.5f} {v['max_abs_score_diff']:>11.5f}  {v['settings']}")


def pipeline_breakdown(db: str, collection: str, model: str | None, queries: list[str], precision: str = "auto") -> dict:
    """Median seconds per stage of ``Searcher.search`` (hybrid, 100 candidates, re-ranked, k=10)."""
    from query import Searcher
    from query.settings import get_settings

    # No score cache: the warm-up query is timed again below, and its re-rank was a cache hit (1.8 ms of ~1 s).
    settings = get_settings().model_copy(update={"rerank_precision": precision, "rerank_cache_size": 0})
    # Without --model, the configured cross-encoder.
    searcher = Searcher(db_uri=db, collection=collection, cross_encoder=None if model is None else str(model),
                        settings=settings)
    searcher.search(queries[0], k=10)  # warm: models loaded, caches filled
    stages: dict[str, list[float]] = {"encode": [], "retrieve": [], "rerank": [], "total": []}
    for q in queries:
        searcher.search(q, k=10, mode="hybrid", candidates=100)
        for name in stages:
            stages[name].append(getattr(searcher.timings, name))
    return {"rows": searcher.count(), "queries": len(queries),
            **{name: statistics.median(v) for name, v in stages.items()}}


def print_breakdown(b: dict) -> None:
    print(f"query breakdown over {b['queries']} queries on {b['rows']} rows (hybrid, 100 candidates, re-rank, k=10), "
          "median ms:")
    print("  " + "  ".join(f"{name} {b[name] * 1000:.0f}" for name in ("encode", "retrieve", "rerank", "total")))


def end_to_end(db: str, collection: str, model: str | None, queries: list[str], *, candidates: int = 100,
               variants: Sequence[tuple[str, dict]] = (), verbose: bool = False) -> dict:
    """A re-ranked query through ``Searcher.search`` against the same retrieval + ``CrossEncoder.predict`` fp32.

    Per query, alternating who goes first: the baseline retrieves ``candidates`` hybrid candidates
    (``rerank=False``), scores every one with ``CrossEncoder.predict`` (fp32, default settings) on the
    same passage texts, fuses with the model's saved weight when it has one (arithmetic only), sorts and
    keeps 10; each variant is ``Searcher.search(q, k=10, candidates=...)`` with its settings overrides
    (``{}``: as shipped), the score cache off. Then one query repeated, as shipped with the cache on.
    Returns the median ms of each, the speed-ups (median of per-query ratios, and
    ratio of medians), the top-10 overlap and identical-order shares against the baseline, and the
    candidates each variant's cross-encoder scored.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from query import Searcher
    from query.fusion import interpolate
    from query.hits import passage_text
    from query.settings import get_settings

    # The score cache is off: variants that share a model (same backend) would otherwise answer each
    # other's queries from it. What the cache saves on a repeated query is measured separately.
    configs = dict([("as shipped", {}), *variants])
    searchers = {name: Searcher(db_uri=db, collection=collection, cross_encoder=model,
                                settings=get_settings().model_copy(update={**kw, "rerank_cache_size": 0}))
                 for name, kw in configs.items()}
    # The baseline's own Searcher: a retrieval-only search must not overwrite a variant's timings.
    base_searcher = Searcher(db_uri=db, collection=collection, cross_encoder=model)
    active = next(iter(searchers.values())).active_reranker()
    if active.model is None:
        raise SystemExit(f"{active.name} is promoted at fusion weight 0: searches run no cross-encoder to time")
    path = model or str(active.model.model.transformers_model.name_or_path)  # the collection's promoted one
    ce = CrossEncoder(path, device="cpu", local_files_only=True)
    identity = torch.nn.Identity()
    enc = base_searcher.meta.encode_title

    def baseline(q: str) -> list[str]:
        hits = base_searcher.search(q, k=candidates, candidates=candidates, rerank=False)
        raw = ce.predict([(q, passage_text(h.title, h.text, enc)) for h in hits], activation_fn=identity,
                         show_progress_bar=False)
        scores = logits_to_scores(np.asarray(raw, dtype=np.float32).reshape(len(hits), -1))
        if active.alpha != 1.0:
            scores = interpolate(scores, np.array([h.retrieval_score for h in hits]), active.alpha)
        return [hits[i].id for i in rank_order(scores)[:10]]

    baseline(queries[0])  # warm-up: models loaded, first-call allocations
    for s in searchers.values():
        s.search(queries[0], k=10, candidates=candidates)
    base_ms: list[float] = []
    per = {n: {"ms": [], "ratio": [], "overlap": [], "same": [], "scored": []} for n in searchers}
    for i, q in enumerate(queries[1:], start=1):
        names = ["__baseline__", *searchers]
        if i % 2:
            names.reverse()
        tops, ms = {}, {}
        for n in names:
            t0 = time.perf_counter()
            if n == "__baseline__":
                tops[n] = baseline(q)
            else:
                tops[n] = [h.id for h in searchers[n].search(q, k=10, candidates=candidates)]
            ms[n] = (time.perf_counter() - t0) * 1000.0
        base_ms.append(ms["__baseline__"])
        for n, s in searchers.items():
            p = per[n]
            p["ms"].append(ms[n])
            p["ratio"].append(ms["__baseline__"] / ms[n])
            p["overlap"].append(len(set(tops[n]) & set(tops["__baseline__"])) / 10)
            p["same"].append(tops[n] == tops["__baseline__"])
            p["scored"].append(s.timings.reranked)
        if verbose:
            print(f"  q{i:02d}: baseline {ms['__baseline__']:.0f} ms, " +
                  ", ".join(f"{n} {ms[n]:.0f} ms" for n in searchers), flush=True)
    r = active.model
    cached = Searcher(db_uri=db, collection=collection, cross_encoder=model, settings=get_settings())
    cached.search(queries[1], k=10, candidates=candidates)
    repeat = []
    for _ in range(5):
        t0 = time.perf_counter()
        cached.search(queries[1], k=10, candidates=candidates)
        repeat.append((time.perf_counter() - t0) * 1000.0)
    return {
        "repeated_query_ms": statistics.median(repeat),
        "queries": len(queries) - 1, "candidates": candidates, "rows": base_searcher.count(),
        "reranker": active.name, "alpha": active.alpha, "backend": f"{r.backend}:{r.precision}",
        "backend_report": r.backend_report, "torch_threads": torch.get_num_threads(),
        "baseline_ms": statistics.median(base_ms),
        "variants": {n: {"settings": dict(configs[n]),
                         "ms": statistics.median(p["ms"]), "p95_ms": float(np.percentile(p["ms"], 95)),
                         "speedup": statistics.median(p["ratio"]),
                         "speedup_of_medians": statistics.median(base_ms) / statistics.median(p["ms"]),
                         "top10_overlap": float(np.mean(p["overlap"])), "top10_identical": float(np.mean(p["same"])),
                         "scored_per_query": float(np.mean(p["scored"]))} for n, p in per.items()},
    }


def print_end_to_end(res: dict) -> None:
    print(f"end to end on {res['rows']} rows: {res['queries']} queries, hybrid {res['candidates']} candidates -> top 10; "
          f"re-ranker {res['reranker']} (fusion {res['alpha']}), shipped backend {res['backend']}, "
          f"torch threads {res['torch_threads']}")
    print(f"  backend measurement: {res['backend_report']}")
    print("| path | median ms | p95 ms | speed-up (median of ratios) | ratio of medians | scored / query | "
          "top-10 overlap | same top-10 |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| retrieval + CrossEncoder.predict fp32 (baseline) | {res['baseline_ms']:.0f} | | 1.00x | 1.00x | "
          f"{res['candidates']} | | |")
    print(f"| Searcher.search, as shipped, a repeated query (score cache) | {res['repeated_query_ms']:.0f} | | | | 0 | | |")
    for n, v in res["variants"].items():
        print(f"| Searcher.search, {n} {v['settings'] or ''} | {v['ms']:.0f} | {v['p95_ms']:.0f} | {v['speedup']:.2f}x | "
              f"{v['speedup_of_medians']:.2f}x | {v['scored_per_query']:.1f} | {v['top10_overlap']:.1%} | "
              f"{v['top10_identical']:.1%} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Re-rank latency: Reranker vs CrossEncoder.predict fp32")
    ap.add_argument("--model", default=None, help="cross-encoder path or name (default: an untrained MiniLM, speed only)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "bf16+fp32"])
    ap.add_argument("--also", nargs="*", default=[], choices=["fp32", "bf16", "fp16", "bf16+fp32"],
                    help="also time the Reranker at these precisions in the same run (e.g. --also bf16)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--db", default=None, help="an indexed LanceDB (e.g. from `corpus-search eval`) for the breakdown")
    ap.add_argument("--collection", default=None, help="collection in --db for the query-stage breakdown")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--end-to-end", action="store_true",
                    help="with --db/--collection: Searcher.search against retrieval + CrossEncoder.predict fp32")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                    help="with --end-to-end: also time Searcher.search with these settings, e.g. "
                    "'torch, full depth:rerank_backend=torch,rerank_adaptive_depth=false'")
    args = ap.parse_args(argv)

    if args.end_to_end:
        if not (args.db and args.collection):
            ap.error("--end-to-end needs --db and --collection")
        from scifact_data import load_scifact

        _, qtexts, qrels = load_scifact(args.data)
        qids = sorted(qrels["test"], key=lambda x: int(x) if x.isdigit() else x)[: args.queries + 1]
        variants = []
        for item in args.variant:
            name, _, kvs = item.rpartition(":")
            kw = {}
            for kv in kvs.split(","):
                k, _, v = kv.partition("=")
                kw[k.strip()] = {"true": True, "false": False}.get(v.strip().lower(), v.strip())
            variants.append((name or kvs, kw))
        res = end_to_end(args.db, args.collection, args.model, [qtexts[q] for q in qids], candidates=args.candidates,
                         variants=variants, verbose=args.verbose)
        print_end_to_end(res)
        return 0

    queries, cands, source = scifact_rerank_inputs(args.data, args.queries, args.candidates)
    print(f"candidates: {source}")
    extra = [(f"reranker-{p}", dict(batch_size=args.batch_size, precision=p)) for p in args.also]
    res = rerank_benchmark(args.model, queries, cands, batch_size=args.batch_size, precision=args.precision,
                           extra_variants=extra, verbose=args.verbose)
    print_rerank_report(res)
    # The scores a caller gets are those of the returned top-10 hits; the cascade leaves the others at bf16.
    ok = (res["speedup"] >= TARGET_SPEEDUP and res["top10_agreement"] >= TARGET_AGREEMENT
          and res["max_abs_score_diff_top10"] <= TARGET_MAX_DIFF)
    print(f"targets: speed-up >= {TARGET_SPEEDUP}x, top-10 agreement >= {TARGET_AGREEMENT:.0%}, "
          f"max |diff| of top-10 scores <= {TARGET_MAX_DIFF}: {'MET' if ok else 'MISSED'}")
    if args.db and args.collection:
        print_breakdown(pipeline_breakdown(args.db, args.collection, args.model, queries, args.precision))
    return 1 if (args.check and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
