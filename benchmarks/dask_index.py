"""The index flow on a 2-worker Dask cluster against one process: throughput, identical table, peak RSS.

    python benchmarks/dask_index.py --docs 5183 --rounds 3      # the whole SciFact corpus (issue #13)
    python benchmarks/dask_index.py --docs 400 --rounds 1       # a quick check that it works

Each run is a fresh process indexing the same SciFact slice into a fresh database (under a temporary
directory that is deleted): ``single`` runs the shards in the flow process (pipelined, the default);
``dask`` starts the LocalCluster that ``--workers N`` starts (``flows.runners.local_cluster_kwargs``:
N worker processes of 2 threads and one encoder resource, each torch with cores/N threads), loads the
model on every worker, then indexes with ``dask_address``. Models are loaded before timing in both
(once per process); the cluster's start and the workers' model loads are reported apart. Runs
alternate (single, dask, single, ...) and the medians are compared: on a 2-core machine the target is
overhead, not speed-up (ratio >= 0.9).
Prints one JSON line per run and a final summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _flow_bench import REPO, peak_rss_mb, write_subset  # noqa: E402 - first: it sets up the environment Prefect reads


def child(mode: str, dump: str, db: str, workers: int, batch: int) -> None:
    """One timed run in this fresh process; prints its numbers as JSON."""
    from flows.index_corpus import index_corpus
    from query.models import bi_encoder_from_settings

    overrides: dict = {}
    out: dict = {"mode": mode}
    cluster = client = None
    if mode == "dask":
        from distributed import Client, LocalCluster

        from flows.runners import local_cluster_kwargs

        t0 = time.perf_counter()
        cluster = LocalCluster(**local_cluster_kwargs(workers))  # the cluster `--workers N` starts
        client = Client(cluster)
        client.run(lambda: bi_encoder_from_settings() and None)  # the model, once per worker, before timing
        out["cluster_start_s"] = round(time.perf_counter() - t0, 2)
        overrides["dask_address"] = cluster.scheduler_address
    else:
        bi_encoder_from_settings()
    t0 = time.perf_counter()
    summary = index_corpus([dump], collection="bench", db_uri=db, batch_articles=batch, settings_overrides=overrides)
    wall = time.perf_counter() - t0
    out.update(paragraphs=summary["paragraphs_encoded"], wall_s=round(wall, 2),
               paragraphs_per_s=round(summary["paragraphs_encoded"] / wall, 1),
               encode_s=summary["encode_seconds"], flow_peak_rss_mb=round(peak_rss_mb(), 1))
    if client is not None:
        out["worker_peak_rss_mb"] = sorted(round(v, 1) for v in client.run(peak_rss_mb).values())
        client.close()
        cluster.close()
    print(json.dumps(out))


def table_fingerprint(db: str) -> tuple[list, object]:
    """Rows (sorted by id, vector aside) and the vectors in the same order."""
    import lancedb
    import numpy as np

    cols = ["id", "doc_id", "origin", "source", "title", "position", "text"]
    t = lancedb.connect(db).open_table("bench").to_lance().to_table(columns=[*cols, "vector"]).to_pylist()
    t.sort(key=lambda r: r["id"])
    return [{k: r[k] for k in cols} for r in t], np.array([r["vector"] for r in t], dtype=np.float32)


def run(mode: str, dump: Path, db: Path, workers: int, batch: int) -> dict:
    # benchmarks/ too: the workers unpickle peak_rss_mb from _flow_bench
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "benchmarks")])}
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(dump), str(db), str(workers), str(batch)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/data/scifact/corpus.jsonl"))
    ap.add_argument("--docs", type=int, default=5183)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-articles", type=int, default=256,
                    help="articles per batch (smaller than the CLI's 512, so that the cluster gets several shards)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating single/dask pairs; medians are compared")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, dump, db, workers, batch = args.child
        child(mode, dump, db, int(workers), int(batch))
        return
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="dask-index-bench-"))
    try:
        dump = write_subset(Path(args.corpus), args.docs, tmp / "corpus.jsonl")
        results: dict[str, list[dict]] = {"single": [], "dask": []}
        for i in range(args.rounds):
            for mode in ("single", "dask"):
                results[mode].append(run(mode, dump, tmp / f"{mode}-{i}", args.workers, args.batch_articles))
        rows_a, vec_a = table_fingerprint(str(tmp / "single-0"))
        rows_b, vec_b = table_fingerprint(str(tmp / "dask-0"))
        same_rows = rows_a == rows_b
        identical = same_rows and vec_a.shape == vec_b.shape and bool(np.allclose(vec_a, vec_b, atol=1e-5))
        single = statistics.median(r["paragraphs_per_s"] for r in results["single"])
        dask = statistics.median(r["paragraphs_per_s"] for r in results["dask"])
        print(json.dumps({
            "docs": args.docs, "paragraphs": results["single"][0]["paragraphs"], "workers": args.workers,
            "rounds": args.rounds, "single_paragraphs_per_s": single, "dask_paragraphs_per_s": dask,
            "ratio": round(dask / single, 3), "identical_table": identical, "same_rows": same_rows,
            "max_abs_vector_diff": float(np.abs(vec_a - vec_b).max()) if vec_a.shape == vec_b.shape else None,
            "single_flow_peak_rss_mb": max(r["flow_peak_rss_mb"] for r in results["single"]),
            "dask_flow_peak_rss_mb": max(r["flow_peak_rss_mb"] for r in results["dask"]),
            "dask_worker_peak_rss_mb": max(max(r["worker_peak_rss_mb"]) for r in results["dask"]),
            "cluster_start_s": statistics.median(r["cluster_start_s"] for r in results["dask"]),
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
