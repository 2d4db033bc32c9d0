"""Document-level evaluation: MaxP aggregation of paragraph hits, metrics from ``ir-measures``,
TREC run files, and paired significance tests from ``scipy.stats``.

No metric or test formula is written here: nDCG@10, RR@10, R@100 and AP come from ``ir-measures``
(which runs trec_eval through pytrec_eval), the same code BEIR and Anserini report with; the paired
t-test is ``scipy.stats.ttest_rel``. Only Holm's step-down adjustment (a sort and a running max) is ours.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from query.errors import CorpusSearchError

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


def evaluate_per_query(
    qrels: Mapping[str, Mapping[str, int]], ranked: Mapping[str, Sequence[str]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Like :func:`evaluate_run`, plus every judged query's own values: ``(means, {qid: {metric: value}})``.

    One ``ir_measures.calc`` pass gives both, so the means are exactly what ``evaluate_run`` reports
    and exactly the mean of the per-query values a significance test pairs up.
    """
    import ir_measures

    measures = {name: ir_measures.parse_measure(m) for name, m in MEASURES.items()}
    by_measure = {m: name for name, m in measures.items()}
    run = rank_run({q: ranked.get(q, []) for q in qrels})
    agg, rows = ir_measures.calc(list(measures.values()), {q: dict(d) for q, d in qrels.items()}, run)
    per: dict[str, dict[str, float]] = {q: dict.fromkeys(MEASURES, 0.0) for q in qrels}
    for row in rows:
        per[row.query_id][by_measure[row.measure]] = float(row.value)
    return {name: float(agg[m]) for name, m in measures.items()}, per


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


# --------------------------------------------------------------------------- TREC run files


class RunFileError(CorpusSearchError, ValueError):
    """An id that the whitespace-separated TREC run format cannot represent."""



def trec_run_lines(ranked: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> Iterator[str]:
    """``qid Q0 docid rank score tag`` lines of a ranking, ranks 1..n, in the order given.

    trec_eval (and ir-measures through pytrec_eval) ignore the rank column: they sort by score, in
    single precision (pytrec_eval), and break ties by doc id. So scores are written as float32, and
    one that does not fall below the previous one there (a tie, two scores closer than float32
    resolution, NaN) is moved down to the next float32 below it: the file then scores exactly our
    order (ties in retrieval order, as :func:`rank_run` does), and each score stays the real one to
    about 7 significant digits. A query with no documents has no lines (trec_eval -c and ir-measures
    count it as 0, as our metrics do).
    """
    for field, value in (("tag", tag), *(("query id", q) for q in ranked)):
        if not value or any(c.isspace() for c in value):
            raise RunFileError(f"{field} {value!r} is empty or contains whitespace: a TREC run file cannot hold it")
    for qid, docs in ranked.items():
        seen: set[str] = set()
        prev = np.float32(np.inf)
        rank = 0
        for doc, value in docs:
            if doc in seen:  # two hits that map to one document id: the first (best) one counts, as in rank_run
                continue
            if not doc or any(c.isspace() for c in doc):
                raise RunFileError(f"document id {doc!r} (query {qid}) is empty or contains whitespace: "
                                   "a TREC run file cannot hold it")
            seen.add(doc)
            with np.errstate(over="ignore"):
                score = np.float32(value)
            if not score < prev:  # a tie, NaN or +inf: keep our order under trec_eval's sort
                score = np.nextafter(prev, np.float32(-np.inf))
            prev = score
            rank += 1
            # str(): the shortest text that reads back as this float32 (read as a double, the order holds too).
            yield f"{qid} Q0 {doc} {rank} {str(score)} {tag}\n"  # (an f-string alone would format it as a double)


def write_trec_run(path: str | os.PathLike, ranked: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> Path:
    """Write ``ranked`` ({qid: [(doc id, score), best first]}) as a TREC run file; see :func:`trec_run_lines`.

    The file appears whole or not at all (written beside it, then renamed), so a reader never sees half a run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(trec_run_lines(ranked, tag))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- significance

#: The test every p-value here comes from; named in reports so a reader knows what was run.
TTEST = "paired t-test (scipy.stats.ttest_rel, two-sided)"
HOLM = "Holm (step-down Bonferroni)"


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of a paired t-test of per-query scores ``a`` vs ``b`` (same queries, same order).

    Never NaN: identical scores give 1.0; differences that are all the same non-zero value (no
    variance, t infinite) give 0.0; fewer than 2 pairs give None (no test is possible).
    """
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"{len(a)} scores paired with {len(b)}")
    if len(a) < 2:
        return None
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    # scipy returns NaN for 0/0 and warns about precision on near-constant differences: decide those here.
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        return 1.0 if abs(float(d.mean())) <= 1e-12 else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(a, b).pvalue)
    return p if math.isfinite(p) else 1.0


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None and is not counted).

    The k-th smallest of m p-values is multiplied by (m - k + 1), made monotone, capped at 1: a
    difference is significant at alpha when its adjusted p is below alpha, with the family-wise
    error rate held at alpha.
    """
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - k) * float(pvalues[i])))
        out[i] = running
    return out


def compare_to_best(
    per_query_by_mode: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] = tuple(MEASURES),
    *,
    by: str = "ndcg@10",
    alpha: float = 0.05,
) -> dict:
    """Paired t-tests of every mode against the best one (highest mean ``by``; ties: the first listed).

    ``per_query_by_mode`` is ``{mode: {qid: {metric: value}}}``, modes in report order, every mode
    over the same queries. For each metric, the p-values of the comparisons with the best mode are
    one family, Holm-adjusted. Returns a JSON-ready block: ``best``, ``vs_best`` ({mode: {metric:
    adjusted p}}), ``p_uncorrected``, ``significant`` (adjusted p < alpha), and ``reason`` (null,
    or why there are no p-values).
    """
    modes = list(per_query_by_mode)
    qids = list(next(iter(per_query_by_mode.values()), {}))

    def mean(mode: str, metric: str) -> float:
        vals = [per_query_by_mode[mode][q][metric] for q in qids]
        return float(np.mean(vals)) if vals else 0.0

    best = max(modes, key=lambda m: (mean(m, by), -modes.index(m))) if modes else None
    others = [m for m in modes if m != best]
    reason = None
    if not others:
        reason = "only one mode was evaluated: nothing to compare"
    elif len(qids) < 2:
        reason = f"{len(qids)} judged quer{'y' if len(qids) == 1 else 'ies'}: a paired test needs at least 2"
    raw: dict[str, dict[str, float | None]] = {m: {} for m in others}
    adjusted: dict[str, dict[str, float | None]] = {m: {} for m in others}
    for metric in metrics:
        best_scores = [per_query_by_mode[best][q][metric] for q in qids] if best else []
        ps = [paired_ttest([per_query_by_mode[m][q][metric] for q in qids], best_scores) for m in others]
        for m, p, adj in zip(others, ps, holm(ps), strict=True):
            raw[m][metric], adjusted[m][metric] = p, adj
    return {
        "best": best,
        "by": by,
        "test": TTEST,
        "correction": f"{HOLM} over the {len(others)} comparison{'s' if len(others) != 1 else ''} with the best mode, "
        "separately per metric",
        "alpha": alpha,
        "queries": len(qids),
        "vs_best": adjusted,
        "p_uncorrected": raw,
        "significant": {m: {k: p is not None and p < alpha for k, p in v.items()} for m, v in adjusted.items()},
        "reason": reason,
    }
