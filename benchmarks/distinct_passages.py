"""What dropping repeated passages costs a search: ``query.hits.distinct_passages`` against the retrieval itself.

    python benchmarks/distinct_passages.py --db DB --collection C --queries ../shared/data/scifact/queries.jsonl

A search drops a candidate whose title and text repeat a better-ranked one's (one page indexed under two URLs)
before re-ranking. This prints the median hybrid retrieval time (100 candidates, no re-ranking, query vectors
computed beforehand), the median time of ``distinct_passages`` on those candidates, its share of the retrieval,
and how many candidates it dropped, in two rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--queries", required=True, help="a BEIR queries.jsonl")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()

    from query import Searcher
    from query.hits import distinct_passages

    with open(args.queries, encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in fh if line.strip()][: args.n]
    searcher = Searcher(db_uri=args.db, collection=args.collection)
    vectors = searcher.encode_queries(queries)
    for round_ in (1, 2):
        retrieve, distinct, dropped = [], [], 0
        for q, v in zip(queries, vectors, strict=True):
            t0 = time.perf_counter()
            cands = searcher._retrieve(q, v, "hybrid", args.candidates, None)
            t1 = time.perf_counter()
            kept = distinct_passages(cands)
            t2 = time.perf_counter()
            retrieve.append(t1 - t0)
            distinct.append(t2 - t1)
            dropped += cands.num_rows - kept.num_rows
        r, d = statistics.median(retrieve) * 1000, statistics.median(distinct) * 1000
        print(f"round {round_}: hybrid retrieval {r:.2f} ms (median of {len(queries)}), distinct_passages {d:.3f} ms: "
              f"{d / r:.1%} of the retrieval; {dropped} repeated candidates dropped in all")


if __name__ == "__main__":
    main()
