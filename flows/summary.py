"""The index run's summary: counted by the flow, printed by the CLI, published as Prefect artifacts.

It also says how a run ended, once, for everyone who reports it: the CLI's exit code, the Prefect
state, and the JSON. A cron job reads the exit code; see ``EXIT_CODES``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from query.errors import CorpusSearchError
from tasks.records import printable

Outcome = Literal["ok", "partial", "failed", "stopped"]

#: A run stopped part-way by an error of what it runs on (an object store gone away, a Dask scheduler that
#: died, a commit conflict): what it wrote stays, and a rerun resumes.
EXIT_STOPPED = 5
#: Exit codes of ``corpus-search index`` (documented in its --help and the README).
EXIT_CODES: dict[Outcome, int] = {"ok": 0, "partial": 3, "failed": 4, "stopped": EXIT_STOPPED}
EXIT_HELP = (
    "exit codes: 0 every source was indexed; 3 some sources or articles failed and the rest were written; "
    "4 nothing could be indexed (the Prefect run ends Failed); 5 the run stopped part-way on an error of its "
    "database (a full disk), object store or cluster (what it wrote stays; rerun); 2 bad arguments or user errors."
)


#: The keys of ``corpus-search index --json``, in order. Scripts depend on them.
JSON_KEYS = (
    "collection",
    "articles_fetched",
    "articles_unchanged",
    "articles_failed",
    "articles_deleted",
    "paragraphs_added",
    "paragraphs_moved",
    "paragraphs_deleted",
    "paragraphs_encoded",
    "paragraphs_reused",
    "rows",
    "seconds",
)


#: What each kind of notice says after its count (``{examples}``: a few of the articles).
NOTICES = {
    "undated": "give a publication date that could not be read, e.g. {examples}: they are indexed without "
               "`published` (the text is kept in their metadata), so a --where published filter never matches "
               "them. Dates are read as ISO 8601 (2024-03-05), RFC 2822, an epoch time or a written date with its year",
    "empty": "have no text to index, e.g. {examples}: an empty file, or a page whose text its scripts draw "
             "(corpus-search runs none) or that is shorter than CORPUS_SEARCH_MIN_PARAGRAPH_CHARS after its "
             "boilerplate is removed. They are remembered, and indexed once they have text",
    "error_page": "look like a server's error or sign-in page, not an article, e.g. {examples}: they are indexed as "
                  "they are (new pages; an indexed page that turns into one keeps its rows). Check that they are "
                  "public, or index the pages they stand for",
    "gone": "were removed while the run read their folder, e.g. {examples}: nothing was indexed from them, and "
            "rows indexed from them before stay until a run no longer finds them",
    "not_utf8": "of a dump held bytes that are not UTF-8, e.g. {examples}: they are indexed with U+FFFD (�) in "
                "their place. Convert the dump to UTF-8 (e.g. iconv -f cp1252 -t utf-8) and index it again",
}


@dataclass
class IndexSummary:
    collection: str
    articles_fetched: int = 0
    articles_unchanged: int = 0
    articles_failed: int = 0
    articles_deleted: int = 0
    #: New paragraphs written: each one ``encoded``, or ``reused`` (its vector copied from a row of the
    #: collection with the same encoded text: a renamed or moved file, a paragraph repeated elsewhere).
    paragraphs_added: int = 0
    paragraphs_moved: int = 0
    paragraphs_deleted: int = 0
    paragraphs_encoded: int = 0
    paragraphs_reused: int = 0
    rows: int | None = 0  # None: a stopped run that could not count them
    seconds: float = 0.0
    encode_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (doc_id, error)
    # Indexed, but something in them was not understood (e.g. a publication date): said, never a failure.
    notices: list[str] = field(default_factory=list)
    # Articles counted for a notice, by kind (see NOTICES): how many, and a few of them as examples.
    tallies: dict[str, tuple[int, list[str]]] = field(default_factory=dict, repr=False)
    #: The run was stopped part-way by an error of the database or the machine (its counts are what it did so far).
    stopped: bool = field(default=False, repr=False)
    #: Indexed pages answering 404, with when each first did (``tasks.not_found``): deleted after the grace.
    not_found: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_result(cls, result: dict) -> IndexSummary:
        """The summary back from :meth:`result` (what the flow returns), e.g. to print it as text."""
        fields = {k: result[k] for k in JSON_KEYS if k in result}  # a run recorded before a key was added lacks it
        return cls(**fields, encode_seconds=result["encode_seconds"],
                   failures=[(f["doc_id"], f["error"]) for f in result["failures"]],
                   notices=list(result.get("notices", [])))

    @property
    def encode_rate(self) -> float:
        """Paragraphs encoded per second of encoding."""
        return self.paragraphs_encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0

    @property
    def outcome(self) -> Outcome:
        """ok: nothing failed; partial: something failed and the rest was written; failed: nothing indexed;
        stopped: an error of the database or the machine ended the run part-way."""
        if self.stopped:
            return "stopped"
        if not self.failures and not self.articles_failed:
            return "ok"
        if self.articles_fetched + self.articles_unchanged == 0:
            return "failed"
        return "partial"

    def fail(self, doc_id: str, error: str, *, article: bool = True) -> None:
        """Record one failure; ``article=False`` for a run-level refusal that is not an article's."""
        if article:
            self.articles_failed += 1
        self.failures.append((printable(doc_id), printable(error)))

    def to_json(self) -> dict:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return {k: data[k] for k in JSON_KEYS}

    def result(self) -> dict:
        """What the flow returns and ``--json`` prints: the documented keys, the failures and the outcome."""
        out = self.to_json()
        out["failures"] = [{"doc_id": d, "error": e} for d, e in self.failures]
        out["outcome"] = self.outcome
        out["encode_seconds"] = round(self.encode_seconds, 3)
        out["notices"] = list(self.notices)
        out["not_found"] = dict(self.not_found)
        return out

    def tally(self, kind: str, examples: list[str]) -> None:
        """Count articles for the notice ``kind`` (a key of :data:`NOTICES`); the first few are its examples."""
        if examples:
            count, shown = self.tallies.get(kind, (0, []))
            self.tallies[kind] = (count + len(examples), shown + [printable(e)[:160] for e in examples[:3 - len(shown)]])

    def close_notices(self) -> None:
        """At the end of a run: one notice per kind of article counted. Never a failure: these were indexed
        (or kept), but nothing else would tell the user what was not understood."""
        for kind, (count, shown) in self.tallies.items():
            self.notices.append(f"{count} article(s) {NOTICES[kind].format(examples='; '.join(shown))}")

    def to_text(self) -> str:
        return (
            f"collection {self.collection}: {'an unknown number of' if self.rows is None else self.rows} rows\n"
            f"articles:   {self.articles_fetched} fetched / {self.articles_unchanged} unchanged / "
            f"{self.articles_failed} failed / {self.articles_deleted} deleted\n"
            f"paragraphs: {self.paragraphs_added} added / {self.paragraphs_moved} moved / "
            f"{self.paragraphs_deleted} deleted / {self.paragraphs_encoded} re-encoded"
            + (f" / {self.paragraphs_reused} vectors reused" if self.paragraphs_reused else "") + "\n"
            f"time:       {self.seconds:.1f} s wall, {self.encode_rate:.1f} paragraphs/s encoding"
            + "".join(f"\nfailed: {doc}: {err}" for doc, err in self.failures[:20])
            + (f"\n... and {len(self.failures) - 20} more failures" if len(self.failures) > 20 else "")
            + "".join(f"\nnote: {n}" for n in self.notices)
        )

    def artifact_rows(self) -> list[dict]:
        rows = [{"metric": "outcome", "value": self.outcome}]
        rows += [{"metric": k, "value": v} for k, v in self.to_json().items()]
        rows.append({"metric": "paragraphs_per_second_encoding", "value": round(self.encode_rate, 1)})
        return rows

    def failures_markdown(self) -> str:
        if not self.failures:
            return f"# {self.collection}: no failed sources\n"
        lines = [f"# {self.collection}: {len(self.failures)} failed sources", "", "| source | error |", "|---|---|"]
        for doc, err in self.failures:
            # One line per row: a newline in a file name or an error ended the table (the rest became headings).
            lines.append(f"| {_cell(doc).replace('|', '%7C')} | {_cell(err).replace('|', '/')} |")
        return "\n".join(lines) + "\n"


