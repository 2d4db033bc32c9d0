"""Searcher: retrieve about 100 candidates, re-rank them with a cross-encoder, return the best paragraphs.

Models load lazily on the first query and are cached per process. The re-ranker is the cross-encoder
configured explicitly, else the collection's promoted one (``query.registry``), else the default; when
none loads, a search answers with the retrieval ranking and one ``RerankSkippedWarning``.

(About 290 lines: the one class users import keeps its model choice, fallback and search loop together;
what a search returns and the input checks live in ``query.hits``.)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from query import retrieve
from query.errors import CollectionNotFoundError, InvalidQueryError, ModelUnavailableError
from query.filters import where_sql
from query.highlight import highlight, query_terms
from query.hits import (  # noqa: F401 - MAX_RESULTS, Hit, Hits and Timings are re-exported
    MAX_RESULTS,
    Hit,
    Hits,
    Timings,
    above_threshold,
    check_offset,
    check_query,
    check_score_threshold,
    distinct_passages,
    hits_from_table,
    passage_key,
    passage_text,
    whole_number,
)
from query.fusion import fused_scores, fusion_reach, rank_order
from query.models import BiEncoder, bi_encoder_from_settings, canonical_model_name, load_reranker, reranker_from_settings, reranker_options
from query.registry import promoted_model, registry_or_empty
from query.schema import (
    IndexContractError,
    SCHEMA_VERSION,
    IndexMetadata,
    check_schema_version,
    is_internal_table,
    count_documents,
    raw_metadata,
    validate_collection_name,
)
from query.settings import Settings, get_settings, settings_with
from query.storage import check_db_uri, connect, table_names
from query.versions import checkout

#: Hybrid reads of an unpinned table retried while a writer commits between their two halves (see
#: ``Searcher._retrieve_from_table``), before one pinned snapshot is opened for the query.
HYBRID_CONSISTENT_TRIES = 3


#: How many times a pool whose repeated passages leave fewer than ``candidates`` distinct ones may double (8x at most).
POOL_GROWTH = 3


class RerankSkippedWarning(UserWarning):
    """Re-ranking was asked for but no cross-encoder could be loaded: the hits are the retrieval ranking."""


def _rerank(query: str, hits: pa.Table, reranker: ActiveReranker, encode_title: bool, k: int,
            adaptive: bool, *, offset: int = 0, terms: frozenset[str] = frozenset()) -> tuple[list[Hit], int]:
    """Hits ``offset+1 .. offset+k`` of ``hits`` re-ranked, and how many candidates the cross-encoder scored."""
    alpha, retrieval = reranker.alpha, hits["retrieval_score"].to_numpy()
    # Everything up to the page's end must be ranked exactly (a page is a slice of one ranking).
    depth = offset + k
    # Adaptive depth: with fusion, a candidate too far below the first stage's depth-th best cannot reach
    # the top depth whatever its cross-encoder score (query.fusion.fusion_reach), so it is not scored.
    keep = np.flatnonzero(fusion_reach(retrieval, alpha, depth)) if adaptive else np.arange(hits.num_rows)
    if alpha == 0.0:
        # Weight 0 (a model promoted by hand although the gate found no weight that helps): the fused order
        # is retrieval's whatever the cross-encoder says, so it is neither loaded nor run.
        page = rank_order(scores := fused_scores(np.zeros(keep.size), retrieval, keep, 0.0))[offset:depth]
        return hits_from_table(hits, page, scores, first_rank=offset + 1, terms=terms), 0
    titles, texts = hits["title"].to_pylist(), hits["text"].to_pylist()
    passages = [passage_text(titles[i], texts[i], encode_title) for i in keep]
    # With fusion every candidate's exact score matters, not only the re-ranker's own top k.
    ce = reranker.model.score(query, passages, top_k=depth if alpha == 1.0 else len(passages))
    scores = fused_scores(ce, retrieval, keep, alpha)
    page = rank_order(scores)[offset:depth]
    return hits_from_table(hits, page, scores, first_rank=offset + 1, terms=terms), len(keep)


@dataclass(frozen=True)
class ActiveReranker:
    """The re-ranker a search uses: the model, what to call it, and its fusion weight (1.0: none)."""

    model: Any  # None at fusion weight 0: the ranking is retrieval's, and no model is loaded
    name: str
    alpha: float = 1.0
    depth: int | None = None  # candidates to re-rank when the caller does not say (None: settings.candidates)


class Searcher:
    """Query one collection: ``search``, ``search_many``; ``timings`` holds the last query's breakdown."""

    def __init__(
        self,
        db_uri: str | None = None,
        collection: str | None = None,
        bi_encoder: str | None = None,
        cross_encoder: str | None = None,
        settings: Settings | None = None,
        version: int | str | None = None,
    ) -> None:
        """Open ``collection``; ``version`` pins a version number or tag (e.g. ``"prod"``), else the latest.

        A pinned Searcher never sees later writes, so a bad reindex cannot reach it.
        """
        s = settings or get_settings()
        overrides = {k: v for k, v in {"db_uri": db_uri, "collection": collection, "bi_encoder": bi_encoder,
                                       "cross_encoder": cross_encoder}.items() if v is not None}
        self.settings = settings_with(overrides, s)
        self.collection = validate_collection_name(self.settings.collection)
        # A zero interval re-checks the table version on every query, so a query sees the latest
        # committed write of a concurrent index run (never a half-written one: versions are atomic).
        self._db = connect(check_db_uri(self.settings.db_uri, must_exist=True), self.settings,
                           read_consistency_interval=timedelta(0))
        names = set(table_names(self._db))
        if self.collection not in names:
            known = sorted(n for n in names if not is_internal_table(n))
            raise CollectionNotFoundError(
                f"collection {self.collection!r} does not exist in {self.settings.db_uri!r}"
                + (f" (collections there: {', '.join(known)})" if known else "")
                + f". Index one first: corpus-search index SOURCE... --collection {self.collection}"
                + (f" --db {self.settings.db_uri}" if self.settings.db_uri != get_settings().db_uri else "")
            )
        self.table = self._db.open_table(self.collection)
        # checkout() turns off the read-consistency re-check: the pinned version is what every query sees.
        self.pinned_version = None if version is None else checkout(self.table, version, collection=self.collection)
        self.meta = IndexMetadata.from_schema(self.table.schema, table=self.collection)
        if self.pinned_version is not None and self.meta.schema_version < SCHEMA_VERSION:
            # migrate upgrades the latest version only: "run migrate" would be advice that changes nothing.
            raise IndexContractError(
                f"version {version!r} of collection {self.collection!r} was written with index schema "
                f"v{self.meta.schema_version}, before the collection was upgraded; this corpus-search reads "
                f"v{SCHEMA_VERSION} only. Search the latest version or one tagged since, or make that version the "
                f"latest again: corpus-search rollback {self.collection} --to {version} (it is upgraded as it is "
                "restored)")
        check_schema_version(self.meta, collection=self.collection,
                             db_uri=self.settings.db_uri if self.settings.db_uri != get_settings().db_uri else None)
        self.fts_columns = retrieve.fts_columns(self.table)
        self._seen_meta = raw_metadata(self.table.schema)
        if canonical_model_name(self.settings.bi_encoder) != self.meta.encoder:
            raise IndexContractError(
                f"collection {self.collection!r} was indexed with bi-encoder {self.meta.encoder!r}, but the "
                f"configured bi-encoder is {canonical_model_name(self.settings.bi_encoder)!r}. Set "
                f"CORPUS_SEARCH_BI_ENCODER={self.meta.encoder!r} (or pass bi_encoder=...) to query it."
            )
        self.timings = Timings()

    @classmethod
    def from_settings(cls, collection: str | None = None, *, version: int | str | None = None,
                      **overrides: Any) -> Searcher:
        """A Searcher configured from the environment (``CORPUS_SEARCH_*``) plus ``overrides``.

        ``version`` pins a version number or tag, as in the constructor.
        """
        return cls(collection=collection, settings=settings_with(overrides), version=version)

    # ------------------------------------------------------------------ models (lazy, cached)

    @property
    def bi_encoder(self) -> BiEncoder:
        s = self.settings
        enc = bi_encoder_from_settings(s)
        if enc.dim != self.meta.dim:
            raise IndexContractError(
                f"collection {self.collection!r} holds {self.meta.dim}-dim vectors of {self.meta.encoder!r}, "
                f"but {s.bi_encoder!r} produces {enc.dim}-dim vectors"
            )
        return enc

    @property
    def reranker(self):
        """The loaded re-ranker model a search uses (see :meth:`active_reranker`); None at fusion weight 0."""
        return self.active_reranker().model

    def active_reranker(self) -> ActiveReranker:
        """The cross-encoder configured explicitly, else the collection's promoted one, else the default.

        Raises ``ModelUnavailableError`` when the chosen model cannot be loaded.
        """
        s = self.settings
        if "cross_encoder" not in s.model_fields_set:
            try:
                promoted = promoted_model(self.table, s.db_uri)
            except Exception:
                if self.collection not in table_names(self._db):  # dropped since this Searcher opened it
                    raise self._dropped() from None
                raise
            if promoted is not None:
                entry, path = promoted
                alpha = entry.alpha if s.rerank_fusion else 1.0
                model = load_reranker(str(path), **reranker_options(s), revision=entry.id) if alpha > 0.0 else None
                return ActiveReranker(model, f"{self.collection} re-ranker {entry.id}", alpha, entry.depth)
            if (missing := registry_or_empty(self.table).promoted) is not None:
                # Its files are gone (removed by hand, or a rollback restored a promotion of a removed model).
                # The default model instead would re-rank with one the gate never compared: not silently.
                rerankers = f"corpus-search rerankers --collection {self.collection}"
                raise ModelUnavailableError(
                    f"the promoted re-ranker {missing} of collection {self.collection!r} is missing from the database "
                    f"(its directory is gone): promote another one ({rerankers} --promote ID), unpromote it "
                    f"({rerankers} --unpromote), or train a new one")
        return ActiveReranker(reranker_from_settings(s), s.cross_encoder)

    def _reranker_or_fallback(self, rerank: bool | str) -> ActiveReranker | None:
        """``rerank=True`` falls back to retrieval (one warning) when no model loads; ``"require"`` raises."""
        return reranker_or_fallback(self.active_reranker, rerank, "results are the retrieval ranking",
                                    self._registry_hint, stacklevel=5)

    def _registry_hint(self) -> str:
        """What the collection's own re-rankers offer, for the fallback warning: the user's next step."""
        rerankers = f"corpus-search rerankers --collection {self.collection}"
        registry = registry_or_empty(self.table)
        if registry.promoted:
            return ""  # its model is missing, and the error says what to do
        if registry.models:
            # trained, but the gate (or the user) left them unpromoted: retraining is not the obvious fix
            return (f"This collection has {len(registry.models)} trained re-ranker(s), none promoted: "
                    f"`{rerankers}` shows how each did against retrieval on held-out queries, and "
                    f"`{rerankers} --promote ID` puts one to use anyway.")
        return (f"Train one for this collection: corpus-search train-reranker --collection {self.collection} "
                "--self-supervised")

    # ------------------------------------------------------------------ search

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Bi-encoder vectors of ``queries`` (loads the model on first use); over-long queries are an error."""
        enc = self.bi_encoder
        limit = enc.max_seq_length - 2
        lengths = enc.token_counts(queries)
        for q, n in zip(queries, lengths, strict=True):
            if n > limit:
                warnings.warn(f"query of {n} tokens is longer than the bi-encoder's limit of {limit}; "
                              "it is truncated for retrieval", stacklevel=4)
        return enc.encode(list(queries))

    def _follow_table(self) -> None:
        """An unpinned reader follows the table's writes; when the table it reads is another one (dropped and
        made again by another process, with other settings perhaps), its contract is read again, not assumed.

        Cheap (about 0.15 ms): the table's manifest is re-read on every query anyway.
        """
        if self.pinned_version is not None:
            return
        try:
            schema = self.table.schema
        except Exception:  # noqa: BLE001 - dropped: say so now, before the re-ranker's registry is read from it
            if self.collection not in table_names(self._db):
                raise self._dropped() from None
            return  # listed: made again meanwhile; the retrieval that follows opens it again
        if raw_metadata(schema) == self._seen_meta:
            return
        meta = IndexMetadata.from_schema(schema, table=self.collection)
        if meta != self.meta:
            if (meta.encoder, meta.dim) != (self.meta.encoder, self.meta.dim):
                raise IndexContractError(
                    f"collection {self.collection!r} was made again with bi-encoder {meta.encoder!r} ({meta.dim} "
                    f"dims) after this search was opened with {self.meta.encoder!r}: open a new Searcher")
            self.meta = meta  # e.g. encode_title: passages are re-ranked as they were indexed
            self.fts_columns = retrieve.fts_columns(self.table)
        self._seen_meta = raw_metadata(schema)

    def _dropped(self) -> CollectionNotFoundError:
        return CollectionNotFoundError(
            f"collection {self.collection!r} no longer exists in {self.settings.db_uri!r}: it was dropped after this "
            "search was opened. Index it again, or search another collection")

    def _retrieve(self, query: str, vector: np.ndarray | None, mode: str, n: int, where: str | None) -> pa.Table:
        for attempt in range(2):
            try:
                return self._retrieve_from_table(query, vector, mode, n, where)
            except Exception as exc:
                # Dropped by another process since this Searcher opened it (lance: "Not found: .../_versions").
                if self.collection not in table_names(self._db):
                    raise self._dropped() from None
                if "Not found" not in str(exc):
                    raise
                if self.pinned_version is not None:
                    # Its files are gone while the collection is listed: retention, or a drop and a new table.
                    raise CollectionNotFoundError(
                        f"version {self.pinned_version} of collection {self.collection!r} no longer exists: retention "
                        "cleanup removed it (CORPUS_SEARCH_VERSION_RETENTION_DAYS; a tagged version is kept), or the "
                        "collection was dropped and made again, after this search was opened. Open a new Searcher "
                        "(pin a version that exists, or none)"
                    ) from None
                if attempt:
                    raise CollectionNotFoundError(
                        f"collection {self.collection!r} is being dropped or made again in {self.settings.db_uri!r} "
                        "while this search runs: search again in a moment") from None
                # Listed, but its files went from under this handle: a drop, or a new table of the same name,
                # in progress. Open it again and retry once.
                try:
                    self.table = self._db.open_table(self.collection)
                except Exception:  # noqa: BLE001 - still half gone: the error below says so
                    continue
                self._follow_table()
        raise AssertionError("unreachable")

    def _pool(self, query: str, vector: np.ndarray | None, mode: str, n: int, where: str | None) -> pa.Table:
        """``n`` distinct candidates: the repeated passages dropped, and as many more retrieved in their place.

        The pool grows (doubling, ``POOL_GROWTH`` times at most) until ``n`` distinct passages are left or the
        retrieval runs dry, then keeps the first ``n``. It depends on ``n`` alone, never on the page asked
        for, so every page within ``candidates`` is a slice of one ranking (a bigger pool reorders hybrid
        and fused ranks).
        """
        size = n
        for _ in range(POOL_GROWTH + 1):
            raw = self._retrieve(query, vector, mode, size, where)
            cands = distinct_passages(raw)
            if cands.num_rows >= n or raw.num_rows < size:
                break
            size *= 2
        return cands.slice(0, n)

    def _retrieve_from_table(self, query: str, vector: np.ndarray | None, mode: str, n: int,
                             where: str | None) -> pa.Table:
        if mode == "dense":
            return retrieve.dense(self.table, vector, n, where, nprobes=self.settings.ann_nprobes)
        if mode == "lexical":
            return retrieve.lexical(self.table, query, n, where, columns=self.fts_columns)

        def fuse(table) -> pa.Table:
            return retrieve.hybrid(table, query, vector, n, where, rrf_k=self.settings.rrf_k, columns=self.fts_columns,
                                   nprobes=self.settings.ann_nprobes)

        if self.pinned_version is not None:
            return fuse(self.table)
        # Hybrid reads the table twice (dense, then lexical). A write committed between the two would fuse
        # two versions: a changed paragraph's old and new text as two hits, a deleted document back. Versions
        # only grow, so the same number before and after means both halves read that one version.
        for _ in range(HYBRID_CONSISTENT_TRIES):
            before = self.table.version
            hits = fuse(self.table)
            if self.table.version == before:
                return hits
        # Written to without pause: read a snapshot pinned to one version instead.
        snapshot = self._db.open_table(self.collection)
        snapshot.checkout(snapshot.version)
        return fuse(snapshot)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = "hybrid",
        candidates: int | None = None,
        rerank: bool | Literal["require"] = True,
        where: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
        offset: int = 0,
        distinct: bool = True,
    ) -> Hits:
        """Retrieve ``candidates`` paragraphs (dense, lexical or hybrid), re-rank them, return the top ``k``.

        ``rerank=True`` re-ranks when a cross-encoder loads and otherwise returns the retrieval ranking
        with one ``RerankSkippedWarning`` (each hit's ``reranked`` is False); ``rerank="require"`` raises
        ``ModelUnavailableError`` instead; ``rerank=False`` skips re-ranking.

        Paging: ``offset`` skips the first hits of the ranking, so ``offset=10, k=10`` is page 2, ranked 11..20,
        exactly hits 11..20 of ``k=20`` (at least ``offset + k`` candidates are retrieved).
        A candidate whose title and text repeat a better-ranked one's (one page under two URLs) is dropped
        (``query.hits.distinct_passages``), and more are retrieved in its place; ``distinct=False`` keeps
        them (an evaluation whose judgments name each copy).
        ``score_threshold`` drops hits whose ``score`` is below it: with re-ranking that is the 0..1 score of
        :class:`Hit` (a relevance only for an unfused cross-encoder), without it the retrieval score (cosine for
        dense, BM25 for lexical, RRF for hybrid). A page may then hold fewer than ``k`` hits. Pages past
        ``candidates`` retrieve a bigger pool, which can reorder ranks: to page deep, raise ``candidates``.

        Returns :class:`Hits`, a list of :class:`Hit` with ``to_arrow()`` and ``to_pandas()``.
        """
        return self.search_many([query], k, mode=mode, candidates=candidates, rerank=rerank, where=where,
                                score_threshold=score_threshold, offset=offset, distinct=distinct)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: str = "hybrid",
        candidates: int | None = None,
        rerank: bool | Literal["require"] = True,
        where: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
        offset: int = 0,
        distinct: bool = True,
    ) -> list[Hits]:
        """``search`` for several queries (one :class:`Hits` each); their embeddings are computed in one batch.

        Every returned ``Hits`` shares one ``timings``: the batch's totals (its encode is one call for all the
        queries), not each query's own.
        """
        if isinstance(queries, str):
            raise InvalidQueryError("search_many takes a list of queries; use search() for one query")
        check_rerank(rerank)
        if mode not in retrieve.MODES:
            raise InvalidQueryError(f"mode {mode!r} is not one of {', '.join(retrieve.MODES)}")
        k = whole_number("k", k, "the number of hits, e.g. 10")
        offset = check_offset(offset, k)
        score_threshold = check_score_threshold(score_threshold)
        if candidates is not None:
            candidates = whole_number("candidates", candidates,
                                   f"paragraphs retrieved before re-ranking, e.g. {self.settings.candidates}")
        if not queries:
            return []
        cleaned = [check_query(q, self.settings.max_query_chars) for q in queries]
        filt = where_sql(where)
        self._follow_table()
        t0 = time.perf_counter()
        timings = Timings(stages=[f"retrieve:{mode}"])
        reranker = self._reranker_or_fallback(rerank)  # load (and fail, or fall back) before any work
        # A collection's trained re-ranker was gated (and its fusion weight chosen) at its own depth.
        default_n = reranker.depth if reranker is not None and reranker.depth else self.settings.candidates
        # A page must come from the same pool as the first page: never fewer candidates than its last rank.
        n = max(candidates or default_n, offset + k)
        timings.candidates = n
        if mode != "lexical":
            self.bi_encoder  # noqa: B018 - loaded here, so that the first query's encode time is the encoding alone
        t_loaded = time.perf_counter()
        timings.load = t_loaded - t0
        vectors = self.encode_queries(cleaned) if mode != "lexical" else [None] * len(cleaned)
        timings.encode = time.perf_counter() - t_loaded
        results = []
        for q, vec in zip(cleaned, vectors, strict=True):
            t1 = time.perf_counter()
            cands = self._pool(q, vec, mode, n, filt) if distinct else self._retrieve(q, vec, mode, n, filt)
            t2 = time.perf_counter()
            timings.retrieve += t2 - t1
            terms = query_terms(q)
            if reranker is not None and cands.num_rows:
                hits, scored = _rerank(q, cands, reranker, self.meta.encode_title, k, self.settings.rerank_adaptive_depth,
                                       offset=offset, terms=terms)
                timings.reranked += scored
            else:
                page = np.arange(min(offset, cands.num_rows), min(offset + k, cands.num_rows))
                hits = hits_from_table(cands, page, None, first_rank=offset + 1, terms=terms)
            results.append(Hits(above_threshold(hits, score_threshold), query=q, mode=mode, timings=timings))
            timings.rerank += time.perf_counter() - t2
        if reranker is not None:
            timings.reranker = reranker.name
            timings.stages.append(f"rerank:{reranker.name}" + (f" (fusion {reranker.alpha})" if reranker.alpha != 1.0 else ""))
        timings.total = time.perf_counter() - t0
        self.timings = timings
        return results

    def count(self) -> int:
        """Paragraph rows of the collection (at the pinned version, if any)."""
        return self.table.count_rows()

    def documents(self) -> int:
        """Documents with paragraphs in the collection, as ``corpus-search collections`` counts them (latest)."""
        return count_documents(self._db, self.table, self.collection)


def rank_passages(
    query: str,
    passages: Sequence[str] | Sequence[Mapping[str, Any]],
    k: int = 5,
    *,
    cross_encoder: str | None = None,
    settings: Settings | None = None,
    score_threshold: float | None = None,
    offset: int = 0,
    rerank: bool | str = True,
) -> Hits:
    """Score every passage with the cross-encoder (no retrieval: for one document or a short list).

    ``passages`` are strings, or mappings with ``text`` and optional ``title``, ``id``, ``doc_id``, ``source``;
    a passage whose title and text repeat an earlier one's (whitespace aside) is ranked once, as the first.
    ``offset`` and ``score_threshold`` page and filter as in :meth:`Searcher.search` (scores are 0..1).
    ``rerank`` as in :meth:`Searcher.search`: when no cross-encoder loads (or with ``False``), the passages
    are ranked by the bi-encoder's cosine similarity instead, marked ``reranked: false`` (with one
    ``RerankSkippedWarning`` unless ``False``); ``"require"`` raises ``ModelUnavailableError`` instead.
    ``hits.timings.reranker`` names the cross-encoder that scored them (``None``: the bi-encoder did).
    """
    s = settings or get_settings()
    query = check_query(query, s.max_query_chars)
    k = whole_number("k", k, "the number of hits, e.g. 5")
    offset = check_offset(offset, k)
    score_threshold = check_score_threshold(score_threshold)
    check_rerank(rerank)
    rows = passage_rows(passages)
    # A paragraph repeated in the document (a pull quote, a boilerplate line) is one answer, scored once, as a
    # search returns it once (hits.distinct_passages): the first copy stands for it.
    # Each kept row remembers its place in ``passages``: its default id and position.
    firsts: dict[tuple[str, str], int] = {}
    for i, r in enumerate(rows):
        firsts.setdefault(passage_key(str(r.get("title") or ""), r["text"]), i)
    places = sorted(firsts.values())
    rows = [rows[i] for i in places]
    if not rows:
        return Hits(query=query, mode="document", timings=Timings(stages=["document"]))
    reranker = reranker_or_fallback(lambda: reranker_from_settings(s, cross_encoder), rerank,
                                    "the paragraphs are ranked by the bi-encoder's cosine similarity")
    timings = Timings(stages=["document"], reranker=(cross_encoder or s.cross_encoder) if reranker is not None else None)
    texts = [passage_text(r.get("title"), r["text"], bool(r.get("title"))) for r in rows]
    if reranker is not None:
        scores = reranker.score(query, texts, top_k=offset + k)
        timings.reranked = len(rows)
    else:
        enc = bi_encoder_from_settings(s)
        scores = enc.encode(texts) @ enc.encode([query])[0]  # both L2-normalised: the cosine, as dense search scores
    terms = query_terms(query)
    out = []
    for rank, i in enumerate(rank_order(scores)[offset:offset + k], start=offset + 1):
        r, place = rows[int(i)], places[int(i)]
        out.append(Hit(rank, float(scores[i]), 0.0 if reranker is not None else float(scores[i]),
                       str(r.get("id", place)), str(r.get("doc_id", "")), r.get("title") or "", r["text"],
                       str(r.get("source", "")), int(r.get("position", place)), reranked=reranker is not None,
                       highlights=highlight(r["text"], terms)))
    return Hits(above_threshold(out, score_threshold), query=query, mode="document", timings=timings)


def passage_rows(passages: object) -> list[dict]:
    """``rank_passages``' passages as rows with a ``text``; anything else is an InvalidQueryError saying why.

    One string is refused rather than ranked as its characters.
    """
    if isinstance(passages, str | bytes) or not isinstance(passages, Iterable) or isinstance(passages, Mapping):
        raise InvalidQueryError(f"passages must be a list of texts or of mappings with 'text', got "
                                f"{type(passages).__name__}" + (": wrap one text in a list, [text]"
                                                                 if isinstance(passages, str | Mapping) else ""))
    rows = []
    for n, p in enumerate(passages, start=1):
        row = {"text": p} if isinstance(p, str) else dict(p) if isinstance(p, Mapping) else None
        if row is None or not isinstance(row.get("text"), str):
            raise InvalidQueryError(f"passage {n} must be a text or a mapping with a 'text' string, got {p!r:.80}")
        if not row["text"].strip():
            raise InvalidQueryError(f"passage {n} is empty: give only passages with text")
        rows.append(row)
    return rows


def check_rerank(rerank: object) -> None:
    """``rerank`` is True (fall back to the first-stage ranking when no model loads), False or "require"."""
    if not (rerank is True or rerank is False or rerank == "require"):
        raise InvalidQueryError(f"rerank must be True, False or 'require', got {rerank!r}")


def reranker_or_fallback(load: Callable[[], Any], rerank: bool | str, instead: str,
                         hint: Callable[[], str] | None = None, stacklevel: int = 3) -> Any:
    """The model ``load()`` returns, or None: the one fallback rule of every search that re-ranks.

    ``rerank=False``: None, nothing loaded. A model that does not load (``ModelUnavailableError``): raised
    for ``"require"``, else one ``RerankSkippedWarning`` saying what ranks ``instead``, and ``hint()``, the
    user's next step. ``stacklevel`` points the warning at the caller's caller.
    """
    if rerank is False:
        return None
    try:
        return load()
    except ModelUnavailableError as exc:
        if rerank == "require":
            raise
        next_step = f" {extra}" if hint is not None and (extra := hint()) else ""
        warnings.warn(f"re-ranking did not run, {instead} (reranked: false): {exc}{next_step}",
                      RerankSkippedWarning, stacklevel=stacklevel)
        return None
