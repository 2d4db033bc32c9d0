"""Where a database lives: refuse a local URI that cannot be a LanceDB directory before LanceDB touches it.

LanceDB reports a database path that is a file, or lies under a file, as a raw OS or Rust error
deep in a stack trace; this check turns those into one message that says what to do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from query.errors import DatabaseLocationError

log = logging.getLogger(__name__)

_HINT = "give a directory (created if missing), e.g. --db .corpus_search/lancedb or CORPUS_SEARCH_DB_URI=..."


def is_local_uri(db_uri: str) -> bool:
    """True for a plain path or ``file://`` URI, False for object stores (``s3://`` and friends)."""
    return "://" not in db_uri or db_uri.startswith("file://")


def local_path(db_uri: str) -> Path:
    """The directory of a local database URI (``~`` expanded)."""
    return Path(db_uri.removeprefix("file://")).expanduser()


def check_db_uri(db_uri: str, *, write: bool = False, must_exist: bool = False) -> str:
    """Return ``db_uri`` if it can hold a database (and be written, when ``write``); else raise.

    ``must_exist``: a reader's local database must be there already. Connecting would create the directory,
    so a mistyped ``--db`` would leave an empty database behind and blame the collection.

    An object-store URI is reached only when ``write``: a writer (the index command, the writer lock)
    then learns of a missing bucket, a wrong endpoint or refused credentials before any work starts;
    readers learn it from ``connect``, which they call next anyway.
    """
    if not isinstance(db_uri, str) or not db_uri.strip():
        raise DatabaseLocationError(f"the database URI is empty: {_HINT}")
    if "\x00" in db_uri:
        raise DatabaseLocationError(f"the database URI {db_uri!r} contains a NUL character: {_HINT}")
    if not is_local_uri(db_uri):
        if bad := sorted({c for c in db_uri.split("://", 1)[1] if c in "#?%"}):
            # LanceDB reads '#' as a fragment (every table in one dataset), '?' as a query and '%' as an escape,
            # where the re-rankers' uploads take them literally: a database the two would place apart.
            raise DatabaseLocationError(f"the database URI {db_uri!r} has {' '.join(bad)} in its path: object-store "
                                        f"prefixes here use letters, digits and - _ . / only. {_HINT}")
        if write:
            connect(db_uri)  # lists the database's manifest: fails with a DatabaseLocationError that says what to set
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
    if must_exist and not path.is_dir():
        raise DatabaseLocationError(
            f"the database {db_uri!r} does not exist: check --db (or CORPUS_SEARCH_DB_URI); "
            "`corpus-search index` creates it"
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


# --------------------------------------------------------------------------- object storage

#: Spellings a user may give in ``storage_options``, mapped to the key Lance's object store uses for the
#: same AWS_* environment variable. Lance fills in each environment variable under its canonical key only
#: when that key is missing, so an override under another spelling would sit beside the environment's value
#: and which of the two wins would be up to hash order (seen with ``endpoint`` vs ``AWS_ENDPOINT``).
_ALIASES = {
    "endpoint": "aws_endpoint", "endpoint_url": "aws_endpoint", "aws_endpoint_url": "aws_endpoint",
    "aws_endpoint_url_s3": "aws_endpoint", "s3_endpoint": "aws_endpoint",
    "access_key_id": "aws_access_key_id", "secret_access_key": "aws_secret_access_key",
    "session_token": "aws_session_token", "token": "aws_session_token", "aws_token": "aws_session_token",
    "region": "aws_region", "default_region": "aws_region", "aws_default_region": "aws_region",
    "aws_allow_http": "allow_http",
}
#: Keys whose values are credentials: never shown, and scrubbed from any message we pass on.
SECRET_KEYS = frozenset({"aws_secret_access_key", "aws_session_token", "aws_access_key_id",
                         "google_service_account_key", "azure_storage_account_key", "azure_storage_sas_key",
                         "azure_client_secret"})
#: Environment variables that hold credentials (their values are scrubbed too).
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_STORE_HINT = ("object storage is configured by the standard variables AWS_ENDPOINT (or AWS_ENDPOINT_URL), "
               "AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ALLOW_HTTP=true for an http:// "
               "endpoint, or CORPUS_SEARCH_STORAGE_OPTIONS='{\"aws_endpoint\": ...}' which overrides them")


def canonical_option(key: str) -> str:
    """The key under which Lance's object store reads storage option ``key`` (lower case, aliases resolved)."""
    k = key.strip().lower()
    return _ALIASES.get(k, k)


def storage_options(settings=None) -> dict[str, str]:
    """The ``storage_options`` for ``lancedb.connect``: the settings' overrides under canonical keys.

    Everything not overridden comes from the AWS_* environment, which Lance's object store reads by itself.
    The values are plain strings here: keep the result out of logs, reprs and Prefect parameters.
    """
    if settings is None:
        from query.settings import get_settings

        settings = get_settings()
    raw = getattr(settings, "storage_options", None) or {}
    return {canonical_option(k): (v.get_secret_value() if hasattr(v, "get_secret_value") else str(v))
            for k, v in raw.items()}


def _secrets(options: dict[str, str]) -> list[str]:
    values = [v for k, v in options.items() if k in SECRET_KEYS]
    values += [os.environ[name] for name in _SECRET_ENV if os.environ.get(name)]
    return [v for v in values if len(v) >= 4]  # a 1-3 character "secret" would blank out ordinary words


def redact(text: str, options: dict[str, str] | None = None) -> str:
    """``text`` with every configured credential value replaced by ``***``."""
    for secret in _secrets(options or {}):
        text = text.replace(secret, "***")
    return text


def _endpoint_setting(options: dict[str, str]) -> str | None:
    """The object-store endpoint configured (storage options over the AWS_* environment), None: AWS's own."""
    return (options.get("aws_endpoint") or os.environ.get("AWS_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


def _endpoint(options: dict[str, str]) -> str:
    """The endpoint as an error names it."""
    return _endpoint_setting(options) or "the default AWS endpoint"


def _bucket(db_uri: str) -> str:
    return db_uri.split("://", 1)[1].split("/", 1)[0]


def object_store_error(db_uri: str, exc: BaseException, options: dict[str, str] | None = None) -> DatabaseLocationError:
    """A one-line error for a failure to reach ``db_uri`` on object storage that says what to set.

    Classifies LanceDB's raw (Rust) error text; the secret values never reach the message.
    """
    options = options or {}
    raw = str(exc)
    endpoint = _endpoint(options)
    bucket = _bucket(db_uri)
    if "NoSuchBucket" in raw or "bucket does not exist" in raw.lower():
        msg = (f"the bucket {bucket!r} of the database {db_uri!r} does not exist at {endpoint}: create it "
               f"(e.g. aws s3 mb s3://{bucket}) or fix --db; check AWS_ENDPOINT if it lives elsewhere")
    elif "BadScheme" in raw or "allow_http" in raw.lower():
        msg = (f"the object store endpoint {endpoint} of {db_uri!r} is plain http: set AWS_ALLOW_HTTP=true "
               "(or storage option allow_http) to allow it, or use an https:// endpoint")
    elif any(s in raw for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden",
                                "status: 403", "credentials", "ExpiredToken", "InvalidToken")):
        msg = (f"the object store at {endpoint} refused the credentials for {db_uri!r}: check "
               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or the bucket's policy")
    elif any(s in raw for s in ("Connect", "connection", "dns error", "timed out", "Timeout", "tcp connect")):
        msg = (f"cannot reach the object store at {endpoint} for {db_uri!r}: check AWS_ENDPOINT (or "
               "AWS_ENDPOINT_URL) and that the server is up")
    else:
        first = raw.splitlines()[0] if raw else type(exc).__name__
        msg = f"cannot open the database {db_uri!r} on object storage ({first[:300]})"
    return DatabaseLocationError(redact(f"{msg}. {_STORE_HINT}", options))


def connect(db_uri: str, settings=None, **kwargs):
    """Open the LanceDB database ``db_uri``: the one place every reader and writer connects.

    Object-store URIs get the settings' ``storage_options`` (over the AWS_* environment) and failures to
    reach the store become a ``DatabaseLocationError`` that names the URI and what to set, never a secret.
    ``kwargs`` go to ``lancedb.connect`` (e.g. ``read_consistency_interval``).
    """
    import lancedb

    if is_local_uri(db_uri):
        return lancedb.connect(db_uri, **kwargs)
    options = storage_options(settings)
    endpoint = _endpoint_setting(options)
    if endpoint is not None and not endpoint.lower().startswith(("http://", "https://")):
        # Without a scheme the object store panicked in Rust (42 lines, exit 1).
        raise DatabaseLocationError(f"the object store endpoint {endpoint!r} of {db_uri!r} has no scheme: set "
                                    "AWS_ENDPOINT (or AWS_ENDPOINT_URL, or storage option endpoint) to "
                                    "http://HOST:PORT or https://HOST")
    try:
        # Connecting lists the database's manifest: a missing bucket, a wrong endpoint or rejected
        # credentials show here, before any task has done work.
        return lancedb.connect(db_uri, storage_options=options or None, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        log.debug("connecting to %s failed: %s", db_uri, redact(str(exc), options))
        raise object_store_error(db_uri, exc, options) from None


def table_names(db) -> list[str]:
    """Every table name of ``db``, sorted (``list_tables`` pages; the older ``table_names`` is deprecated)."""
    names: list[str] = []
    token = None
    while True:
        page = db.list_tables(page_token=token, limit=10_000)
        names += page.tables
        token = page.page_token
        if not token or not page.tables:
            return sorted(names)
