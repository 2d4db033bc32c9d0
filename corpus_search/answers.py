"""The one home of what a search answers: the ``--json`` object and the text lines of ``search`` and
``search-document``. The CLI, the query service (``corpus-search api``) and ``search --api`` all use it,
so the three cannot drift.

Light on purpose: nothing here imports torch, LanceDB or Prefect at module level (``search --api`` uses it).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    """One search's answer: ``payload`` is exactly what ``--json`` prints; ``stages`` heads the text output."""

    payload: dict
    stages: str
    warnings: list[str] = field(default_factory=list)


def answer_payload(query: str, mode: str, reranked: bool, hits: Sequence[Any]) -> dict:
    """The ``--json`` object: ``{"query", "mode", "reranked", "hits": [Hit.to_dict(), ...]}``."""
    return {"query": query, "mode": mode, "reranked": reranked, "hits": [h.to_dict() for h in hits]}


def search_answer(
    searcher: Any,
    query: str,
    *,
    k: int = 5,
    mode: str = "hybrid",
    candidates: int | None = None,
    rerank: bool | str = True,
    where: Mapping[str, Any] | None = None,
    score_threshold: float | None = None,
    offset: int = 0,
) -> Answer:
    """Run ``searcher.search`` and describe it: the answer of ``corpus-search search`` and ``POST /search``."""
    hits = searcher.search(query, k=k, mode=mode, candidates=candidates, rerank=rerank, where=where,
                           score_threshold=score_threshold, offset=offset)
    t = hits.timings  # this search's own: searcher.timings is the last search of any thread (the service's)
    stages = f"retrieve ({mode}, {t.candidates} candidates{', filtered' if where else ''})"
    if t.reranker:
        stages += f" → re-rank ({t.reranker})"
    elif rerank is False:
        stages += " → re-rank skipped (--no-rerank): scores are retrieval scores"
    else:
        stages += " → re-rank did not run (no cross-encoder loads; see the warning): scores are retrieval scores"
    stages += _page(k, offset, score_threshold)
    load = f"load models {t.load*1000:.0f} ms, " if t.load >= 0.0005 else ""
    stages += (f"  [{load}encode {t.encode*1000:.0f} ms, retrieve {t.retrieve*1000:.0f} ms, "
               f"re-rank {t.rerank*1000:.0f} ms]")
    return Answer(answer_payload(query, mode, t.reranker is not None, hits), stages)


def _page(k: int, offset: int, score_threshold: float | None) -> str:
    """The stages line's note of a page past the first or a score threshold ("" when neither)."""
    notes = ([f"hits {offset + 1}..{offset + k}"] if offset else []) + (
        [f"score >= {score_threshold:g}"] if score_threshold is not None else [])
    return f" → {', '.join(notes)}" if notes else ""


def document_answer(source: str, query: str, *, k: int = 5, settings: Any, score_threshold: float | None = None,
                    offset: int = 0, rerank: bool | str = True) -> Answer:
    """Fetch and split one URL or file, rank its paragraphs with the cross-encoder alone (``search-document``).

    When no cross-encoder loads (and ``rerank`` is not ``"require"``), or with ``rerank=False``, the bi-encoder
    ranks them: see :func:`query.rank_passages`.
    """
    from query.errors import InvalidQueryError
    from query.hits import check_offset, check_query, check_score_threshold, whole_number
    from query.models import reranker_from_settings
    from query.searcher import rank_passages, reranker_or_fallback
    from tasks.document import document_passages, fetch_document

    # The question and the page asked for first: a URL's fetch can take up to its timeout before a bad k showed.
    query = check_query(query, settings.max_query_chars)  # cut (with its warning) once; rank_passages keeps it
    k = whole_number("k", k, "the number of hits, e.g. 5")
    check_offset(offset, k)
    check_score_threshold(score_threshold)
    if not isinstance(source, str) or not source.strip():
        raise InvalidQueryError("source is empty: give a URL (https://...) or a file path")
    article = fetch_document(source, settings)
    # Decided once: the model that ranks the paragraphs is also the one they are split to fit.
    model = reranker_or_fallback(lambda: reranker_from_settings(settings), rerank,
                                 "the paragraphs are ranked by the bi-encoder's cosine similarity")
    passages = document_passages(article, settings, model)
    hits = rank_passages(query, passages, k=k, settings=settings, score_threshold=score_threshold, offset=offset,
                         rerank=rerank if model is not None else False)  # already warned: no second warning
    reranker = hits.timings.reranker
    stages = f"fetch + split ({len(passages)} paragraphs) → "
    if reranker:
        stages += f"cross-encoder only ({reranker}), no retrieval"
    else:
        why = "--no-rerank" if rerank is False else "no cross-encoder loads; see the warning"
        stages += f"bi-encoder cosine ({settings.bi_encoder}; {why}), no retrieval: scores are cosine similarities"
    stages += _page(k, offset, score_threshold)
    return Answer(answer_payload(query, "document", reranker is not None, hits), stages)


