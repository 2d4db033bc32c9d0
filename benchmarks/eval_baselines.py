"""Plain-tools floor for the ``corpus-search eval`` numbers: bm25s, exact cosine, and their RRF.

No LanceDB, no Prefect: the same data loaders (``tasks.datasets``) and the same metric code
(``tasks.metrics`` → ir-measures), so any gap to ``corpus-search eval`` is the product's, not the
scoring's.

- BM25: ``bm25s`` (Lucene BM25, k1 0.9, b 0.4 as Anserini's BEIR runs), English stop words,
  Porter stemming (PyStemmer), documents ``title + " " + text`` (``--bm25-fields text`` drops titles).
- Dense: ``all-MiniLM-L6-v2`` on ``title + " " + text`` truncated by the model (256 tokens),
  exact cosine over all documents (the BEIR / MTEB protocol).
- Hybrid: our own ``query.fusion.rrf`` (k 60) of the two top-100 lists.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/eval_baselines.py ../shared/data/scifact [--split test]
    HF_HUB_OFFLINE=1 python benchmarks/eval_baselines.py ../shared/data/cacm \
        --corpus-html ../shared/data/cacm/raw/cacm.tar.gz --no-dense --depth 1000

Needs ``pip install -e .[bench]`` (bm25s, PyStemmer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from tasks.datasets import load_beir_corpus, load_dataset  # noqa: E402
from tasks.metrics import evaluate_run  # noqa: E402


def html_corpus(archive: str) -> dict[str, tuple[str, str]]:
    """The HTML documents as plain text (all of it, as Anserini's HtmlCollection indexes it)."""
    from bs4 import BeautifulSoup

    from flows.evaluate import extract_archive, html_folder, html_ids

    root = extract_archive(archive)
    doc_id = html_ids(html_folder(root))  # the ids eval scores: an archive's one folder is no part of them
    out = {}
    for p in sorted(root.rglob("*.htm*")):
        text = BeautifulSoup(p.read_text(encoding="utf-8", errors="replace"), "html.parser").get_text(" ")
        out[doc_id(p.relative_to(root).as_posix())] = ("", " ".join(text.split()))
    return out


def bm25_rankings(corpus, queries, depth: int, *, k1: float, b: float, stemmer: str, fields: str) -> dict[str, list[str]]:
    import bm25s
    import Stemmer

    ids = list(corpus)
    texts = [f"{t} {x}" if fields == "title+text" and t else x for t, x in (corpus[i] for i in ids)]
    stem = Stemmer.Stemmer(stemmer) if stemmer != "none" else None
    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)
    qids = list(queries)
    qtok = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stem, show_progress=False)
    docs, scores = model.retrieve(qtok, k=min(depth, len(ids)), show_progress=False, n_threads=1)
    return {q: [ids[int(j)] for j, s in zip(docs[i], scores[i], strict=True) if s > 0] for i, q in enumerate(qids)}


def lancedb_vectors(spec: str) -> tuple[list[str], np.ndarray]:
    """``DB_URI::COLLECTION`` of a ``split_unit=document`` index → (doc ids, vectors): one row per document."""
    import lancedb

    db_uri, collection = spec.split("::", 1)
    t = lancedb.connect(db_uri).open_table(collection).to_lance().to_table(columns=["doc_id", "vector"])
    ids = t["doc_id"].to_pylist()
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{spec}: several rows per document; index it with --unit document")
    return ids, np.asarray(t["vector"].combine_chunks().flatten(), dtype=np.float32).reshape(len(ids), -1)


def dense_rankings(corpus, queries, depth: int, model_name: str, cache: Path | None,
                   from_index: str | None = None) -> dict[str, list[str]]:
    from query.models import load_bi_encoder

    enc = load_bi_encoder(model_name, device="cpu", precision="fp32", batch_size=64)
    ids = list(corpus)
    texts = [f"{t} {x}" if t else x for t, x in (corpus[i] for i in ids)]
    if from_index:
        ids, matrix = lancedb_vectors(from_index)
        if not set(ids) & set(corpus):  # an index of HTML files keys A-1.html (or pages/A-1.html): the corpus A-1
            from tasks.datasets import judged_id

            known = set(corpus)
            ids = [judged_id(d, known) for d in ids]
    elif cache is not None and cache.is_file():
        matrix = np.load(cache)
    else:
        matrix = enc.encode(texts)  # normalised; truncated at the model's max_seq_length
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, matrix)
    qids = list(queries)
    qv = enc.encode([queries[q] for q in qids])
    sims = qv @ matrix.T
    out = {}
    for i, q in enumerate(qids):
        top = np.lexsort((np.arange(sims.shape[1]), -sims[i]))[:depth]
        out[q] = [ids[int(j)] for j in top]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset")
    p.add_argument("--split", default="test")
    p.add_argument("--corpus-html", default=None)
    p.add_argument("--queries", default=None)
    p.add_argument("--qrels", default=None)
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    p.add_argument("--stemmer", default="porter", help="PyStemmer algorithm (porter, english) or none")
    p.add_argument("--bm25-fields", choices=["title+text", "text"], default="title+text")
    p.add_argument("--no-dense", action="store_true")
    p.add_argument("--bi-encoder", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--cache", default=None, help="npy file caching the corpus embeddings")
    p.add_argument("--vectors-from", default=None, metavar="DB_URI::COLLECTION",
                   help="take document vectors from a --unit document index instead of encoding the corpus "
                   "(exact cosine over them; saves the corpus encoding on a slow machine)")
    args = p.parse_args(argv)

    from query.fusion import rrf

    data = load_dataset(args.dataset, split=args.split, queries=args.queries, qrels=args.qrels)
    corpus = html_corpus(args.corpus_html) if args.corpus_html else load_beir_corpus(data.corpus)
    report = {"dataset": data.name, "queries": len(data.queries), "documents": len(corpus), "modes": {}}
    t = time.perf_counter()
    lex = bm25_rankings(corpus, data.queries, args.depth, k1=args.k1, b=args.b, stemmer=args.stemmer, fields=args.bm25_fields)
    report["modes"][f"bm25s(k1={args.k1},b={args.b},{args.stemmer},{args.bm25_fields})"] = evaluate_run(data.qrels, lex)
    report["bm25_s"] = round(time.perf_counter() - t, 1)
    if not args.no_dense:
        t = time.perf_counter()
        dense = dense_rankings(corpus, data.queries, args.depth, args.bi_encoder,
                               Path(args.cache) if args.cache else None, args.vectors_from)
        report["dense_s"] = round(time.perf_counter() - t, 1)
        report["modes"]["exact-cosine" + (" (index vectors)" if args.vectors_from else "")] = evaluate_run(data.qrels, dense)
        fused = {q: rrf([dense[q], lex[q]], k=60, limit=args.depth)[0] for q in data.queries}
        report["modes"]["rrf(cosine,bm25s)"] = evaluate_run(data.qrels, fused)
    for mode, m in report["modes"].items():
        print(f"{mode:<48} ndcg@10 {m['ndcg@10']:.4f}  mrr@10 {m['mrr@10']:.4f}  "
              f"recall@100 {m['recall@100']:.4f}  map {m['map']:.4f}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
