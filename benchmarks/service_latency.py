"""Query service latency: ``corpus-search api`` in a subprocess, N queries per client at each concurrency.

    python benchmarks/service_latency.py --db DB --collection C --queries queries.jsonl \\
        [--clients 1 4 8] [--n 50] [--model-threads 1] [--cross-encoder PATH]

``--queries`` is a BEIR ``queries.jsonl`` (the ``text`` field of each line). Printed per concurrency level:
median and p95 latency of one ``POST /search``, throughput (answered queries per second over the level's
wall time) and errors; and "cold": seconds from starting the process to the first answered ``/search``
(imports, model loads and warm-up included), with "ready" (first 200 of ``/healthz``) on the way.

The core, :func:`run`, returns a dict and is importable (``benchmarks/query_latency.py`` can add it).
Each client is a thread with its own ``httpx.Client``; client i starts at query i, so clients send
different queries at the same time, and no query is sent twice (given enough queries), so the service's
score cache never answers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def read_queries(path: str | os.PathLike) -> list[str]:
    """The ``text`` of every line of a BEIR ``queries.jsonl``."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _level(url: str, collection: str, queries: Sequence[str], clients: int, n: int, offset: int = 0) -> dict:
    import httpx

    def client(i: int) -> tuple[list[float], list[str]]:
        latencies, errors = [], []
        with httpx.Client(timeout=600, trust_env=False) as c:
            for j in range(n):
                q = queries[(offset + i + j * clients) % len(queries)]
                t = time.perf_counter()
                try:
                    r = c.post(url + "/search", json={"query": q, "collection": collection, "k": 10})
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
        return latencies, errors

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    latencies = [x for lat, _ in parts for x in lat]
    errors = [e for _, errs in parts for e in errs]
    return {
        "clients": clients, "queries": clients * n, "errors": len(errors), "first_errors": errors[:3],
        "median_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p95_ms": 1000 * _percentile(latencies, 0.95) if latencies else None,
        "qps": len(latencies) / wall, "wall_s": wall,
    }


def run(db: str, collection: str, queries: Sequence[str], clients: Sequence[int] = (1, 4, 8), n: int = 50, *,
        model_threads: int = 1, cross_encoder: str | None = None, startup_timeout_s: float = 600) -> dict:
    """Start ``corpus-search api`` on a free port, measure cold start and each concurrency level, stop it."""
    import httpx

    from deployments.serve import free_port

    if not queries:
        raise ValueError("no queries to send")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "corpus_search.cli", "api", "--db", db, "--port", str(port),
           "--collection", collection, "--model-threads", str(model_threads)]
    if cross_encoder:
        cmd += ["--cross-encoder", cross_encoder]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CORPUS_SEARCH_API_URL", None)
    log = tempfile.NamedTemporaryFile(prefix="service-latency-", suffix=".log", delete=False)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = None
        with httpx.Client(timeout=5, trust_env=False) as c:
            while ready is None:
                if proc.poll() is not None or time.perf_counter() - t0 > startup_timeout_s:
                    raise RuntimeError(f"the service did not become ready; its log: {log.name}\n"
                                       + Path(log.name).read_text(errors="replace")[-3000:])
                try:
                    if c.get(url + "/healthz").status_code == 200:
                        ready = time.perf_counter() - t0
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            first = c.post(url + "/search", json={"query": queries[0], "collection": collection, "k": 10},
                           timeout=600)
            cold = time.perf_counter() - t0
            if first.status_code != 200:
                raise RuntimeError(f"the first /search failed: HTTP {first.status_code} {first.text[:300]}")
            reranked = first.json()["reranked"]
        # Each level starts after the queries of the levels before it: no level is served from the score cache
        # of an earlier one (the first query warmed the service and is not reused either).
        starts = [1 + sum(c * n for c in clients[:i]) for i in range(len(clients))]
        levels = [_level(url, collection, queries, c, n, start) for c, start in zip(clients, starts, strict=True)]
    finally:
        proc.terminate()  # our own child, by its handle
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {"collection": collection, "model_threads": model_threads, "reranked": reranked,
            "ready_s": ready, "cold_s": cold, "levels": levels, "log": log.name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--queries", required=True, help="BEIR queries.jsonl")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--n", type=int, default=50, help="queries per client at each level")
    ap.add_argument("--model-threads", type=int, default=1, choices=(1, 2, 4))
    ap.add_argument("--cross-encoder", default=None, help="cross-encoder of the service (default: its settings)")
    ap.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = ap.parse_args()
    result = run(args.db, args.collection, read_queries(args.queries), args.clients, args.n,
                 model_threads=args.model_threads, cross_encoder=args.cross_encoder)
    if args.json:
        print(json.dumps(result))
        return
    print(f"service: collection {result['collection']}, model threads {result['model_threads']}, "
          f"re-ranked {result['reranked']}")
    print(f"cold: {result['cold_s']:.2f} s from process start to the first answered /search "
          f"(ready after {result['ready_s']:.2f} s)")
    print(f"{'clients':>7} {'queries':>7} {'median ms':>10} {'p95 ms':>8} {'q/s':>7} {'errors':>6}")
    for lv in result["levels"]:
        med = f"{lv['median_ms']:.1f}" if lv["median_ms"] is not None else "-"
        p95 = f"{lv['p95_ms']:.1f}" if lv["p95_ms"] is not None else "-"
        print(f"{lv['clients']:>7} {lv['queries']:>7} {med:>10} {p95:>8} {lv['qps']:>7.2f} {lv['errors']:>6}")
        for e in lv["first_errors"]:
            print(f"        error: {e}")


if __name__ == "__main__":
    main()
