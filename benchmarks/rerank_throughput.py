"""Cross-encoder throughput table: ``Model-Name | docs/sec fp32 | docs/sec as shipped``.

docs/sec = (query, passage) pairs scored per second over ``--pairs`` pairs of realistic length
(SciFact test queries, each with ``--per-query`` random SciFact abstracts, ~330 tokens on average;
synthetic text when the data set is missing), on the current device (cuda if available, else CPU).

* fp32: ``CrossEncoder.predict`` with default settings in float32 (the classic table's setting).
* as shipped: ``query.rerank.Reranker`` with ``precision="auto"`` (fp16 on cuda, bf16 on CPUs with
  native bf16, else fp32), length-sorted token-capped batches.

    HF_HUB_OFFLINE=1 python benchmarks/rerank_throughput.py [--models A B ...] [--pairs 1000]

Default models: a MiniLM-L6-sized cross-encoder trained by ``corpus-search train-reranker`` (pass its directory) and a
local tiny BERT with the shape of cross-encoder/ms-marco-TinyBERT-L-2 (random weights: speed only).
Hub names (e.g. cross-encoder/ms-marco-MiniLM-L6-v2) work when cached or online; unavailable
models are listed with the reason instead of a number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from query.errors import ModelUnavailableError  # noqa: E402
from query.models import load_cross_encoder  # noqa: E402
from query.rerank import Reranker  # noqa: E402

#: Shared data sets live beside the repository (``../shared/data``), resolved from the repository root, not the cwd.
DEFAULT_DATA = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact")
CLASSIC_TABLE = [
    "cross-encoder/ms-marco-TinyBERT-L-2-v2",
    "cross-encoder/ms-marco-MiniLM-L2-v2",
    "cross-encoder/ms-marco-MiniLM-L4-v2",
    "cross-encoder/ms-marco-MiniLM-L6-v2",
    "cross-encoder/ms-marco-MiniLM-L12-v2",
    "cross-encoder/ms-marco-TinyBERT-L-2",
    "cross-encoder/ms-marco-TinyBERT-L-4",
    "cross-encoder/ms-marco-TinyBERT-L-6",
    "cross-encoder/ms-marco-electra-base",
    "nboost/pt-tinybert-msmarco",
    "nboost/pt-bert-base-uncased-msmarco",
    "nboost/pt-bert-large-msmarco",
    "Capreolus/electra-base-msmarco",
    "amberoad/bert-multilingual-passage-reranking-msmarco",
]


def realistic_pairs(n: int, data_dir: str, seed: int = 0, per_query: int = 30) -> list[tuple[str, str]]:
    """``n`` pairs as a search makes them: ``per_query`` passages for each query (a trained re-ranker's depth,
    30), so the as-shipped re-ranker scores a query's candidates in one call, as ``Searcher`` does. The
    passages are random SciFact abstracts (lengths as real candidates; their relevance does not change
    speed). One random query per pair made 2 passages a query, a workload no search has."""
    rng = random.Random(seed)
    try:
        from scifact_data import doc_text, load_scifact

        corpus, queries, qrels = load_scifact(data_dir)
        qtexts = [queries[q] for q in qrels["test"] if q in queries]
        docs = [doc_text(d) for d in corpus.values()]
    except (OSError, KeyError):
        words = "cell protein expression patients increased risk gene study effect treatment levels mice".split()
        qtexts = [" ".join(rng.choices(words, k=10)) for _ in range(50)]
        docs = [" ".join(rng.choices(words, k=rng.randint(120, 300))) for _ in range(500)]
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        q = rng.choice(qtexts)
        pairs += [(q, d) for d in rng.sample(docs, min(per_query, len(docs), n - len(pairs)))]
    return pairs


#: ``--models tinybert-l2``: the local random-weight model of that shape (built when missing).
TINY_ALIAS = "tinybert-l2"


def tiny_bert_dir() -> str:
    """A local random-weight cross-encoder shaped like ms-marco-TinyBERT-L-2 (speed only)."""
    from tests._models import build_cross_encoder

    path = Path(tempfile.gettempdir()) / "corpus_search_models" / "tinybert-l2-shape-random"
    if not (path / "config.json").exists():
        build_cross_encoder(path, 1, body="tinybert-l2")
    return str(path)


def docs_per_sec(fn, pairs, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(pairs)
        best = min(best, time.perf_counter() - t0)
    return len(pairs) / best


def measure(name: str, pairs: list[tuple[str, str]], device: str, batch_size: int, repeats: int) -> dict:
    import torch

    ce = load_cross_encoder(name, device=device)
    by_query: dict[str, list[str]] = {}
    for q, p in pairs:
        by_query.setdefault(q, []).append(p)
    reranker = Reranker(ce, batch_size=batch_size, precision="auto")
    identity = torch.nn.Identity()

    def fp32(ps):
        ce.predict(ps, activation_fn=identity, show_progress_bar=False)

    def shipped(ps):
        for q, passages in by_query.items():
            reranker.score(q, passages)

    fp32(pairs[:16])  # warm-up
    shipped(pairs[:16])
    return {
        "model": name,
        "fp32": docs_per_sec(fp32, pairs, repeats),
        "shipped": docs_per_sec(shipped, pairs, repeats),
        "shipped_precision": reranker.precision,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description="docs/sec of cross-encoders: fp32 vs as shipped")
    ap.add_argument("--models", nargs="+", default=None,
                    help="names or paths (default: 'tinybert-l2', a tiny local BERT; pass a trained cross-encoder's path to add it); "
                         "'classic' = the classic ms-marco table by hub name")
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--per-query", type=int, default=30, help="passages per query (a search's re-rank depth)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)

    models = args.models or [TINY_ALIAS]
    if models == ["classic"]:
        models = CLASSIC_TABLE
    where = {m: tiny_bert_dir() if m == TINY_ALIAS else m for m in models}
    pairs = realistic_pairs(args.pairs, args.data, per_query=args.per_query)
    print(f"device {args.device}, {len(pairs)} pairs ({args.per_query} passages a query), "
          f"torch threads {torch.get_num_threads()}")
    rows = []
    print(f"| {'Model-Name':<52} | {'docs/sec fp32':>13} | {'docs/sec as shipped':>19} | shipped/fp32 |")
    print(f"| {'-' * 52} | {'-' * 13}:| {'-' * 19}:| {'-' * 11}:|")
    for name in models:
        try:
            row = {**measure(where[name], pairs, args.device, args.batch_size, args.repeats), "model": name}
        except ModelUnavailableError as exc:
            print(f"| {name:<52} | {'n/a':>13} | {'n/a':>19} |  ({exc.reason[:90]})")
            rows.append({"model": name, "error": str(exc)})
            continue
        shipped = f"{row['shipped']:.0f} ({row['shipped_precision']})"
        print(f"| {name:<52} | {row['fp32']:>13.0f} | {shipped:>19} | {row['shipped'] / row['fp32']:>11.2f} |",
              flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
