"""What the index progress bar costs: the index-corpus flow with and without ``progress``, same corpus.

    python benchmarks/index_progress_overhead.py --corpus ../shared/data/scifact/corpus.jsonl --docs 1000 --repeats 2

Each run indexes the same JSONL subset into a fresh database, alternating bar off / bar on after one
warm-up run (the model loads once per process). The bar writes to a file, as it would to a terminal.
Prints paragraphs/s of each run and the ratio of the medians (bar on / bar off; 1.0 = free).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deployments.prefect_env import prefect_environment  # noqa: E402

prefect_environment()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a JSONL dump (e.g. SciFact corpus.jsonl)")
    parser.add_argument("--docs", type=int, default=1000, help="documents of the corpus to index (default: 1000)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant (default: 2)")
    args = parser.parse_args()

    from corpus_search.ephemeral import guard_temporary_server
    from flows.index_corpus import index_corpus
    from flows.progress import IndexProgress

    guard_temporary_server()  # Prefect's temporary server goes when this process does, even if killed
    # The bar's own cost per call, without encoding: what each encode chunk and each batch adds.
    with open(os.devnull, "w") as sink:
        bar = IndexProgress(file=sink)
        t0 = time.perf_counter()
        for _ in range(10_000):
            bar.planned(1)
            bar.encoded(1)
            bar.articles_read(1)
        per_call_us = (time.perf_counter() - t0) / 30_000 * 1e6
        bar.close()
    print(f"bar calls: {per_call_us:.1f} us each (planned / encoded / articles_read)", flush=True)

    work = Path(tempfile.mkdtemp(prefix="progress-bench-"))
    dump = work / "subset.jsonl"
    with open(args.corpus, encoding="utf-8") as src, open(dump, "w", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, args.docs))

    def run(tag: str, progress: bool) -> dict:
        db = str(work / f"db-{tag}")
        with open(work / f"bar-{tag}.txt", "w") as bar_file, contextlib.redirect_stderr(bar_file):
            t0 = time.perf_counter()
            summary = index_corpus([str(dump)], collection="bench", db_uri=db, progress=progress)
            seconds = time.perf_counter() - t0
        return {"tag": tag, "progress": progress, "paragraphs": summary["paragraphs_encoded"], "seconds": seconds,
                "per_s": summary["paragraphs_encoded"] / seconds}

    run("warmup", False)
    results = []
    for i in range(args.repeats):
        for progress in (False, True):
            r = run(f"{i}-{'bar' if progress else 'nobar'}", progress)
            results.append(r)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    off = statistics.median(r["per_s"] for r in results if not r["progress"])
    on = statistics.median(r["per_s"] for r in results if r["progress"])
    print(f"paragraphs {results[0]['paragraphs']}: {off:.1f}/s without the bar, {on:.1f}/s with it, "
          f"ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
