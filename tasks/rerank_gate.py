"""The evaluation gate: does a trained re-ranker beat retrieval alone and the collection's current one?

All three are scored on the same held-out dev queries (never test queries), at document level (MaxP
over the re-ranked paragraphs, as ``corpus-search eval`` does), by nDCG@10 from ir-measures:

* retrieval alone (hybrid, the first-stage order);
* retrieval + the promoted re-ranker, with its saved fusion weight;
* retrieval + the candidate, with its fusion weight ``alpha`` chosen on dev.

Choosing ``alpha`` on the same queries that then judge it would flatter the candidate (``alpha = 0``
alone already ties retrieval). So the candidate's gate score is **cross-validated**: ``alpha`` is chosen
on one half of the dev queries and scored on the other, both ways round. The ``alpha`` saved with the
model is then chosen on all dev queries.

Both choices follow the **one-standard-error rule** (Breiman et al. 1984; Hastie et al., *Elements of
Statistical Learning* 7.10): the smallest weight whose dev nDCG@10 is within one standard error of the
best weight's, not the best weight itself. On a hundred dev queries the top of the weight curve is flat
within noise, and dev queries are never quite the queries the model will see (pseudo-queries least of
all), so the weight closest to the first stage among the statistically tied ones is the safer guess.
Measured on every re-ranker trained here (benchmarks/RESULTS.md, "Stop 23"), the rule's weight did at
least as well on test queries as the best-on-dev weight, for judged and self-supervised models alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from query.fusion import interpolate, rank_order
from query.searcher import Hit, Searcher, passage_text
from tasks.metrics import maxp, paired_p, per_query
from tasks.rerank_data import Example

#: Fusion weights tried on dev (1.0 = the re-ranker alone).
ALPHAS = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 11))


@dataclass
class DevSet:
    """Dev queries, their first-stage candidates and relevant documents."""

    qids: list[str]
    queries: list[str]
    relevant: dict[str, dict[str, int]]
    hits: list[list[Hit]]
    passages: list[list[str]]


def dev_set(searcher: Searcher, examples: Sequence[Example], depth: int) -> DevSet:
    """Retrieve ``depth`` hybrid candidates for each dev example (what the re-ranker will see at query time).

    A pseudo-query's own source paragraph (``Example.hide``) is left out: see ``pseudo_dev_queries``.
    """
    queries = [e.query for e in examples]
    # distinct=False, as eval: a judged dev query's relevant copy of a repeated document must stay a candidate.
    hits = searcher.search_many(queries, k=depth + 1, mode="hybrid", candidates=depth + 1, rerank=False, distinct=False)
    hits = [[h for h in hs if h.id != e.hide][:depth] for e, hs in zip(examples, hits, strict=True)]
    enc = searcher.meta.encode_title
    passages = [[passage_text(h.title, h.text, enc) for h in hs] for hs in hits]
    return DevSet([e.qid for e in examples], queries, {e.qid: e.relevant for e in examples}, hits, passages)


def evaluator_samples(dev: DevSet) -> list[dict]:
    """The dev candidates in the form of sentence-transformers' reranking evaluator, for choosing an epoch.

    ``documents`` are a query's candidates in first-stage order, ``positive`` those of relevant documents.
    A query none of whose candidates is relevant is left out: no re-ranking can change its score.
    """
    samples = []
    for qid, query, hits, passages in zip(dev.qids, dev.queries, dev.hits, dev.passages, strict=True):
        rel = dev.relevant[qid]
        positive = [p for h, p in zip(hits, passages, strict=True) if rel.get(h.doc_id, 0) > 0]
        if positive:
            samples.append({"query": query, "positive": positive, "documents": list(passages)})
    return samples


def rerank_scores(reranker, dev: DevSet) -> list[np.ndarray]:
    """The re-ranker's 0..1 score of every dev candidate."""
    return [reranker.score(q, ps, top_k=len(ps)) if ps else np.zeros(0) for q, ps in zip(dev.queries, dev.passages, strict=True)]


def per_query_ndcg10(dev: DevSet, scores: Sequence[np.ndarray] | None, alpha: float) -> dict[str, float]:
    """nDCG@10 of each dev query with fused scores (``scores=None``: retrieval alone)."""
    ranked = {}
    for i, hits in enumerate(dev.hits):
        retr = np.array([h.retrieval_score for h in hits])
        fused = retr if scores is None or alpha == 0.0 else interpolate(scores[i], retr, alpha)
        order = rank_order(fused)
        ranked[dev.qids[i]] = [d for d, _ in maxp([hits[j].doc_id for j in order], np.arange(len(order), 0, -1))]
    return per_query(dev.relevant, ranked)


def ndcg10(dev: DevSet, scores: Sequence[np.ndarray] | None, alpha: float) -> float:
    """Mean nDCG@10 over the dev queries (see :func:`per_query_ndcg10`)."""
    per = per_query_ndcg10(dev, scores, alpha)
    return float(np.mean(list(per.values()))) if per else 0.0


def _fold(qid: str) -> int:
    return hashlib.sha256(qid.encode("utf-8")).digest()[0] & 1


def best_alpha(per: dict[float, dict[str, float]], qids: Sequence[str]) -> float:
    """The weight with the highest mean per-query nDCG@10 over ``qids`` (the smaller on a tie)."""
    return max(ALPHAS, key=lambda al: (float(np.mean([per[al][q] for q in qids])), -al))


