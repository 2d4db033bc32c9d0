"""The index run's summary: counted by the flow, printed by the CLI, published as Prefect artifacts."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

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
    "rows",
    "seconds",
)


@dataclass
class IndexSummary:
    collection: str
    articles_fetched: int = 0
    articles_unchanged: int = 0
    articles_failed: int = 0
    articles_deleted: int = 0
    paragraphs_added: int = 0
    paragraphs_moved: int = 0
    paragraphs_deleted: int = 0
    paragraphs_encoded: int = 0
    rows: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (doc_id, error)

    @property
    def encode_rate(self) -> float:
        """Paragraphs encoded per second of encoding."""
        return self.paragraphs_encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return {k: data[k] for k in JSON_KEYS}

    def to_text(self) -> str:
        return (
            f"collection {self.collection}: {self.rows} rows\n"
            f"articles:   {self.articles_fetched} fetched / {self.articles_unchanged} unchanged / "
            f"{self.articles_failed} failed / {self.articles_deleted} deleted\n"
            f"paragraphs: {self.paragraphs_added} added / {self.paragraphs_moved} moved / "
            f"{self.paragraphs_deleted} deleted / {self.paragraphs_encoded} re-encoded\n"
            f"time:       {self.seconds:.1f} s wall, {self.encode_rate:.1f} paragraphs/s encoding"
            + "".join(f"\nfailed: {doc}: {err}" for doc, err in self.failures[:20])
            + (f"\n... and {len(self.failures) - 20} more failures" if len(self.failures) > 20 else "")
        )

    def artifact_rows(self) -> list[dict]:
        rows = [{"metric": k, "value": v} for k, v in self.to_json().items()]
        rows.append({"metric": "paragraphs_per_second_encoding", "value": round(self.encode_rate, 1)})
        return rows

    def failures_markdown(self) -> str:
        if not self.failures:
            return f"# {self.collection}: no failed sources\n"
        lines = [f"# {self.collection}: {len(self.failures)} failed sources", "", "| source | error |", "|---|---|"]
        for doc, err in self.failures:
            lines.append(f"| {doc.replace('|', '%7C')} | {err.replace('|', '/')} |")
        return "\n".join(lines) + "\n"


def artifact_key(prefix: str, collection: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only; stable per collection."""
    slug = re.sub(r"[^a-z0-9-]+", "-", collection.lower()).strip("-") or "default"
    return f"{prefix}-{slug}"
