"""corpus-search from Python: index, search and manage collections (see the README)."""

# Collections you can manage (issue 12); tasks.collections imports LanceDB lazily, so this stays light.
from tasks.collections import delete_documents, drop_collection, list_collections

__all__ = ["delete_documents", "drop_collection", "list_collections"]
