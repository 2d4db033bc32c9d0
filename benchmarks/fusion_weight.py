"""Which fusion weight should a trained re-ranker keep: the best one on dev, or the one-standard-error rule's?

For each registered model of a collection, this rebuilds the gate's dev queries exactly as its training
run did (same seed; ``--judgments`` for a judged model, ``--time-budget`` for a self-supervised one, which
sizes its paragraph sample), scores them, and picks the weight both ways
(``tasks.rerank_gate.one_se_alpha`` against the plain argmax). It then scores the test queries' hybrid top
``--depth`` once and prints test nDCG@10 at both weights, against hybrid, with the cross-validated gate
score and decision each rule gives on dev.

    python benchmarks/fusion_weight.py ../shared/data/scifact --collection scifact-eval --db DB \\
        --models J --judgments ../shared/data/scifact
    python benchmarks/fusion_weight.py ../shared/data/scifact --collection scifact-eval --db DB \\
        --models S --time-budget 2700

Test queries never choose anything here: they only report what each rule's dev choice gives.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="BEIR directory with the test judgments")
    ap.add_argument("--collection", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="registry ids, all trained with the same signal")
    ap.add_argument("--judgments", default=None, help="the judged models' --judgments directory")
    ap.add_argument("--split", default="train", help="the judged models' --split")
    ap.add_argument("--time-budget", type=float, default=None, help="the self-supervised models' --time-budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=30)
    args = ap.parse_args()
    if (args.judgments is None) == (args.time_budget is None):
        ap.error("give --judgments (judged models) or --time-budget (self-supervised models)")

    from flows.evaluate import html_doc_id
    from flows.train_reranker import judged_split, pseudo_sample_size, pseudo_split
    from query.devices import resolve_device
    from query.models import load_reranker
    from query.registry import model_path, read_registry
    from query.searcher import Searcher, passage_text
    from query.settings import get_settings
    from tasks.datasets import load_dataset
    from tasks.metrics import paired_p
    from tasks.rerank_gate import ALPHAS, DevSet, _fold, decide, dev_set, one_se_alpha, per_query_ndcg10, rerank_scores

    searcher = Searcher(db_uri=args.db, collection=args.collection)
    if args.judgments:
        dev_ex = judged_split(searcher, args.judgments, args.split, args.seed)[1]
    else:
        n = pseudo_sample_size(args.time_budget, resolve_device(get_settings().device))
        dev_ex = pseudo_split(searcher, n, args.seed)[0]
    dev = dev_set(searcher, dev_ex, args.depth)
    data = load_dataset(args.dataset, split="test")
    qids = [q for q in data.queries if q in data.qrels]
    hits = searcher.search_many([data.queries[q] for q in qids], k=args.depth, mode="hybrid",
                                candidates=args.depth, rerank=False)
    enc = searcher.meta.encode_title
    test = DevSet(qids, [data.queries[q] for q in qids], {q: data.qrels[q] for q in qids},
                  [[replace(h, doc_id=html_doc_id(h.doc_id)) for h in hs] for hs in hits],
                  [[passage_text(h.title, h.text, enc) for h in hs] for hs in hits])
    base = per_query_ndcg10(test, None, 0.0)
    print(f"{data.name}: {len(dev.qids)} dev queries, {len(qids)} test queries, hybrid top {args.depth}; "
          f"test hybrid nDCG@10 {np.mean(list(base.values())):.4f}")
    registry = read_registry(searcher.table)

    def argmax(per, q):
        return max(ALPHAS, key=lambda al: (np.mean([per[al][x] for x in q]), -al))

    for name in args.models:
        model = load_reranker(str(model_path(args.db, registry.find(name))))
        dev_scores = rerank_scores(model, dev)
        per = {al: per_query_ndcg10(dev, dev_scores, al) for al in ALPHAS}
        test_scores = rerank_scores(model, test)
        folds = [[q for q in dev.qids if _fold(q) == f] for f in (0, 1)]
        retrieval = float(np.mean(list(per[0.0].values())))
        for rule, choose in (("best on dev", argmax), ("one-standard-error", one_se_alpha)):
            alpha = choose(per, dev.qids)
            cv = {}
            for a, b in ((0, 1), (1, 0)):
                cv.update({q: per[choose(per, folds[a])][q] for q in folds[b]})
            gate = float(np.mean(list(cv.values())))
            p = paired_p([cv[q] - per[0.0][q] for q in cv], one_sided=True)
            promoted = decide("auto", retrieval, None, gate, p)[0]
            t = per_query_ndcg10(test, test_scores, alpha)
            gain = np.array([t[q] - base[q] for q in qids])
            print(f"  {name} {rule:<19} alpha {alpha:.1f}  dev gate {retrieval:.4f} -> {gate:.4f} (p {p:.3f}, "
                  f"{'promoted' if promoted else 'refused'})  test nDCG@10 {np.mean(list(t.values())):.4f} "
                  f"({gain.mean():+.4f}, p {paired_p(gain, one_sided=False):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
