"""corpus-search: index articles into LanceDB with Prefect flows, answer questions with re-ranked paragraphs.

From Python: ``index``/``index_records`` to build a collection, ``query.Searcher`` to search it. The
heavy libraries (Prefect, torch, LanceDB) load only when one of these is called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["index", "index_records"]


def __getattr__(name: str) -> Any:
    # Lazy: `import corpus_search` (e.g. by the CLI's --api path) must not import Prefect or torch.
    if name in ("index", "index_records"):
        from corpus_search import indexing

        return getattr(indexing, name)
    raise AttributeError(f"module 'corpus_search' has no attribute {name!r}")
