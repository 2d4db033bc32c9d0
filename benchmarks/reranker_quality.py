"""Does a collection's trained re-ranker improve the ranking? nDCG@10 on a test split, one scoring pass.

For every test query: the hybrid top ``--depth`` candidates (what a trained re-ranker re-ranks at query
time), each model's 0..1 scores over them (computed once), then nDCG@10 (ir-measures, MaxP to
documents, as ``corpus-search eval``) of

* hybrid alone,
* the re-ranker alone (fusion weight 1),
* the re-ranker fused with the first stage by the weight saved with the model (chosen on dev queries,
  never on these test queries),

with a paired randomisation test of each against hybrid (per-query nDCG@10, 10 000 sign flips).

    python benchmarks/reranker_quality.py ../shared/data/scifact --collection scifact-eval --db DB \\
        --models 20261127-213936-judgments 20261127-223001-self-supervised

``--models`` takes registry ids of the collection (``corpus-search rerankers``, fused by their saved weight)
or model directories (weight 1); ``--alpha`` overrides the weight of every model. ``--by-alpha`` also prints
each model's test nDCG@10 at every weight the gate tries, from the same scores: hindsight, to show how
far the weight chosen on dev is from the best one, never to choose it. The collection must hold the
dataset's corpus (``corpus-search eval`` indexes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_set(searcher, data, qids: list[str], depth: int):
    """The test queries' hybrid top ``depth`` as a ``tasks.rerank_gate.DevSet``, scored as the gate scores dev.

    ``judged_id``: an HTML corpus's doc ids are file names (CACM-0001.html, or pages/A-1.html in an archive's
    one folder); the judgments use CACM-0001.
    """
    from dataclasses import replace

    from query.searcher import passage_text
    from tasks.datasets import judged_id
    from tasks.rerank_gate import DevSet

    known = {d for q in qids for d in data.qrels[q]}

    hits = searcher.search_many([data.queries[q] for q in qids], k=depth, mode="hybrid", candidates=depth,
                                rerank=False, distinct=False)  # as `corpus-search eval`: judgments name each copy
    enc = searcher.meta.encode_title
    return DevSet(qids, [data.queries[q] for q in qids], {q: data.qrels[q] for q in qids},
                  [[replace(h, doc_id=judged_id(h.doc_id, known)) for h in hs] for hs in hits],
                  [[passage_text(h.title, h.text, enc) for h in hs] for hs in hits])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="BEIR directory (queries.jsonl, qrels/<split>.tsv)")
    ap.add_argument("--collection", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--models", nargs="+", required=True, help="registry ids or model directories")
    ap.add_argument("--alpha", type=float, default=None,
                    help="fusion weight (default: the one saved with a registered model, 1 for a directory)")
    ap.add_argument("--depth", type=int, default=30, help="candidates re-ranked per query (default 30)")
    ap.add_argument("--queries", type=int, default=None, help="only the first N test queries")
    ap.add_argument("--by-alpha", action="store_true",
                    help="also print each model's nDCG@10 at every fusion weight the gate tries (hindsight)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()

    from query.models import load_reranker
    from query.registry import model_path, read_registry
    from query.searcher import Searcher
    from tasks.datasets import load_dataset
    from tasks.metrics import paired_p
    from tasks.rerank_gate import ALPHAS, ndcg10, per_query_ndcg10, rerank_scores

    data = load_dataset(args.dataset, split=args.split)
    qids = [q for q in data.queries if q in data.qrels][: args.queries]
    searcher = Searcher(db_uri=args.db, collection=args.collection)
    t0 = time.perf_counter()
    test = test_set(searcher, data, qids, args.depth)
    hits = test.hits
    retrieval_s = time.perf_counter() - t0
    base = per_query_ndcg10(test, None, 0.0)
    base_v = np.array([base[q] for q in qids])
    rows = [{"run": "hybrid", "ndcg@10": round(base_v.mean(), 4)}]
    registry = read_registry(searcher.table)
    for name in args.models:
        entry = registry.find(name)
        path = str(model_path(args.db, entry)) if entry else name
        alpha = args.alpha if args.alpha is not None else (entry.alpha if entry else 1.0)
        model = load_reranker(path)
        t1 = time.perf_counter()
        ce = rerank_scores(model, test)
        secs = time.perf_counter() - t1
        pairs = sum(len(hs) for hs in hits)
        for label, a in (("alone", 1.0), (f"fused a={alpha}", alpha)):
            if label != "alone" and alpha == 1.0:
                continue
            per = per_query_ndcg10(test, ce, a)
            v = np.array([per[q] for q in qids])
            rows.append({"run": f"hybrid + {name} {label}", "ndcg@10": round(v.mean(), 4),
                         "delta": round(v.mean() - base_v.mean(), 4), "p": round(paired_p(v - base_v, one_sided=False), 4),
                         "pairs_per_s": round(pairs / secs, 1)})
        if args.by_alpha:
            rows[-1]["by_alpha"] = {str(a): round(ndcg10(test, ce, a), 4) for a in ALPHAS}
    print(f"{data.name} {args.split}: {len(qids)} queries, hybrid top {args.depth} "
          f"(retrieval {retrieval_s / len(qids) * 1000:.0f} ms/query)")
    for r in rows:
        extra = f"  delta {r['delta']:+.4f}  p {r['p']:.4f}  {r['pairs_per_s']} pairs/s" if "delta" in r else ""
        print(f"  {r['run']:<60} nDCG@10 {r['ndcg@10']:.4f}{extra}")
        if "by_alpha" in r:
            print("    by weight (hindsight): " + " / ".join(f"{a} {v:.4f}" for a, v in r["by_alpha"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": data.name, "queries": len(qids), "depth": args.depth,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
