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
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, SettingsError):  # a value the environment source cannot even parse (bad JSON)
        field = str(exc).split('field "', 1)[-1].split('"', 1)[0] if 'field "' in str(exc) else "?"
        why = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        return UsageError(f"setting {field} (the CORPUS_SEARCH_{field.upper()} setting) cannot be parsed{why}: "
                          "give it as valid JSON")
    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    def name(e: dict) -> str:
        field = ".".join(map(str, e["loc"])) or "?"
        # The variable a user sets (values are not echoed: storage options hold credentials).
        return f"{field} (the CORPUS_SEARCH_{str(e['loc'][0]).upper()} setting)" if e["loc"] else field

    return UsageError("; ".join(
        f"setting {name(e)}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()
    ))
