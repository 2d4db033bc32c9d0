"""Errors the query module raises. Each message names the bad input and the fix."""

from __future__ import annotations


class CorpusSearchError(Exception):
    """Base class of corpus-search errors."""


class ModelUnavailableError(CorpusSearchError, RuntimeError):
    """A configured model cannot be loaded (no network, no local copy, bad path)."""


class CollectionNotFoundError(CorpusSearchError, LookupError):
    """The collection has not been indexed in this database."""


class InvalidNameError(CorpusSearchError, ValueError):
    """A collection name that LanceDB cannot store or that collides with an internal table."""


class InvalidQueryError(CorpusSearchError, ValueError):
    """A query, filter or search parameter that cannot be answered as given."""


class PrecisionError(CorpusSearchError, ValueError):
    """A compute precision that the device cannot run (fp16 on the CPU) or that does not exist."""


class InvalidSettingError(CorpusSearchError, ValueError):
    """A setting read from the environment or ``.env`` that cannot be used as given; the message names its variable."""


class DatabaseLocationError(CorpusSearchError, OSError):
    """The database URI points at something that is not a usable database directory."""
