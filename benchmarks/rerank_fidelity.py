"""How faithful are the fast re-ranking paths? nDCG@10 and top-10 agreement against fp32, on a test split.

For every test query: the hybrid top ``--depth`` candidates (100, as the issue's baseline), the reference
fp32 torch scores of all of them, and each ``--backends`` entry's scores (``backend:precision``, as
``load_reranker`` takes them). Then, per variant,

* nDCG@10 (ir-measures, MaxP, as ``corpus-search eval``) and its difference to the fp32 reference,
* top-10 agreement: the share of the reference's top-10 paragraphs that the variant also returns, and
  the share of queries whose top-10 is the same list in the same order,
* the mean number of candidates the cross-encoder scored,

for the model alone (fusion weight 1) and fused with the weight saved with the model, at full depth and
with adaptive depth (``query.fusion.fusion_reach``: candidates that cannot reach the fused top 10 are
not scored). The variants are computed exactly as ``Searcher`` does (same functions), from scores
computed once per pair; no timing here (see ``benchmarks/query_latency.py``).

    python benchmarks/rerank_fidelity.py ../shared/data/scifact --collection scifact-eval --db DB \\
        --model 20261127-220130-judgments --backends onnx:fp32 onnx:int8 --scores fidelity-scores.npz

``--scores`` keeps the computed scores, so a rerun with other options costs no model call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fused_top(retrieval: np.ndarray, ce: np.ndarray, alpha: float, k: int, adaptive: bool) -> tuple[np.ndarray, int]:
    """The top-``k`` candidate indices as ``Searcher`` ranks them (see query.searcher._rerank), and how many were scored."""
    from query.fusion import fused_scores, fusion_reach, rank_order

    keep = np.flatnonzero(fusion_reach(retrieval, alpha, k)) if adaptive else np.arange(len(retrieval))
    return rank_order(fused_scores(ce[keep], retrieval, keep, alpha))[:k], len(keep)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="BEIR directory (queries.jsonl, qrels/<split>.tsv)")
    ap.add_argument("--collection", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", required=True, help="registry id of the collection, or a model directory")
    ap.add_argument("--alpha", type=float, default=None, help="fusion weight for a model directory")
    ap.add_argument("--backends", nargs="*", default=["onnx:fp32", "onnx:int8"],
                    help="backend:precision variants compared with torch:fp32")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--queries", type=int, default=None, help="only the first N test queries")
    ap.add_argument("--scores", default=None, help="an .npz file to keep (and reuse) the computed scores")
    ap.add_argument("--json", default=None, help="also write the table to this file")
    args = ap.parse_args()

    from dataclasses import replace

    from query.models import load_reranker
    from query.registry import model_path, read_registry
    from query.searcher import Searcher, passage_text
    from tasks.datasets import judged_id, load_dataset
    from tasks.metrics import maxp, per_query

    data = load_dataset(args.dataset, split=args.split)
    qids = [q for q in data.queries if q in data.qrels][: args.queries]
    searcher = Searcher(db_uri=args.db, collection=args.collection)
    entry = read_registry(searcher.table).find(args.model)
    path = str(model_path(args.db, entry)) if entry else args.model
    alpha = entry.alpha if entry else (args.alpha if args.alpha is not None else 1.0)
    hits = searcher.search_many([data.queries[q] for q in qids], k=args.depth, mode="hybrid",
                                candidates=args.depth, rerank=False)
    known = {d for q in qids for d in data.qrels[q]}
    hits = [[replace(h, doc_id=judged_id(h.doc_id, known)) for h in hs] for hs in hits]
    enc = searcher.meta.encode_title
    passages = [[passage_text(h.title, h.text, enc) for h in hs] for hs in hits]
    retrieval = [np.array([h.retrieval_score for h in hs]) for hs in hits]

    store = dict(np.load(args.scores)) if args.scores and Path(args.scores).is_file() else {}
    variants = ["torch:fp32", *args.backends]
    speed = {}
    # What the scores are of: the model, the collection's version, the dataset and split (a key of the variant,
    # queries and depth alone served one model's cached scores as another's).
    from tasks.records import stable_hash

    of = stable_hash(path, args.db, args.collection, str(searcher.table.version), str(Path(args.dataset).resolve()),
                     args.split)

    def key(v: str) -> str:
        return f"{v}|{len(qids)}|{args.depth}|{of}"

    for v in variants:
        if key(v) in store:
            continue
        backend, precision = v.split(":")
        model = load_reranker(path, backend=backend, precision=precision)
        print(f"scoring {sum(map(len, passages))} pairs with {v} ({model.backend}:{model.precision}) ...", flush=True)
        t = time.perf_counter()
        flat = [model.score(data.queries[q], ps, top_k=len(ps)) for q, ps in zip(qids, passages, strict=True)]
        speed[v] = sum(map(len, passages)) / (time.perf_counter() - t)
        store[key(v)] = np.concatenate(flat)
        if args.scores:
            np.savez(args.scores, **store)
    bounds = np.cumsum([0, *map(len, passages)])

    def ce(v: str) -> list[np.ndarray]:
        flat = store[key(v)]
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def run(v: str, a: float, adaptive: bool) -> tuple[dict[str, list[str]], list[list[int]], float]:
        scores, ranked, tops, scored = ce(v), {}, [], []
        for i, q in enumerate(qids):
            top, n = fused_top(retrieval[i], scores[i], a, 10, adaptive)
            tops.append([hits[i][j].id for j in top])
            scored.append(n)
            ranked[q] = [d for d, _ in maxp([hits[i][j].doc_id for j in top], np.arange(len(top), 0, -1))]
        return ranked, tops, float(np.mean(scored))

    qrels = {q: data.qrels[q] for q in qids}
    rows = []
    for a in dict.fromkeys([1.0, alpha]):
        ref_ranked, ref_tops, _ = run("torch:fp32", a, False)
        ref = np.mean(list(per_query(qrels, ref_ranked).values()))
        for v in variants:
            for adaptive in ([False, True] if a < 1.0 else [False]):
                ranked, tops, scored = run(v, a, adaptive)
                nd = np.mean(list(per_query(qrels, ranked).values()))
                overlap = np.mean([len(set(x) & set(y)) / max(1, len(y)) for x, y in zip(tops, ref_tops, strict=True)])
                same = np.mean([x == y for x, y in zip(tops, ref_tops, strict=True)])
                rows.append({"variant": v, "alpha": a, "adaptive": adaptive, "ndcg@10": round(float(nd), 4),
                             "delta_vs_fp32": round(float(nd - ref), 4), "top10_overlap": round(float(overlap), 4),
                             "top10_identical": round(float(same), 4), "scored_per_query": round(scored, 1)})
    print(f"{data.name} {args.split}: {len(qids)} queries, hybrid top {args.depth}, model {args.model} "
          f"(saved fusion weight {alpha})")
    print("| variant | fusion | adaptive depth | scored / query | nDCG@10 | Δ vs fp32 | top-10 overlap | same top-10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['alpha']} | {'yes' if r['adaptive'] else 'no'} | {r['scored_per_query']} | "
              f"{r['ndcg@10']:.4f} | {r['delta_vs_fp32']:+.4f} | {r['top10_overlap']:.1%} | {r['top10_identical']:.1%} |")
    if speed:
        print("pairs/s while scoring (machine load varies; see query_latency.py for timings):",
              {k: round(v, 1) for k, v in speed.items()})
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": data.name, "queries": len(qids), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
