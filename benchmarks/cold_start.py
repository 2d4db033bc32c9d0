"""Cold start of the query module in a fresh process: import, model loads, first and second search.

    python benchmarks/cold_start.py --db DB --collection NAME [--cross-encoder PATH | --rerank] [--query "..."]
        [--code DIR]

``--rerank`` re-ranks with the collection's own re-ranker (its promoted one, else the default);
``--code DIR`` runs another checkout's ``query`` module (e.g. a worktree of an older commit), for a
before/after comparison in one run.

Run ``corpus-search index examples/articles examples/notes --collection demo`` first, or point it at
any collection. Prints one JSON line of seconds per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import query
from query import Searcher
t_import = time.perf_counter() - t0
args = json.loads(sys.argv[1])
t = time.perf_counter()
s = Searcher(db_uri=args["db"], collection=args["collection"], cross_encoder=args.get("cross_encoder"))
t_open = time.perf_counter() - t
t = time.perf_counter(); s.bi_encoder; t_bi = time.perf_counter() - t
t_ce = 0.0
rerank = bool(args.get("cross_encoder") or args.get("rerank"))
if rerank:
    t = time.perf_counter(); s.reranker; t_ce = time.perf_counter() - t
t = time.perf_counter(); s.search(args["query"], k=10, rerank=rerank); t_first = time.perf_counter() - t
t = time.perf_counter(); s.search(args["query"] + " today", k=10, rerank=rerank); t_second = time.perf_counter() - t
print(json.dumps({"import_s": t_import, "open_collection_s": t_open, "load_bi_encoder_s": t_bi,
                  "load_cross_encoder_s": t_ce, "first_search_s": t_first, "second_search_s": t_second,
                  "cold_total_s": time.perf_counter() - t0, "reranked": rerank,
                  "prefect_imported": any(m.startswith("prefect") for m in sys.modules)}))
"""


def cold_start(db: str, collection: str, cross_encoder: str | None, query: str, *, rerank: bool = False,
               code: str | None = None) -> dict:
    """Run the cold-start measurement in a fresh interpreter and return its stage timings."""
    root = Path(code).resolve() if code else Path(__file__).resolve().parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONPATH": str(root)}
    payload = json.dumps({"db": db, "collection": collection, "cross_encoder": cross_encoder, "query": query,
                          "rerank": rerank})
    out = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True, env=env,
                         cwd=root, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=".corpus_search/lancedb")
    ap.add_argument("--collection", default="demo")
    ap.add_argument("--cross-encoder", default=None)
    ap.add_argument("--rerank", action="store_true", help="re-rank with the collection's own re-ranker")
    ap.add_argument("--query", default="How do glaciers form?")
    ap.add_argument("--code", default=None, help="a checkout whose query module to measure (default: this one)")
    args = ap.parse_args()
    result = cold_start(args.db, args.collection, args.cross_encoder, args.query, rerank=args.rerank, code=args.code)
    for k, v in result.items():
        print(f"{k:>22}: {v:.3f}" if isinstance(v, float) else f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
