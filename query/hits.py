"""What a search returns (``Hit``, ``Timings``) and the checks and text rules shared by every search path."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, SupportsIndex, overload

import numpy as np
import pyarrow as pa

from query.errors import InvalidQueryError
from query.schema import METADATA_TYPE
from query.highlight import highlight

#: Control characters are not text: the tokenizers and the full-text parser see a space instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Hit:
    """One ranked paragraph.

    ``score`` is in 0..1 when the hit was re-ranked (``reranked``): the cross-encoder's relevance, or, for a
    collection re-ranker trained with a fusion weight, that weight's mix of the cross-encoder and the
    first-stage score (see :func:`query.fusion.interpolate`), both min-max scaled over the query's candidates:
    relative to them, not an absolute relevance. Otherwise it is ``retrieval_score``.
    ``highlights`` are the ``(start, end)`` character spans of ``text`` that match a query term the way the
    lexical index matches (:mod:`query.highlight`): ``text[start:end]`` is the word as written.
    """

    rank: int
    score: float
    retrieval_score: float
    id: str
    doc_id: str
    title: str
    text: str
    source: str
    position: int = 0
    reranked: bool = False
    origin: str = ""  # the root the article was indexed through (a directory, a dump, a site)
    published: datetime | None = None
    metadata: dict[str, str] | None = None  # the article's own fields (author, keywords, a record's extras)
    highlights: tuple[tuple[int, int], ...] = ()  # character spans of the query's terms in ``text``

    #: The keys of one hit in ``corpus-search search --json``, in the order printed (``position`` is internal).
    JSON_KEYS = ("rank", "score", "retrieval_score", "id", "doc_id", "title", "text", "source", "highlights",
                 "origin", "published", "metadata")

    def to_dict(self) -> dict:
        """The hit as ``search --json`` prints it: :attr:`JSON_KEYS`, in that order (highlights as
        [start, end] lists, ``published`` as ISO 8601)."""
        out = {k: getattr(self, k) for k in self.JSON_KEYS}
        out["highlights"] = [[s, e] for s, e in self.highlights]
        if self.published is not None:
            out["published"] = self.published.isoformat()
        return out


@dataclass
class Timings:
    """Seconds spent per stage by the last query."""

    load: float = 0.0  # loading the models (the first search of a process; 0 once they are loaded)
    encode: float = 0.0
    retrieve: float = 0.0
    rerank: float = 0.0
    total: float = 0.0
    stages: list[str] = field(default_factory=list)
    reranker: str | None = None  # the re-ranker that ran (None: the hits are the retrieval ranking)
    reranked: int = 0  # candidates the cross-encoder scored (adaptive depth may skip some)
    candidates: int = 0  # candidates retrieved per query (a promoted re-ranker's depth, and never below offset + k)


#: Arrow types of Hit's field annotations; a field of a type not listed here fails ``Hits.schema()`` loudly.
_ARROW_TYPES: dict[Any, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
    dict[str, str]: METADATA_TYPE,  # the rows' own metadata column
    tuple[tuple[int, int], ...]: pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32())])),
}


def _arrow_field(name: str, hint: Any) -> pa.Field:
    args = typing.get_args(hint)
    nullable = type(None) in args
    if nullable:  # X | None
        (hint,) = [a for a in args if a is not type(None)]
    if hint not in _ARROW_TYPES:
        raise TypeError(f"Hit.{name} has type {hint!r}, which has no Arrow type: add it to query.hits._ARROW_TYPES")
    return pa.field(name, _ARROW_TYPES[hint], nullable=nullable)


class Hits(list[Hit]):
    """The hits of one search: a list of :class:`Hit` (index, slice, ``len``, iterate, compare with a list)
    that also converts to a table, one row per hit and one column per Hit field.

    ``query``, ``mode`` and ``timings`` describe the search that produced them (``None`` when unknown).
    A slice is a ``Hits`` too, so ``hits[:3].to_pandas()`` works.
    """

    def __init__(self, hits: Iterable[Hit] = (), *, query: str | None = None, mode: str | None = None,
                 timings: Timings | None = None) -> None:
        super().__init__(hits)
        self.query = query
        self.mode = mode
        self.timings = timings

    @overload
    def __getitem__(self, index: SupportsIndex) -> Hit: ...

    @overload
    def __getitem__(self, index: slice) -> Hits: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Hits(super().__getitem__(index), query=self.query, mode=self.mode, timings=self.timings)
        return super().__getitem__(index)

    @staticmethod
    def schema() -> pa.Schema:
        """The table's schema: every field of :class:`Hit`, in order (so fields added later appear by themselves).

        ``published`` is ``timestamp[us, UTC]``, ``metadata`` ``map<string, string>``, ``highlights``
        ``list<struct<start: int32, end: int32>>``.
        """
        hints = typing.get_type_hints(Hit)
        return pa.schema([_arrow_field(f.name, hints[f.name]) for f in dataclasses.fields(Hit)])

    def to_arrow(self) -> pa.Table:
        """The hits as a ``pyarrow.Table`` (no hits: an empty table with the same schema)."""
        schema = self.schema()
        columns = {}
        for f in schema:
            values = [getattr(h, f.name) for h in self]
            if f.name == "highlights":
                values = [[{"start": s, "end": e} for s, e in v] for v in values]
            columns[f.name] = pa.array(values, type=f.type)
        return pa.Table.from_pydict(columns, schema=schema)

    def to_pandas(self):
        """The hits as a ``pandas.DataFrame`` (``metadata`` as dicts, ``published`` as UTC datetimes).

        Needs pandas, an optional extra: ``pip install 'corpus-search[pandas]'``.
        """
        try:
            import pandas  # noqa: F401 - only to fail with the install hint
        except ImportError:
            raise ImportError("Hits.to_pandas() needs pandas, which is not installed: "
                              "pip install 'corpus-search[pandas]' (or use Hits.to_arrow())") from None
        return self.to_arrow().to_pandas(maps_as_pydicts="strict")


def check_query(query: str, max_chars: int) -> str:
    """Refuse empty or non-text queries; cut over-long ones (with a warning) so the models never see garbage."""
    if not isinstance(query, str):
        raise InvalidQueryError(f"query must be text (str), got {type(query).__name__}: e.g. 'How do glaciers form?'")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. undecodable bytes in a command-line argument
        raise InvalidQueryError(
            f"query is not valid Unicode text (character {exc.object[exc.start]!r} at position {exc.start}): "
            "pass UTF-8 text, e.g. 'How do glaciers form?'"
        ) from None
    query = " ".join(_CONTROL.sub(" ", query).split())
    if not query:
        raise InvalidQueryError("query is empty: give a question or keywords, e.g. 'What is the capital of France?'")
    if len(query) > max_chars:
        warnings.warn(f"query of {len(query)} characters truncated to {max_chars}", stacklevel=3)
        query = query[:max_chars]
    return query


#: Upper bound of ``k`` and ``candidates``: LanceDB's limit overflows past 2**32, and no reader wants more.
MAX_RESULTS = 1_000_000


def whole_number(name: str, value: object, what: str) -> int:
    """``value`` if it is a whole number in 1..MAX_RESULTS, else an error naming the parameter and a sensible value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_RESULTS:
        raise InvalidQueryError(f"{name} must be a whole number from 1 to {MAX_RESULTS:,} ({what}), got {value!r}")
    return int(value)