def one_se_alpha(per: dict[float, dict[str, float]], qids: Sequence[str]) -> float:
    """The fusion weight by the one-standard-error rule (see the module docstring).

    ``per``: each weight's per-query nDCG@10. The best weight is the one with the highest mean over ``qids``
    (the smaller on a tie); the rule returns the smallest non-zero weight whose paired shortfall against
    it (mean of the per-query differences) is at most the standard error of those differences. Weight 0
    (the re-ranker ignored) is only returned when it is the best: whether the re-ranker helps at all is
    the gate's question, not the weight's.
    """
    best = best_alpha(per, qids)
    if best == 0.0 or len(qids) < 2:
        return best
    for al in ALPHAS:
        if al == 0.0:
            continue
        diff = np.array([per[best][q] - per[al][q] for q in qids])
        if diff.mean() <= diff.std(ddof=1) / np.sqrt(len(qids)):
            return al
    return best  # unreachable: the best weight's own shortfall is 0


def choose_alpha(dev: DevSet, scores: Sequence[np.ndarray],
                 rule: Callable[[dict[float, dict[str, float]], Sequence[str]], float] = one_se_alpha) -> dict:
    """The fusion weight on all dev queries, and the 2-fold cross-validated nDCG@10 that the gate uses.

    ``p`` is the one-sided paired randomisation p-value of the cross-validated gain over retrieval alone.
    Every weight's per-query nDCG@10 is computed once; the folds only choose among those numbers.
    ``rule`` picks a weight from per-query numbers (``one_se_alpha``; ``best_alpha`` for comparison).
    """
    folds = [[q for q in dev.qids if _fold(q) == f] for f in (0, 1)]
    if not all(folds):  # too few dev queries to split: no honest cross-validation, score on all
        folds = [list(dev.qids)] * 2
    per = {al: per_query_ndcg10(dev, scores, al) for al in ALPHAS}

    def mean(al: float, qids: Sequence[str]) -> float:
        return float(np.mean([per[al][q] for q in qids]))

    cv: dict[str, float] = {}
    for a, b in ((0, 1), (1, 0)):
        cv.update({q: per[rule(per, folds[a])][q] for q in folds[b]})
    base = per[0.0]  # alpha 0 is the retrieval order
    by_alpha = {al: mean(al, dev.qids) for al in ALPHAS}
    alpha = rule(per, dev.qids)
    return {"ndcg@10": round(float(np.mean(list(cv.values()))), 4), "alpha": alpha, "alone": round(by_alpha[1.0], 4),
            "p": round(paired_p([cv[q] - base[q] for q in cv], one_sided=True), 4),
            "by_alpha": {str(k): round(v, 4) for k, v in by_alpha.items()}}


#: A candidate must beat retrieval alone by more than dev-set noise: this one-sided p-value or less.
MAX_P = 0.2
#: ... and by at least this much dev nDCG@10: the cross-encoder is most of a query's time (about 98 % on a
#: CPU), and a smaller gain does not pay for it. A small fusion weight moves few rankings, so a gain of a
#: few thousandths can be consistent enough to pass MAX_P (a self-supervised CACM model, benchmarks/RESULTS.md
#: "Stop 23": +0.002 on dev at p 0.02, -0.013 on test).
MIN_GAIN = 0.01
#: ... on dev queries that ask for at least this many documents: the p-value treats queries as independent,
#: and twenty queries cut out of one held-out document are one document's evidence, not twenty.
MIN_DEV_DOCUMENTS = 3


def dev_documents(dev: DevSet) -> int:
    """How many relevant documents the dev queries' candidates hold, all together: the documents the gate's
    comparison is about (a judged document missing from the collection, or never retrieved, is no evidence)."""
    return len({h.doc_id for qid, hits in zip(dev.qids, dev.hits, strict=True) for h in hits
                if dev.relevant[qid].get(h.doc_id, 0) > 0})


def decide(promote: str, retrieval: float, previous: float | None, candidate: float, p: float = 0.0,
           documents: int | None = None) -> tuple[bool, str]:
    """``auto`` promotes only a candidate that beats retrieval alone (by ``MIN_GAIN``, beyond noise: ``p <= MAX_P``,
    on dev queries about ``MIN_DEV_DOCUMENTS`` documents or more) and the current one."""
    if promote == "always":
        return True, "promoted (--promote always)"
    if promote == "never":
        return False, "not promoted (--promote never)"
    if documents is not None and documents < MIN_DEV_DOCUMENTS:
        return False, (f"not promoted: the dev queries ask for {documents} document(s), fewer than {MIN_DEV_DOCUMENTS}: "
                       "too little evidence to tell a better re-ranker from one that fits those documents (index more "
                       "documents, or judge more queries; --promote always promotes it anyway)")
    if candidate <= retrieval:
        return False, f"not promoted: dev nDCG@10 {candidate:.4f} does not beat retrieval alone ({retrieval:.4f})"
    if candidate - retrieval < MIN_GAIN:
        return False, (f"not promoted: dev nDCG@10 {candidate:.4f} beats retrieval alone ({retrieval:.4f}) by less than "
                       f"{MIN_GAIN}, too little to pay for re-ranking's cost")
    if p > MAX_P:
        return False, (f"not promoted: dev nDCG@10 {candidate:.4f} vs retrieval alone {retrieval:.4f} is within "
                       f"dev-set noise (paired randomisation p = {p:.2f} > {MAX_P})")
    if previous is not None and candidate <= previous:
        return False, f"not promoted: dev nDCG@10 {candidate:.4f} does not beat the current re-ranker ({previous:.4f})"
    return True, f"promoted: dev nDCG@10 {candidate:.4f} beats retrieval alone ({retrieval:.4f}, p = {p:.2f})" + (
        f" and the current re-ranker ({previous:.4f})" if previous is not None else "")
