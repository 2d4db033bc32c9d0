"""Candidate retrieval from a LanceDB paragraph table: dense cosine, native BM25, or hybrid RRF.

Each function returns an Arrow table of result columns plus ``retrieval_score`` (higher is better),
best first. Filters are SQL built by ``query.filters`` and applied before the top-k (prefilter).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from query.fusion import rrf
from query.schema import RESULT_COLUMNS
from query.settings import MODES, Mode  # noqa: F401 - re-exported for callers of retrieve.MODES


def _with_score(table: pa.Table, scores: np.ndarray) -> pa.Table:
    return table.select(RESULT_COLUMNS).append_column("retrieval_score", pa.array(scores, pa.float64()))


def dense(table, query_vector: np.ndarray, k: int, where: str | None = None, *, nprobes: int = 100) -> pa.Table:
    """Top-``k`` rows by cosine similarity to ``query_vector`` (exact below the ANN threshold)."""
    q = table.search(np.asarray(query_vector, dtype=np.float32), vector_column_name="vector").distance_type("cosine")
    # With an IVF index (past ann_min_rows), 100 probes keep Recall@100 >= 0.95 (benchmarks/ann_recall.py).
    q = q.nprobes(nprobes)
    if where:
        q = q.where(where, prefilter=True)
    res = q.select([*RESULT_COLUMNS, "_distance"]).limit(k).to_arrow()
    scores = 1.0 - np.asarray(res["_distance"].to_numpy(zero_copy_only=False), dtype=np.float64)
    order = np.lexsort((np.asarray(res["id"].to_pylist(), dtype=object).astype(str), -scores))
    return _with_score(res.take(order), scores[order])


def fts_columns(table) -> tuple[str, ...]:
    """The columns of ``table`` that have a full-text index (``text`` first)."""
    indexed = {c for idx in table.list_indices() if str(idx.index_type).upper().startswith("FTS") for c in idx.columns}
    return tuple(c for c in ("text", "title") if c in indexed) or ("text",)


def lexical(table, query: str, k: int, where: str | None = None, *, columns: tuple[str, ...] = ("text",)) -> pa.Table:
    """Top-``k`` rows by LanceDB native full-text BM25 over ``columns`` (summed per column).

    Query text is matched, never parsed as syntax.
    """
    from lancedb.query import MatchQuery, MultiMatchQuery

    fts = MatchQuery(query, columns[0]) if len(columns) == 1 else MultiMatchQuery(query, list(columns))
    q = table.search(fts, query_type="fts")
    if where:
        q = q.where(where, prefilter=True)
    res = q.select([*RESULT_COLUMNS, "_score"]).limit(k).to_arrow()
    if res.num_rows == 0:
        return _with_score(res, np.zeros(0))
    scores = np.asarray(res["_score"].to_numpy(zero_copy_only=False), dtype=np.float64)
    order = np.lexsort((np.asarray(res["id"].to_pylist(), dtype=object).astype(str), -scores))
    return _with_score(res.take(order), scores[order])


def hybrid(
    table, query: str, query_vector: np.ndarray, k: int, where: str | None = None, *, rrf_k: int = 60,
    columns: tuple[str, ...] = ("text",), nprobes: int = 100,
) -> pa.Table:
    """Reciprocal rank fusion of the dense and lexical top-``k`` lists (our own, tested ``rrf``)."""
    d = dense(table, query_vector, k, where, nprobes=nprobes)
    lx = lexical(table, query, k, where, columns=columns)
    ids, scores = rrf([d["id"].to_pylist(), lx["id"].to_pylist()], k=rrf_k, limit=k)
    rows = pa.concat_tables([d.select(RESULT_COLUMNS), lx.select(RESULT_COLUMNS)])
    first = {}
    for i, doc in enumerate(rows["id"].to_pylist()):
        first.setdefault(doc, i)
    # Typed indices: an empty Python list becomes a null-typed array, which Arrow cannot take with.
    take = pa.array([first[i] for i in ids], type=pa.int64())
    return _with_score(rows.take(take), np.asarray(scores, dtype=np.float64))