#: ANSI bold on and off: how a terminal shows the highlighted words.
BOLD, PLAIN = "\x1b[1m", "\x1b[22m"


def emphasise(wrapped: str, text: str, highlights: Sequence[Sequence[int]]) -> str:
    """``wrapped`` (``text`` re-flowed by textwrap) with each highlight of ``text`` in bold.

    Wrapping changes only whitespace, and a highlight is one word without any, so the n-th non-space
    character of ``text`` is the n-th non-space character of ``wrapped``.
    """
    if not highlights:
        return wrapped
    before = [0]  # before[i]: the non-space characters of text[:i]
    for c in text:
        before.append(before[-1] + (not c.isspace()))
    starts = {before[int(s)] for s, _ in highlights}
    ends = {before[int(e)] for _, e in highlights}
    out, n = [], 0
    for c in wrapped:
        if c.isspace():
            out.append(c)
            continue
        if n in starts:
            out.append(BOLD)
        out.append(c)
        n += 1
        if n in ends:
            out.append(PLAIN)
    return "".join(out)


def answer_text(answer: Answer, as_json: bool, emphasis: bool = False) -> str:
    """What the CLI prints for ``answer`` (without the final newline): one JSON line, or the readable list.

    ``emphasis``: the query's matched words in bold (ANSI), for a terminal only, never for pipes or JSON.
    """
    p = answer.payload
    if as_json:
        return json.dumps(p, ensure_ascii=False)
    lines = [f"stages: {answer.stages}"]
    for h in p["hits"]:
        head = f"{h['rank']:>2}. [{h['score']:.3f}] {h['title'] or h['doc_id']}"
        lines.append(head + (f"  (retrieval {h['retrieval_score']:.4f})" if p["reranked"] else ""))
        body = textwrap.fill(h["text"], 100)
        if emphasis:
            body = emphasise(body, h["text"], h.get("highlights") or ())
        lines.append(textwrap.indent(body, "    "))
        lines.append(f"    {h['source']} {h['doc_id']}")
    if not p["hits"]:
        lines.append(f"no hits: {_why_no_hits(answer.stages)}")
    return "\n".join(lines)


def _why_no_hits(stages: str) -> str:
    """What most likely left an answer empty, read from its stages line (which a service's answer carries too)."""
    if "(0 paragraphs)" in stages:
        return "the document has no text to rank"
    reasons = []
    paged, threshold = "→ hits " in stages, "score >=" in stages
    if paged and threshold:  # either one can empty the page: the stages line cannot tell which
        reasons.append("every hit on the page asked for scored below the score threshold, or the page starts past "
                       "the last hit")
    elif threshold:
        reasons.append("every hit scored below the score threshold")
    elif paged:
        reasons.append("the page asked for starts past the last hit")
    if ", filtered)" in stages:
        reasons.append("the filters (--where) matched no paragraph: their values are compared exactly as stored")
    if not reasons:
        reasons.append("no paragraph contains the query's words (lexical retrieval matches words; try --mode "
                       "hybrid)" if "retrieve (lexical" in stages else "the collection has no paragraphs")
    return "; ".join(reasons)
