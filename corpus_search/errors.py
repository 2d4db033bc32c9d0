"""Errors of the command line itself (options, servers), all user errors: ``corpus-search: error: ...``, exit 2."""

from __future__ import annotations

from query.errors import CorpusSearchError


class UsageError(CorpusSearchError, ValueError):
    """A command-line option or environment setting that cannot be used as given; the message says the fix."""
