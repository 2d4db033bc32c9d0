"""Which fusion weight should a trained re-ranker keep: the best one on dev, or the one-standard-error rule's?

For each registered model of a collection, this rebuilds the gate's dev queries exactly as its training
run did (same seed; a judged model's from ``--judgments``, a self-supervised one's -- its registry entry
says which -- from the collection alone; since stop 24 those no longer depend on the run's budget, so for
models trained before then this rebuild differs from their run's), scores them, and picks the weight both ways
(``tasks.rerank_gate.one_se_alpha`` against the plain argmax). It then scores the test queries' hybrid top
``--depth`` once and prints test nDCG@10 at both weights, against hybrid, with the cross-validated gate
score and decision each rule gives on dev.

    python benchmarks/fusion_weight.py ../shared/data/scifact --collection scifact-eval --db DB \\
        --models J --judgments ../shared/data/scifact
    python benchmarks/fusion_weight.py ../shared/data/scifact --collection scifact-eval --db DB \\
        --models S

Test queries never choose anything here: they only report what each rule's dev choice gives.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reranker_quality import test_set  # noqa: E402 - the test candidates, built as that benchmark builds them


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="BEIR directory with the test judgments")
    ap.add_argument("--collection", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="registry ids (judged or self-supervised)")
    ap.add_argument("--judgments", default=None, help="the judged models' --judgments directory (needed for those)")
    ap.add_argument("--split", default="train", help="the judged models' --split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=30)
    args = ap.parse_args()

    from flows.train_reranker import judged_split, pseudo_dev
    from query.models import load_reranker
    from query.registry import model_path, read_registry
    from query.searcher import Searcher
    from tasks.datasets import load_dataset
    from tasks.metrics import paired_p
    from tasks.rerank_gate import (best_alpha, choose_alpha, decide, dev_set, ndcg10, one_se_alpha, per_query_ndcg10,
                                   rerank_scores)

    searcher = Searcher(db_uri=args.db, collection=args.collection)
    registry = read_registry(searcher.table)
    entries = [registry.find(name) for name in args.models]
    if args.judgments is None and any(e.signal == "judgments" for e in entries):
        ap.error("a judged model's dev queries come from its judgments: give --judgments")

    @functools.cache  # by signal: every model of one signal is gated on the same dev queries
    def dev_for(signal: str):
        """The dev queries of a model trained with ``signal``, and retrieval's dev nDCG@10 on them."""
        dev_ex = (judged_split(searcher, args.judgments, args.split, args.seed)[1] if signal == "judgments"
                  else pseudo_dev(searcher, args.seed))
        dev = dev_set(searcher, dev_ex, args.depth)
        return dev, ndcg10(dev, None, 0.0)

    data = load_dataset(args.dataset, split="test")
    qids = [q for q in data.queries if q in data.qrels]
    test = test_set(searcher, data, qids, args.depth)
    base = per_query_ndcg10(test, None, 0.0)
    print(f"{data.name}: {len(qids)} test queries, hybrid top {args.depth}; "
          f"test hybrid nDCG@10 {np.mean(list(base.values())):.4f}")
    for name, entry in zip(args.models, entries, strict=True):
        dev, retrieval = dev_for(entry.signal)
        print(f"  {name} ({entry.signal}): {len(dev.qids)} dev queries")
        model = load_reranker(str(model_path(args.db, entry)))
        dev_scores, test_scores = rerank_scores(model, dev), rerank_scores(model, test)
        for label, rule in (("best on dev", best_alpha), ("one-standard-error", one_se_alpha)):
            # The gate's own weight choice and cross-validation, with each rule.
            gate = choose_alpha(dev, dev_scores, rule)
            promoted = decide("auto", retrieval, None, gate["ndcg@10"], gate["p"])[0]
            t = per_query_ndcg10(test, test_scores, gate["alpha"])
            gain = np.array([t[q] - base[q] for q in qids])
            print(f"  {name} {label:<19} alpha {gate['alpha']:.1f}  dev gate {retrieval:.4f} -> {gate['ndcg@10']:.4f} "
                  f"(p {gate['p']:.3f}, {'promoted' if promoted else 'refused'})  test nDCG@10 "
                  f"{np.mean(list(t.values())):.4f} ({gain.mean():+.4f}, p {paired_p(gain, one_sided=False):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
