"""Does reporting encode progress in smaller steps cost throughput? One ``encode`` call per 1024 texts vs per 256.

    python benchmarks/encode_progress_step.py --corpus ../shared/data/scifact/corpus.jsonl --texts 1024

``tasks.encode.encode_in_chunks`` encodes in steps of 256 texts (at least 4 batches) when a progress bar
watches, instead of one call per ``ENCODE_CHUNK_SIZE`` chunk. Prints texts/s of both, alternating, twice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a BEIR corpus.jsonl")
    parser.add_argument("--texts", type=int, default=1024, help="texts to encode (default: 1024)")
    args = parser.parse_args()
    from query.models import bi_encoder_from_settings
    from query.settings import Settings

    enc = bi_encoder_from_settings(Settings())
    with open(args.corpus, encoding="utf-8") as f:
        texts = [(d := json.loads(line))["title"] + " " + d["text"][:1200] for line in itertools.islice(f, args.texts)]
    enc.encode(texts[:64])  # warm-up
    rates: dict[int, list[float]] = {}
    for _ in range(2):
        for step in (len(texts), 256):
            t0 = time.perf_counter()
            for i in range(0, len(texts), step):
                enc.encode(texts[i : i + step])
            rates.setdefault(step, []).append(len(texts) / (time.perf_counter() - t0))
    for step, r in rates.items():
        print(f"step {step}: {sum(r) / len(r):.1f} texts/s ({', '.join(f'{x:.1f}' for x in r)})")


if __name__ == "__main__":
    main()
