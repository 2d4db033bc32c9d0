"""What a search's own checks cost against the retrieval itself: the version checks and the repeated-passage filter.

    python benchmarks/search_checks.py --db DB --collection C --queries ../shared/data/scifact/queries.jsonl

- An unpinned hybrid search reads the table twice (dense, then lexical) and checks the table's version before
  and after, so that both reads are of one version (``query.searcher.Searcher._retrieve_from_table``).
- A search drops a candidate whose title and text repeat a better-ranked one's (``query.hits.distinct_passages``:
  one page indexed under two URLs) before re-ranking.

This prints the median hybrid retrieval time (checks included; 100 candidates, no re-ranking, query vectors
computed beforehand), the median of one version check and of ``distinct_passages`` on the candidates, their
shares of the retrieval, and how many candidates the filter dropped, in two rounds.
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
    args = parser.parse_args()

    from query import Searcher
    from query.hits import distinct_passages

    with open(args.queries, encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in fh if line.strip()][: args.n]
    searcher = Searcher(db_uri=args.db, collection=args.collection)
    vectors = searcher.encode_queries(queries)
    for round_ in (1, 2):
        retrieve, check, distinct, dropped = [], [], [], 0
        for q, v in zip(queries, vectors, strict=True):
            t0 = time.perf_counter()
            cands = searcher._retrieve(q, v, "hybrid", 100, None)
            t1 = time.perf_counter()
            searcher.table.version  # noqa: B018 - one version check, as the search makes two
            t2 = time.perf_counter()
            kept = distinct_passages(cands)
            t3 = time.perf_counter()
            retrieve.append(t1 - t0)
            check.append(t2 - t1)
            distinct.append(t3 - t2)
            dropped += cands.num_rows - kept.num_rows
        r, c, d = (statistics.median(x) * 1000 for x in (retrieve, check, distinct))
        print(f"round {round_}: hybrid retrieval {r:.2f} ms (median of {len(queries)}); one version check {c:.3f} ms: "
              f"the two checks are {2 * c / r:.1%} of it; distinct_passages {d:.3f} ms: {d / r:.1%} of it, "
              f"{dropped} repeated candidates dropped in all")


if __name__ == "__main__":
    main()
