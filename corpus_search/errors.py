"""Errors of the command line itself (options, servers), all user errors: ``corpus-search: error: ...``, exit 2."""

from __future__ import annotations

from query.errors import CorpusSearchError


class UsageError(CorpusSearchError, ValueError):
    """A command-line option or environment setting that cannot be used as given; the message says the fix."""


class ServiceError(CorpusSearchError, RuntimeError):
    """The query service (``corpus-search api``) refused a query, failed, or cannot be reached; the message says why."""


def settings_error(exc: Exception) -> UsageError | None:
    """A pydantic error of ``Settings`` (e.g. a bad CORPUS_SEARCH_COLLECTION) as a one-line user error.

    Settings are read from the environment wherever they are first needed, so the conversion happens
    here, at the command-line and service boundaries; any other ValidationError is a bug and keeps its traceback.
    """
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, SettingsError):  # a value the environment source cannot even parse (bad JSON)
        field = m.group(1) if (m := re.search(r'field "(\w+)"', str(exc))) else None
        why = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        return UsageError(f"setting {_named(field)} cannot be parsed{why}: give it as valid JSON")
    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    return UsageError("; ".join(
        f"setting {_named(str(e['loc'][0]) if e['loc'] else None, '.'.join(map(str, e['loc'])))}: "
        f"{str(e['msg']).removeprefix('Value error, ')}"
        for e in exc.errors()
    ))


def _named(field: str | None, path: str | None = None) -> str:
    """"candidates (the CORPUS_SEARCH_CANDIDATES setting)": the setting and the variable a user sets. Never its
    value: storage options hold credentials."""
    if not field:
        return path or "?"
    from query.settings import Settings

    return f"{path or field} (the {Settings.model_config['env_prefix']}{field.upper()} setting)"
