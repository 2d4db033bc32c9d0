"""What an index batch pays to look its new paragraphs' vectors up by content hash (``tasks.store.vectors_by_content``),
against encoding the same paragraphs with the raw bi-encoder.

    python benchmarks/content_lookup.py [--rows 200000 1000000] [--batch 1000] [--repeats 5]

For each table size it builds a LanceDB table of that many rows (random 384-dim vectors, distinct hashes) in a
temporary folder, then times the lookup of ``--batch`` hashes (half of them in the table) without and with a
BTREE index on ``content_hash`` (which the collections do not get: it did not make lookups faster). The raw model encodes ``--batch`` SciFact-like
paragraphs once (the packaged all-MiniLM-L6-v2 on this machine). Medians of ``--repeats``; the ratio is lookup
time / encode time, measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def encode_seconds(n: int) -> float:
    from query.models import bi_encoder_from_settings
    from query.settings import Settings

    encoder = bi_encoder_from_settings(Settings())
    texts = [f"Paragraph {i}: glaciers form where more snow falls each winter than melts during the summer, and over "
             f"decades the weight of fresh snow compacts older layers into dense blue ice number {i}." for i in range(n)]
    encoder.encode(texts[:8])  # warm
    started = time.perf_counter()
    encoder.encode(texts)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    import lancedb
    from lancedb.index import BTree

    from tasks.store import vectors_by_content

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    encode_s = encode_seconds(args.batch)
    print(f"raw model: {args.batch} paragraphs encoded in {encode_s:.2f} s", flush=True)
    rng = np.random.default_rng(0)
    for n in args.rows:
        db = lancedb.connect(tempfile.mkdtemp(prefix="lookup-bench-"))
        hashes = pa.array([f"{i:032x}" for i in range(n)])
        flat = pa.array(rng.random(n * 384, dtype=np.float32))
        table = db.create_table("t", pa.table({"content_hash": hashes,
                                               "vector": pa.FixedSizeListArray.from_arrays(flat, 384)}))
        wanted = [f"{i:032x}" for i in rng.choice(n, args.batch // 2, replace=False)] + \
                 [f"missing{i}" for i in range(args.batch - args.batch // 2)]
        for label in ("no index", "btree"):
            if label == "btree":
                table.create_index("content_hash", config=BTree())
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                found = vectors_by_content(table, wanted)
                times.append(time.perf_counter() - started)
            assert len(found) == args.batch // 2
            med = statistics.median(times)
            print(f"{n:>9} rows, {label:>8}: lookup of {args.batch} hashes {med:.3f} s (median of {args.repeats}), "
                  f"{med / encode_s:.3f}x the raw encode of {args.batch} paragraphs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
