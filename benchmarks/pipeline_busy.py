"""Encode-busy fraction of an index run's wall time, without and with the in-process pipeline.

    python benchmarks/pipeline_busy.py --docs 5183 --rounds 3     # the whole SciFact corpus (issue #13)
    python benchmarks/pipeline_busy.py --docs 400 --rounds 1      # a quick check that it works

busy = (seconds spent inside the encoder, summed over batches) / (the run's wall seconds). Before:
``pipeline_depth=0``, each batch read, split, encoded and written one after another in the flow process
(the behaviour before issue #13). After: the default depth (2), the next batch read and split in
another thread while the current one encodes. Each run is a fresh process with the model loaded
before timing, indexing into a fresh database under a temporary directory that is deleted. On a GPU the
pipeline's aim is busy -> 1; on a 2-core CPU reading and splitting compete with encoding for the same
cores, so wall time is the number to watch there. Runs alternate; medians are reported.
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


def child(depth: int, dump: str, db: str, batch: int) -> None:
    from flows.index_corpus import index_corpus
    from query.models import bi_encoder_from_settings

    bi_encoder_from_settings()  # loaded once per process, before timing
    t0 = time.perf_counter()
    summary = index_corpus([dump], collection="bench", db_uri=db, batch_articles=batch,
                           settings_overrides={"pipeline_depth": depth})
    wall = time.perf_counter() - t0
    print(json.dumps({"pipeline_depth": depth, "paragraphs": summary["paragraphs_encoded"], "wall_s": round(wall, 2),
                      "encode_s": summary["encode_seconds"], "busy": round(summary["encode_seconds"] / wall, 3),
                      "paragraphs_per_s": round(summary["paragraphs_encoded"] / wall, 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/data/scifact/corpus.jsonl"))
    ap.add_argument("--docs", type=int, default=5183)
    ap.add_argument("--batch-articles", type=int, default=512)
    ap.add_argument("--depth", type=int, default=2, help="the pipelined run's pipeline_depth")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        depth, dump, db, batch = args.child
        child(int(depth), dump, db, int(batch))
        return
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-busy-bench-"))
    try:
        dump = write_subset(Path(args.corpus), args.docs, tmp / "corpus.jsonl")
        runs: dict[int, list[dict]] = {0: [], args.depth: []}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for i in range(args.rounds):
            for depth, done in runs.items():
                proc = subprocess.run([sys.executable, __file__, "--child", str(depth), str(dump),
                                       str(tmp / f"db-{depth}-{i}"), str(args.batch_articles)],
                                      cwd=REPO, env=env, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"run failed:\n{proc.stderr[-4000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                print(json.dumps(result), flush=True)
                done.append(result)
        before, after = runs[0], runs[args.depth]

        def med(rs: list[dict], key: str) -> float:
            return statistics.median(r[key] for r in rs)

        print(json.dumps({
            "docs": args.docs, "paragraphs": before[0]["paragraphs"], "rounds": args.rounds,
            "busy_before": med(before, "busy"), "busy_after": med(after, "busy"),
            "wall_before_s": med(before, "wall_s"), "wall_after_s": med(after, "wall_s"),
            "speedup": round(med(before, "wall_s") / med(after, "wall_s"), 3),
            "peak_rss_before_mb": max(r["peak_rss_mb"] for r in before),
            "peak_rss_after_mb": max(r["peak_rss_mb"] for r in after),
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
