"""What a search returns (``Hit``, ``Timings``) and the checks and text rules shared by every search path."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from query.errors import InvalidQueryError

#: Control characters are not text: the tokenizers and the full-text parser see a space instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Hit:
    """One ranked paragraph.

    ``score`` is in 0..1 when the hit was re-ranked (``reranked``): the cross-encoder's relevance, or, for a
    collection re-ranker trained with a fusion weight, that weight's mix of the cross-encoder and the
    first-stage score (see :func:`query.fusion.interpolate`). Otherwise it is ``retrieval_score``.
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

    #: The keys of one hit in ``corpus-search search --json``, in the order printed (``position`` is internal).
    JSON_KEYS = ("rank", "score", "retrieval_score", "id", "doc_id", "title", "text", "source",
                 "origin", "published", "metadata")

    def to_dict(self) -> dict:
        """The hit as ``search --json`` prints it: :attr:`JSON_KEYS`, in that order (``published`` as ISO 8601)."""
        out = {k: getattr(self, k) for k in self.JSON_KEYS}
        if self.published is not None:
            out["published"] = self.published.isoformat()
        return out


@dataclass
class Timings:
    """Seconds spent per stage by the last query."""

    encode: float = 0.0
    retrieve: float = 0.0
    rerank: float = 0.0
    total: float = 0.0
    stages: list[str] = field(default_factory=list)
    reranker: str | None = None  # the re-ranker that ran (None: the hits are the retrieval ranking)
    reranked: int = 0  # candidates the cross-encoder scored (adaptive depth may skip some)


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


def passage_text(title: str | None, text: str, encode_title: bool) -> str:
    """What the cross-encoder reads: the same text the bi-encoder encoded."""
    return f"{title} {text}" if encode_title and title else text


def hits_from_table(table: pa.Table, order: np.ndarray, scores: np.ndarray | None) -> list[Hit]:
    """Rows of ``table`` in ``order`` as hits; ``scores`` (re-ranked) or their retrieval scores."""
    names = ("id", "doc_id", "title", "text", "source", "position", "retrieval_score", "origin", "published", "metadata")
    # Passages of one document (rank_passages) have no origin, date or metadata columns.
    cols = {c: table[c].to_pylist() if c in table.column_names else [None] * table.num_rows for c in names}
    out = []
    for rank, i in enumerate(order, start=1):
        i = int(i)
        r = float(cols["retrieval_score"][i])
        meta = cols["metadata"][i]
        out.append(
            Hit(rank, float(scores[i]) if scores is not None else r, r, cols["id"][i], cols["doc_id"][i],
                cols["title"][i] or "", cols["text"][i], cols["source"][i], int(cols["position"][i]),
                scores is not None, cols["origin"][i] or "", cols["published"][i],
                dict(meta) if meta is not None else None)
        )
    return out
