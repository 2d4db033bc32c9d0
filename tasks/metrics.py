"""Document-level evaluation: MaxP aggregation of paragraph hits, and metrics from ``ir-measures``.

No metric formula is written here: nDCG@10, RR@10, R@100 and AP come from ``ir-measures`` (which
runs trec_eval through pytrec_eval), the same code BEIR and Anserini report with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Metric name in our JSON → ir-measures measure string.
MEASURES: dict[str, str] = {
    "ndcg@10": "nDCG@10",
    "mrr@10": "RR@10",
    "recall@100": "R@100",
    "map": "AP",
}

#: A doc id no qrels can contain: gives a query with no hits a (zero-scoring) run entry.
NO_HIT = "\x00no-hit"


def maxp(doc_ids: Sequence[str], scores: Sequence[float] | np.ndarray, depth: int | None = None) -> list[tuple[str, float]]:
    """Paragraph hits → ranked documents, each scored by its best paragraph (MaxP).

    Ties between documents keep the order in which their best paragraphs first appear in the input
    (the retrieval order), so the result is deterministic. Returns at most ``depth`` (doc id, score).
    """
    if len(doc_ids) != len(scores):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(scores)} scores")
    best: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, (doc, score) in enumerate(zip(doc_ids, np.asarray(scores, dtype=np.float64).tolist(), strict=True)):
        if doc not in best:
            best[doc], first[doc] = score, i
        elif score > best[doc]:
            best[doc] = score
    ranked = sorted(best, key=lambda d: (-best[d], first[d]))
    if depth is not None:
        ranked = ranked[:depth]
    return [(d, best[d]) for d in ranked]


def rank_run(ranked: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """{qid: [doc ids, best first]} → an ir-measures run whose scores encode exactly that order.

    trec_eval re-sorts by score and breaks ties by doc id; rank-derived scores (n, n-1, ...) make
    the evaluated order our order. A query with no hits gets one dummy entry so it counts as 0.
    """
    run: dict[str, dict[str, float]] = {}
    for qid, docs in ranked.items():
        docs = list(dict.fromkeys(docs))
        run[qid] = {d: float(len(docs) - i) for i, d in enumerate(docs)} or {NO_HIT: 0.0}
    return run


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], ranked: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10, Recall@100 and MAP over every judged query (missing runs count 0)."""
    import ir_measures

    measures = {name: ir_measures.parse_measure(m) for name, m in MEASURES.items()}
    run = rank_run({q: ranked.get(q, []) for q in qrels})
    agg = ir_measures.calc_aggregate(list(measures.values()), {q: dict(d) for q, d in qrels.items()}, run)
    return {name: float(agg[m]) for name, m in measures.items()}


def per_query(qrels: Mapping[str, Mapping[str, int]], ranked: Mapping[str, Sequence[str]],
              measure: str = "nDCG@10") -> dict[str, float]:
    """``measure`` (an ir-measures name) of every judged query; a query missing from ``ranked`` scores 0."""
    import ir_measures

    out = dict.fromkeys(qrels, 0.0)
    run = rank_run({q: ranked.get(q, []) for q in qrels})
    for m in ir_measures.iter_calc([ir_measures.parse_measure(measure)], {q: dict(d) for q, d in qrels.items()}, run):
        out[m.query_id] = float(m.value)
    return out


def paired_p(gains: Sequence[float], *, one_sided: bool, rounds: int = 10_000, seed: int = 0) -> float:
    """Paired randomisation test of per-query ``gains`` (sign flips): how often chance does as well.

    ``one_sided``: chance gives a mean gain at least as large; else at least as large in absolute value.
    """
    d = np.asarray(gains, dtype=np.float64)
    if d.size == 0 or not d.any():
        return 1.0
    means = (np.random.default_rng(seed).choice([-1.0, 1.0], size=(rounds, d.size)) * d).mean(axis=1)
    hits = means >= d.mean() - 1e-12 if one_sided else np.abs(means) >= abs(d.mean()) - 1e-12
    return float((hits.sum() + 1) / (rounds + 1))
