"""Errors of the command line itself (options, servers), all user errors: ``corpus-search: error: ...``, exit 2."""

from __future__ import annotations

from query.errors import CorpusSearchError


class UsageError(CorpusSearchError, ValueError):
    """A command-line option that cannot be used as given; the message says the fix (a bad setting: InvalidSettingError)."""


class ServiceError(CorpusSearchError, RuntimeError):
    """The query service (``corpus-search api``) refused a query, failed, or cannot be reached; the message says why."""
