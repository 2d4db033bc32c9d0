"""Errors the query module raises. Each message names the bad input and the fix."""

from __future__ import annotations


class CorpusSearchError(Exception):
    """Base class of corpus-search errors."""


class ModelUnavailableError(CorpusSearchError, RuntimeError):
    """A configured model cannot be loaded (no network, no local copy, bad path)."""


class CollectionNotFoundError(CorpusSearchError, LookupError):
    """The collection has not been indexed in this database."""
