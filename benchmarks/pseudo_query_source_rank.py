"""Where the collection's own hybrid retrieval ranks a self-supervised training pseudo-query's source document.

A pseudo-query is text cut out of its positive paragraph (a title, a sentence, salient terms), and the
indexed paragraph still contains that text. This measures how often retrieval then ranks the source
document first, by pseudo-query kind. It is the reason fusion-aware training (the listwise loss on
``alpha * cross-encoder + (1 - alpha) * retrieval``) was not tried on self-supervised data: where retrieval
already ranks the positive first, that loss pushes almost nothing into the cross-encoder
(benchmarks/RESULTS.md, "Stop 36").

    python benchmarks/pseudo_query_source_rank.py --collection scifact-eval --db DB --queries 300

The pseudo-queries are made as ``train-reranker --self-supervised`` makes them (``tasks.rerank_data``), from
a sample of the collection's paragraphs (``--seed``), and retrieved as its hard-negative mining retrieves
them (hybrid, top ``MINING_DEPTH``).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collection", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--queries", type=int, default=300, help="pseudo-queries to make (default 300)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from query.searcher import Searcher
    from tasks import rerank_data as rd

    searcher = Searcher(db_uri=args.db, collection=args.collection)
    # Not every paragraph makes a query (a title-only record makes none of the sentence kind): draw twice as many.
    rows = rd.sample_paragraphs(searcher, 2 * args.queries, seed=args.seed)
    examples = rd.pseudo_queries(rows, searcher.meta.encode_title, args.seed, limit=args.queries)
    hits = searcher.search_many([e.query for e in examples], k=rd.MINING_DEPTH, mode="hybrid",
                                candidates=rd.MINING_DEPTH, rerank=False)
    ranks: dict[str, list[int | None]] = defaultdict(list)
    for example, found in zip(examples, hits, strict=True):
        rank = next((i for i, h in enumerate(found, start=1) if h.doc_id in example.relevant), None)
        ranks[example.kind].append(rank)
        ranks["all kinds"].append(rank)
    print(f"{args.collection}: where hybrid retrieval (top {rd.MINING_DEPTH}) ranks a pseudo-query's source document")
    for kind in sorted(ranks, key=lambda k: (k == "all kinds", k)):
        rs = ranks[kind]
        first = sum(r == 1 for r in rs) / len(rs)
        top3 = sum(r is not None and r <= 3 for r in rs) / len(rs)
        missed = sum(r is None for r in rs) / len(rs)
        print(f"  {kind:<10} {len(rs):4d} queries: first {first:.3f}, top 3 {top3:.3f}, "
              f"not in the top {rd.MINING_DEPTH} {missed:.3f}")


if __name__ == "__main__":
    main()
