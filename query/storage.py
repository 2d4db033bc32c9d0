"""Where a database lives: refuse a local URI that cannot be a LanceDB directory before LanceDB touches it.

LanceDB reports a database path that is a file, or lies under a file, as a raw OS or Rust error
deep in a stack trace; this check turns those into one message that says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from query.errors import DatabaseLocationError

_HINT = "give a directory (created if missing), e.g. --db .corpus_search/lancedb or CORPUS_SEARCH_DB_URI=..."


def is_local_uri(db_uri: str) -> bool:
    """True for a plain path or ``file://`` URI, False for object stores (``s3://`` and friends)."""
    return "://" not in db_uri or db_uri.startswith("file://")


def local_path(db_uri: str) -> Path:
    """The directory of a local database URI (``~`` expanded)."""
    return Path(db_uri.removeprefix("file://")).expanduser()


def check_db_uri(db_uri: str, *, write: bool = False) -> str:
    """Return ``db_uri`` if it can hold a database (and be written, when ``write``); else raise.

    Object-store URIs pass unchanged: their problems only show when the store is reached.
    """
    if not isinstance(db_uri, str) or not db_uri.strip():
        raise DatabaseLocationError(f"the database URI is empty: {_HINT}")
    if "\x00" in db_uri:
        raise DatabaseLocationError(f"the database URI {db_uri!r} contains a NUL character: {_HINT}")
    if not is_local_uri(db_uri):
        return db_uri
    path = local_path(db_uri)
    if path.exists() and not path.is_dir():
        raise DatabaseLocationError(f"the database {db_uri!r} is a file, not a directory: {_HINT}")
    # The nearest existing ancestor decides whether the directory can be created (a missing one is
    # created by the writer; a reader of a missing one is told the collection does not exist).
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DatabaseLocationError(
            f"the database {db_uri!r} cannot be created: {str(existing)!r} is a file, not a directory: {_HINT}"
        )
    if existing is not None:
        need = os.W_OK | os.X_OK if write else os.R_OK | os.X_OK
        if not os.access(existing, need):
            what = "written" if write else "read"
            raise DatabaseLocationError(
                f"the database {db_uri!r} cannot be {what}: {str(existing)!r} is not "
                f"{'writable' if write else 'readable'} by this user. Fix its permissions or {_HINT}"
            )
    return db_uri