class NothingIndexedError(CorpusSearchError):
    """Every source of an index run failed: the flow run ends Failed; ``summary`` is the run's result."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


#: A flow-run logger that does not propagate to the console (see :func:`api_only`).
_API_ONLY = "prefect.flow_runs.api_only"


def api_only(run_logger: logging.LoggerAdapter) -> logging.LoggerAdapter:
    """``run_logger`` re-pointed at the Prefect API handlers only: the run's logs in the UI, not the console.

    The index summary is printed by whoever called the flow (the CLI prints it; Python callers get it
    returned), so logging it to the console as well showed it twice. Prefect's ``prefect.flow_runs``
    logger sends to the API and propagates to the root logger's console handler; this child keeps the
    API handlers (whatever the logging configuration made them) and does not propagate.
    """
    parent = logging.getLogger("prefect.flow_runs")
    quiet = logging.getLogger(_API_ONLY)
    quiet.propagate = False
    quiet.handlers = list(parent.handlers)
    return type(run_logger)(quiet, run_logger.extra)


def _cell(text: str) -> str:
    """``text`` on one line, for a markdown table cell."""
    return " ".join(text.split())


def artifact_key(prefix: str, collection: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only; stable per collection, and one
    collection's own: a name the slug changes (``Notes_A``) gets a short hash of itself, so that ``notes-a``
    and ``notes_a`` no longer file their runs under one key (whose latest version the UI shows)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", collection.lower()).strip("-") or "default"
    if slug != collection:
        slug += "-" + hashlib.sha256(collection.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return f"{prefix}-{slug}"
