"""Raw bi-encoder throughput under the heap settings a Dask worker gets, against a plain process.

    python benchmarks/malloc_encode.py                 # 600 SciFact docs, MiniLM, 1 torch thread
    python benchmarks/malloc_encode.py --texts 200     # a quick look

Dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting that variable switches
off glibc's dynamic mmap threshold. Each variant below encodes the same texts with raw
``BiEncoder.encode`` (the model at the precision ``auto`` picks here) in a fresh child process, after one
warm-up batch, and prints texts/s and the ratio to the plain process measured in the same run:

- ``plain``: no MALLOC_* variable (glibc's dynamic threshold);
- ``dask``: ``MALLOC_TRIM_THRESHOLD_=65536``, as on a Dask worker;
- ``dask+fix``: the same, then ``tasks.heap.keep_large_blocks()`` (what the encode stage calls);
- ``dask+N MiB``: the same, with ``mallopt(M_MMAP_THRESHOLD, N MiB)`` instead, for N in 1, 4, 8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import ctypes, json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
from query.models import bi_encoder_from_settings
from tasks.heap import keep_large_blocks
corpus, n, how = sys.argv[2], int(sys.argv[3]), sys.argv[4]
texts = [json.loads(line)["text"] for line, _ in zip(open(corpus, encoding="utf-8"), range(n))]
if how == "fix":
    assert keep_large_blocks()
elif how != "none":
    ctypes.CDLL("libc.so.6").mallopt(-3, int(how) << 20)  # M_MMAP_THRESHOLD
encoder = bi_encoder_from_settings()
encoder.encode(texts[:64])
t0 = time.perf_counter()
encoder.encode(texts)
print(json.dumps({"texts_per_s": len(texts) / (time.perf_counter() - t0), "precision": encoder.precision}))
"""


def run(env_extra: dict[str, str], how: str, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.threads), args.corpus, str(args.texts), how],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/data/scifact/corpus.jsonl"))
    ap.add_argument("--texts", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a Dask worker here has 1)")
    args = ap.parse_args()
    dask = {"MALLOC_TRIM_THRESHOLD_": "65536"}
    variants = [("plain", {}, "none"), ("dask", dask, "none"), ("dask+fix", dask, "fix")]
    variants += [(f"dask+{mib} MiB", dask, str(mib)) for mib in (1, 4, 8)]
    results = {}
    for name, env, how in variants:
        results[name] = run(env, how, args)
    base = results["plain"]["texts_per_s"]
    print(f"{'variant':<14} {'texts/s':>8} {'x plain':>8}   ({results['plain']['precision']}, {args.threads} thread(s))")
    for name, r in results.items():
        print(f"{name:<14} {r['texts_per_s']:>8.1f} {r['texts_per_s'] / base:>8.3f}")


if __name__ == "__main__":
    main()
