"""What reading one table version costs a hybrid search: two version checks against the retrieval itself.

    python benchmarks/hybrid_version_check.py --db DB --collection C --queries ../shared/data/scifact/queries.jsonl

An unpinned hybrid search reads the table twice (dense, then lexical) and checks the table's version before
and after, so that both reads are of one version (``query.searcher.Searcher._retrieve_from_table``). This
prints the median hybrid retrieval time (checks included; 100 candidates, no re-ranking, query vectors
computed beforehand), the median of one version check, and the share the two checks take, in two rounds.
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

    with open(args.queries, encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in fh if line.strip()][: args.n]
    searcher = Searcher(db_uri=args.db, collection=args.collection)
    vectors = searcher.encode_queries(queries)

    def median_ms(fn) -> float:
        times = []
        for q, v in zip(queries, vectors, strict=True):
            t = time.perf_counter()
            fn(q, v)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    for round_ in (1, 2):
        hybrid = median_ms(lambda q, v: searcher._retrieve(q, v, "hybrid", 100, None))
        check = median_ms(lambda q, v: searcher.table.version)
        print(f"round {round_}: hybrid retrieval {hybrid:.2f} ms (median of {len(queries)}), one version check "
              f"{check:.3f} ms: the two checks are {2 * check / hybrid:.1%} of a hybrid retrieval")


if __name__ == "__main__":
    main()
