"""corpus-search from Python: index, search and manage collections (see the README).

``index``/``index_records`` build a collection (the index flow), ``query.Searcher`` searches it, and
``list_collections``/``drop_collection``/``delete_documents`` manage them. The heavy libraries (Prefect,
torch, LanceDB) load only when one of these is called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["delete_documents", "drop_collection", "index", "index_records", "list_collections"]

_HOMES = {"index": "corpus_search.indexing", "index_records": "corpus_search.indexing",
          "list_collections": "tasks.collections", "drop_collection": "tasks.collections",
          "delete_documents": "tasks.collections"}


def __getattr__(name: str) -> Any:
    # Lazy: `import corpus_search` (e.g. by the CLI's --api path) must not import Prefect or torch.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'corpus_search' has no attribute {name!r}")
