"""Index throughput: the index-corpus flow end to end against raw ``model.encode`` on the same texts.

    python benchmarks/index_throughput.py --corpus ../shared/data/scifact/corpus.jsonl --docs 1000 --scale 4

Prints pipeline paragraphs/s, raw encode paragraphs/s (same texts, device, precision and batch size,
measured in the same process, before and after the pipeline), their ratio (target >= 0.90), and the
peak RSS of a fresh process indexing 1x and Nx documents (memory must not grow with corpus size).
The model is loaded before timing in both cases: loading happens once per process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deployments.prefect_env import prefect_environment  # noqa: E402

prefect_environment()


def write_subset(corpus: Path, docs: int, out: Path) -> Path:
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in itertools.islice(src, docs):
            dst.write(line)
    return out


def encoded_texts(dump: Path) -> list[str]:
    """Exactly the texts the pipeline encodes (same split rules and settings)."""
    from query.settings import get_settings
    from tasks.fetch import classify_source, iter_jsonl
    from tasks.stages import split_options
    from tasks.split import split_article, tokenizer_counter
    from query.models import bi_encoder_from_settings

    settings = get_settings()
    opts = split_options(settings)
    count = tokenizer_counter(bi_encoder_from_settings(settings).tokenizer)
    texts = []
    for article in iter_jsonl(classify_source(str(dump))):
        texts.extend(p.encoded for p in split_article(article, opts, count))
    return texts


def run_pipeline(dump: Path, db: str) -> dict:
    from flows.index_corpus import index_corpus

    t0 = time.perf_counter()
    summary = index_corpus([str(dump)], collection="bench", db_uri=db)
    summary["flow_wall"] = time.perf_counter() - t0
    return summary


def child(dump: str, db: str) -> None:
    """Index in a fresh process and report peak RSS (for the memory check)."""
    from query.models import bi_encoder_from_settings

    bi_encoder_from_settings()
    summary = run_pipeline(Path(dump), db)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"paragraphs": summary["paragraphs_encoded"], "seconds": summary["seconds"], "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="../shared/data/scifact/corpus.jsonl")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--scale", type=int, default=4, help="the memory check also indexes docs*scale documents")
    ap.add_argument("--child", nargs=2, metavar=("DUMP", "DB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    from prefect.testing.utilities import prefect_test_harness

    from query.models import bi_encoder_from_settings

    work = Path(tempfile.mkdtemp(prefix="index-bench-"))
    dump = write_subset(Path(args.corpus), args.docs, work / "subset.jsonl")
    enc = bi_encoder_from_settings()
    texts = encoded_texts(dump)
    print(f"corpus: {args.docs} docs → {len(texts)} paragraphs; model {enc.name} on {enc.device} ({enc.precision}), "
          f"batch {enc.batch_size}")

    def raw() -> float:
        t = time.perf_counter()
        enc.encode(texts)
        return len(texts) / (time.perf_counter() - t)

    raw_before = raw()
    with prefect_test_harness(server_startup_timeout=120):
        summary = run_pipeline(dump, str(work / "db"))
    raw_after = raw()
    raw_rate = (raw_before + raw_after) / 2
    # End to end is the flow call's wall time: the summary's "seconds" leave out the run's start and finish,
    # its run record and its report (about 4 % of a 56 s run).
    wall = summary["flow_wall"]
    pipe_rate = summary["paragraphs_encoded"] / wall
    inner_rate = summary["paragraphs_encoded"] / summary["seconds"]
    encode_only = summary["paragraphs_encoded"] / summary["encode_seconds"]
    print(f"raw model.encode:            {raw_rate:8.1f} paragraphs/s (before {raw_before:.1f}, after {raw_after:.1f})")
    print(f"pipeline encode stage:       {encode_only:8.1f} paragraphs/s")
    print(f"pipeline end to end:         {pipe_rate:8.1f} paragraphs/s, {args.docs / wall:.1f} docs/s "
          f"(flow call {wall:.1f} s: run start, fetch, split, encode, write, FTS index, compact, run record; "
          f"the summary's {summary['seconds']:.1f} s without the run's start and finish: {inner_rate:.1f}/s)")
    print(f"ratio end to end / raw:      {pipe_rate / raw_rate:8.3f}   (target >= 0.90)")

    sizes = [args.docs, args.docs * args.scale]
    for n in sizes:
        sub = write_subset(Path(args.corpus), n, work / f"subset-{n}.jsonl")
        out = subprocess.run([sys.executable, __file__, "--child", str(sub), str(work / f"db-{n}")],
                             capture_output=True, text=True, check=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"peak RSS indexing {n:>6} docs ({info['paragraphs']} paragraphs): {info['peak_rss_mb']:7.0f} MB "
              f"({info['paragraphs'] / info['seconds']:.1f} paragraphs/s)")


if __name__ == "__main__":
    main()
