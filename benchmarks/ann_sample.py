"""Does the capped IVF training sample keep recall? LanceDB's default sample against ``ann_sample_rate``.

    python benchmarks/ann_sample.py --rows 200000                 # the 200k-paragraph dump's size
    python benchmarks/ann_sample.py --rows 50000 200000 --queries 200

For each size, one table of synthetic sentence-embedding-like vectors (``ann_recall.Mixture``: clustered,
anisotropic, L2-normalised, 384-dim) gets the product's IVF_SQ index twice: with LanceDB's default sample
(256 vectors per partition) and with the product's capped one (``tasks.store.ann_sample_rate``). Each build
reports its seconds and the peak RSS it added (the kernel's high-water mark, reset before it), and Recall@100
against exact numpy top-100 at the product's ``ann_nprobes`` (100) and at 10 % of the partitions.
Each build runs in a fresh child process, so neither inherits the other's memory or page cache warmth
unevenly. Tables live in a temporary directory that is deleted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field)) / 1024


def build(db_dir: str, name: str, partitions: int, sample_rate: int) -> dict:
    """Build the product's IVF_SQ index (in this fresh process); returns its seconds and added peak RSS."""
    import lancedb
    from lancedb.index import IvfSq

    table = lancedb.connect(db_dir).open_table(name)
    table.count_rows()
    base = _status_mb("VmRSS:")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # reset VmHWM to the current RSS: what follows is the build's own peak
    t0 = time.perf_counter()
    table.create_index("vector", config=IvfSq(distance_type="cosine", num_partitions=partitions,
                                              sample_rate=sample_rate), replace=True)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _status_mb("VmHWM:") - base}


def main() -> None:
    import lancedb
    from ann_recall import Mixture, build_table, run_queries

    from tasks.store import ann_sample_rate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[200_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        db_dir, name, partitions, rate = args.child
        print(json.dumps(build(db_dir, name, int(partitions), int(rate))))
        return

    work = Path(tempfile.mkdtemp(prefix="ann-sample-"))
    try:
        db = lancedb.connect(str(work))
        mix = Mixture(seed=args.seed)
        queries = mix.sample(args.queries, stream=7, noise_mult=1.1)
        print(f"{'rows':>8} {'P':>5} {'sample/P':>8} {'vectors':>8} {'build s':>8} {'+peak MB':>9} "
              f"{'R@100 np=100':>13} {'R@100 np=P/10':>14}")
        for n in args.rows:
            table, topk, _ = build_table(db, mix, n, queries, 100, 50_000)
            partitions = max(1, round(n**0.5))
            # The capped build first: a second build finds the table in the page cache, the first pays for it.
            for rate in dict.fromkeys([ann_sample_rate(partitions), 256]):
                child = subprocess.run([sys.executable, __file__, "--child", str(work), table.name, str(partitions),
                                        str(rate)], capture_output=True, text=True, check=True)
                built = json.loads(child.stdout.strip().splitlines()[-1])
                seconds, peak = built["seconds"], built["peak_mb"]
                table.checkout_latest()
                recalls = [run_queries(table, queries, topk.ids, 100, {"nprobes": probes})[2]
                           for probes in (100, max(1, partitions // 10))]
                label = "default" if rate == 256 else "capped"
                print(f"{n:>8} {partitions:>5} {rate:>8} {min(n, rate * partitions):>8} {seconds:>8.1f} "
                      f"{peak:>9.0f} {recalls[0]:>13.3f} {recalls[1]:>14.3f}  {label}", flush=True)
            db.drop_table(table.name)
            del table, topk
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
