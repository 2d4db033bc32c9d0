"""corpus-search's lightweight query module: ``Searcher`` and ``rank_passages``. Never imports prefect."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Hit", "Searcher", "Settings", "rank_passages"]

if TYPE_CHECKING:
    from query.searcher import Hit, Searcher, rank_passages
    from query.settings import Settings


def __getattr__(name: str):
    # Lazy: `import query` stays cheap (no torch, no lancedb) until a Searcher is needed.
    if name in ("Hit", "Searcher", "rank_passages"):
        from query import searcher

        return getattr(searcher, name)
    if name == "Settings":
        from query.settings import Settings

        return Settings
    raise AttributeError(f"module 'query' has no attribute {name!r}")