def check_offset(offset: object, k: int) -> int:
    """``offset`` if it is a whole number of hits to skip with ``offset + k`` within MAX_RESULTS, else an error."""
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or not 0 <= offset <= MAX_RESULTS - k:
        raise InvalidQueryError(f"offset must be a whole number from 0 to {MAX_RESULTS - k:,} (the hits to skip: "
                                f"page 2 of k={k} is offset={k}), got {offset!r}")
    return int(offset)


def check_score_threshold(threshold: object) -> float | None:
    """``threshold`` as a float (or None), else an error saying what the scores are."""
    if threshold is None:
        return None
    if (isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating))
            or not math.isfinite(threshold)):
        raise InvalidQueryError(
            f"score_threshold must be a finite number or None, got {threshold!r}: hits whose score is below it "
            "are dropped (re-ranked scores are relevances in 0..1, e.g. 0.5; without re-ranking the score is the "
            "retrieval score)")
    return float(threshold)


def above_threshold(hits: list[Hit], threshold: float | None) -> list[Hit]:
    """The hits whose ``score`` is at least ``threshold`` (all of them when it is None)."""
    return hits if threshold is None else [h for h in hits if h.score >= threshold]


def passage_key(title: str | None, text: str | None) -> tuple[str, str]:
    """What makes two passages the same answer: their title and text, whitespace aside."""
    return " ".join((title or "").split()), " ".join((text or "").split())


def distinct_passages(table: pa.Table) -> pa.Table:
    """The candidates without those whose title and text repeat a better-ranked one's (whitespace aside).

    One page indexed under two URLs, or one file copied into two folders, is two documents with the same
    paragraphs: both would fill the hits (and the re-ranker's work) with the same passage twice. The title is
    part of the key, because a hit is read with it: the same short paragraph in two different articles ("No
    abstract available.") is two answers. ``table`` is in ranking order, so the first copy is the best.
    """
    if table.num_rows < 2:
        return table
    seen: set[tuple[str, str]] = set()
    keep = []
    for i, (title, text) in enumerate(zip(table["title"].to_pylist(), table["text"].to_pylist(), strict=True)):
        key = passage_key(title, text)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table if len(keep) == table.num_rows else table.take(keep)


def passage_text(title: str | None, text: str, encode_title: bool) -> str:
    """What the cross-encoder reads: the same text the bi-encoder encoded."""
    return f"{title} {text}" if encode_title and title else text


#: Hit fields a search computes; every other field is copied from the candidate table's column of that name.
_COMPUTED = frozenset({"rank", "score", "reranked", "highlights"})


def hits_from_table(table: pa.Table, order: np.ndarray, scores: np.ndarray | None, *, first_rank: int = 1,
                    terms: frozenset[str] = frozenset()) -> list[Hit]:
    """Rows of ``table`` in ``order`` as hits ranked from ``first_rank``; ``scores`` (re-ranked) or their
    retrieval scores; ``highlights`` of the query ``terms`` (:func:`query.highlight.query_terms`).

    Columns the table lacks (an older schema) leave their Hit field at its default.
    """
    order = np.asarray(order, dtype=np.int64)
    rows = table.take(pa.array(order, type=pa.int64()))
    copied = [f for f in dataclasses.fields(Hit) if f.name not in _COMPUTED and f.name in rows.column_names]
    cols = {f.name: rows[f.name].to_pylist() for f in copied}
    for name, values in cols.items():  # a map column reads back as (key, value) pairs
        if pa.types.is_map(rows.schema.field(name).type):
            cols[name] = [dict(v) if v is not None else None for v in values]
    out = []
    for j, i in enumerate(order):
        values = {f.name: cols[f.name][j] for f in copied}
        for f in copied:  # a null text column (e.g. no title) is "", as the field's type says
            if values[f.name] is None and f.type in (str, "str"):
                values[f.name] = ""
        r = float(values["retrieval_score"])
        text = values.get("text", "")
        out.append(Hit(rank=first_rank + j, score=float(scores[i]) if scores is not None else r,
                       reranked=scores is not None, highlights=highlight(text, terms), **values))
    return out
