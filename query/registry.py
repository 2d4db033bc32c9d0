"""The per-collection re-ranker registry: cross-encoders trained for a collection, kept beside it.

A trained model is a directory ``<db>/_rerankers/<collection>/<model id>/`` (``CrossEncoder.save_pretrained``);
on object storage, the same prefix under the database (uploaded after training, downloaded once per reader
into a local cache).
The registry itself -- each model's base, training signal, training-data fingerprint, gate numbers on
the dev queries and fusion weight, plus which model is promoted -- is one JSON value in the collection
table's own metadata (key :data:`REGISTRY_KEY`). Keeping it in the table means it travels with the
collection and with its versions: rolling the table back to a version also restores the promotion that
was in force then.

``Searcher`` and ``corpus-search eval`` use the promoted model unless a cross-encoder is configured
explicitly (``CORPUS_SEARCH_CROSS_ENCODER`` / ``--cross-encoder``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from query.errors import CorpusSearchError

#: Table-metadata key holding the registry (JSON).
REGISTRY_KEY = "corpus_search.rerankers"
#: Directory under the database that holds every collection's trained re-rankers.
RERANKERS_DIR = "_rerankers"


class RerankerRegistryError(CorpusSearchError, LookupError):
    """A re-ranker id that the collection's registry does not hold, or a database the registry cannot use."""


@dataclass
class RerankerEntry:
    """One trained re-ranker of a collection, as the registry records it."""

    id: str
    path: str  # relative to the database root, so the database can move
    created: str
    base: str
    signal: str  # "judgments" | "self-supervised"
    fingerprint: str  # sha256 of the training examples (queries, positives, negatives) and the seed
    alpha: float  # weight of the cross-encoder in the fused score; 1.0 = cross-encoder alone
    depth: int = 30  # candidates it re-ranks by default: the depth the gate measured it (and chose alpha) at
    dev: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class Registry:
    """Every trained re-ranker of one collection and the promoted one (``None``: none promoted)."""

    promoted: str | None = None
    models: list[RerankerEntry] = field(default_factory=list)

    def find(self, model_id: str) -> RerankerEntry | None:
        """The entry ``model_id``, or None (a caller that also takes model directories tries that next)."""
        return next((entry for entry in self.models if entry.id == model_id), None)

    def get(self, model_id: str) -> RerankerEntry:
        if (entry := self.find(model_id)) is not None:
            return entry
        known = ", ".join(e.id for e in self.models) or "none yet: train one with corpus-search train-reranker"
        raise RerankerRegistryError(f"no re-ranker {model_id!r} in this collection (trained: {known})")

    @property
    def promoted_entry(self) -> RerankerEntry | None:
        return self.get(self.promoted) if self.promoted else None

    def to_json(self) -> str:
        return json.dumps({"promoted": self.promoted, "models": [asdict(e) for e in self.models]}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> Registry:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data.get("promoted"), [RerankerEntry(**e) for e in data.get("models", [])])


def local_db_root(db_uri: str) -> Path:
    """The directory of a local database (an object store has none: its models go through
    :func:`upload_model` and :func:`model_path`'s cache)."""
    if "://" in db_uri and not db_uri.startswith("file://"):
        raise RerankerRegistryError(f"{db_uri!r} is an object store, not a local database directory")
    # ~ expanded as LanceDB, the lock and query.storage do: else models went to a literal "./~" folder.
    return Path(db_uri.removeprefix("file://")).expanduser()


def rel_models_root(collection: str) -> str:
    """``_rerankers/<collection>``: where a collection's models live, relative to the database root."""
    return f"{RERANKERS_DIR}/{collection}"


# --------------------------------------------------------------------------- models on object storage


def _s3_filesystem(db_uri: str):
    """A pyarrow S3 filesystem configured as LanceDB is (the settings' storage options over the AWS_*
    environment), and the ``bucket/prefix`` of ``db_uri``."""
    from urllib.parse import urlparse

    from pyarrow.fs import S3FileSystem

    from query.storage import storage_options

    if not db_uri.startswith("s3://"):
        raise RerankerRegistryError(f"re-rankers on object storage are supported on s3:// only, not {db_uri!r}")
    opts, env = storage_options(), os.environ.get
    kwargs: dict[str, Any] = {}
    endpoint = opts.get("aws_endpoint") or env("AWS_ENDPOINT") or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlparse(endpoint)
        kwargs.update(endpoint_override=url.netloc or endpoint, scheme=url.scheme or "https")
    for arg, key, var in (("access_key", "aws_access_key_id", "AWS_ACCESS_KEY_ID"),
                          ("secret_key", "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                          ("session_token", "aws_session_token", "AWS_SESSION_TOKEN"),
                          ("region", "aws_region", "AWS_REGION")):
        if value := opts.get(key) or env(var):
            kwargs[arg] = value
    return S3FileSystem(**kwargs), db_uri.removeprefix("s3://").rstrip("/")


def _is_dir(fs, path: str) -> bool:
    """Whether ``path`` is a directory (a prefix holding objects) on the object store ``fs``."""
    from pyarrow.fs import FileType

    return fs.get_file_info(path).type == FileType.Directory


def _uri(db_uri: str, rel_path: str) -> str:
    """The ``s3://`` URI of ``<db>/<rel_path>``."""
    return f"{db_uri.rstrip('/')}/{rel_path.strip('/')}"


def _store_error(doing: str, rel_path: str, db_uri: str, exc: OSError) -> RerankerRegistryError:
    """One line for a failed object-store operation on a model, with no credential in it."""
    from query.storage import redact

    return RerankerRegistryError(f"cannot {doing} re-ranker {rel_path!r} of {db_uri!r}: "
                                 f"{redact(str(exc)).splitlines()[0]}")


def model_prefix_taken(db_uri: str, rel_path: str) -> bool:
    """Whether ``<db>/<rel_path>/`` on object storage already holds files (another machine's model)."""
    fs, base = _s3_filesystem(db_uri)
    try:
        return _is_dir(fs, f"{base}/{rel_path.strip('/')}")
    except OSError as exc:
        raise _store_error("look up", rel_path, db_uri, exc) from None


def upload_model(db_uri: str, directory: str | Path, rel_path: str) -> str:
    """Copy a saved model ``directory`` to ``<db>/<rel_path>/`` on object storage; returns ``rel_path``
    (what the registry records as the entry's ``path``)."""
    from pyarrow.fs import copy_files

    fs, base = _s3_filesystem(db_uri)
    root = Path(directory).resolve()
    for path in sorted(root.rglob("*")):
        # This machine's bookkeeping stays here: an uploaded training claim named a live run to every reader
        # on the machine that trained it (drop refused the collection).
        if path.is_file() and not path.name.startswith(LOCAL_MARKER_PREFIX):
            copy_files(str(path), f"{base}/{rel_path.strip('/')}/{path.relative_to(root).as_posix()}",
                       destination_filesystem=fs)
    return rel_path.strip("/")


def cache_root(db_uri: str) -> Path:
    """Local cache of one object-store database's models (``$XDG_CACHE_HOME/corpus-search/rerankers/...``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    # A trailing slash names the same database: one cache, not a second download.
    return base / "corpus-search" / "rerankers" / hashlib.sha256(db_uri.rstrip("/").encode()).hexdigest()[:16]


def _fetch(db_uri: str, rel_path: str) -> Path:
    """The local copy of ``<db>/<rel_path>/``, downloaded once (a model directory never changes under its id)."""
    from pyarrow.fs import copy_files

    target = cache_root(db_uri) / rel_path
    if (target / COMPLETE_MARKER).exists():
        return target
    fs, base = _s3_filesystem(db_uri)
    remote = f"{base}/{rel_path.strip('/')}"
    try:
        if not _is_dir(fs, remote):
            return target  # no model there: the caller sees a missing directory and falls back
        # Into a temporary sibling, then one rename: a reader never loads a half-downloaded model.
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            copy_files(remote, tmp, source_filesystem=fs)
            (Path(tmp) / COMPLETE_MARKER).touch()
            if not target.exists():
                try:
                    os.replace(tmp, target)
                except OSError:  # another reader's download landed first: theirs is the same model
                    if not (target / COMPLETE_MARKER).exists():
                        raise
                os.makedirs(tmp, exist_ok=True)  # TemporaryDirectory removes what it created
    except OSError as exc:
        raise _store_error("download", rel_path, db_uri, exc) from None
    return target


#: Marks a finished download in the local cache.
COMPLETE_MARKER = ".corpus-search-complete"
#: The names of the markers a machine keeps in its model directories (a download complete, a run training):
#: never part of the model, never uploaded.
LOCAL_MARKER_PREFIX = ".corpus-search-"


def models_root(db_uri: str, collection: str) -> Path:
    """Where this collection's trained models are saved on this machine: ``<db>/_rerankers/<collection>``,
    or for an object-store database the local cache of that prefix (models are trained there, then uploaded)."""
    from query.storage import is_local_uri

    base = local_db_root(db_uri) if is_local_uri(db_uri) else cache_root(db_uri)
    return base / rel_models_root(collection)


def read_registry(table) -> Registry:
    """The registry stored in ``table``'s metadata (empty when no model was ever trained)."""
    return Registry.from_json(table.to_lance().metadata.get(REGISTRY_KEY))


def write_registry(table, registry: Registry) -> None:
    """Store ``registry`` in ``table``'s metadata (one new table version). Hold the writer lock around it."""
    table.to_lance().update_metadata({REGISTRY_KEY: registry.to_json()})
    table.checkout_latest()


def model_path(db_uri: str, entry: RerankerEntry) -> Path:
    """Absolute directory of ``entry``'s saved model; for an object-store database, its local copy
    (downloaded on first use)."""
    from query.storage import is_local_uri

    if not is_local_uri(db_uri) and not Path(entry.path).is_absolute():
        return _fetch(db_uri, entry.path)
    return local_db_root(db_uri) / entry.path


def model_location(db_uri: str, entry: RerankerEntry) -> str:
    """Where ``entry``'s model is stored, for display: a local directory or an ``s3://`` URI (no download)."""
    from query.storage import is_local_uri

    if Path(entry.path).is_absolute():
        return entry.path
    if is_local_uri(db_uri):
        return str(local_db_root(db_uri) / entry.path)
    return _uri(db_uri, entry.path)


def model_exists(db_uri: str, entry: RerankerEntry) -> bool:
    """Whether ``entry``'s saved model is there (on object storage: asked of the store, nothing downloaded)."""
    from query.storage import is_local_uri

    if is_local_uri(db_uri) or Path(entry.path).is_absolute():
        return model_path(db_uri, entry).is_dir()
    if (cache_root(db_uri) / entry.path / COMPLETE_MARKER).exists():
        return True
    fs, base = _s3_filesystem(db_uri)
    return _is_dir(fs, f"{base}/{entry.path.strip('/')}")


def _in_models_dir(rel_path: str) -> bool:
    """A relative path strictly inside the database's ``_rerankers/`` directory (not it, no ``..``)."""
    parts = Path(rel_path).parts
    return (not Path(rel_path).is_absolute() and len(parts) > 1 and parts[0] == RERANKERS_DIR
            and ".." not in parts)


def remove_models(db_uri: str, rel_paths: list[str]) -> list[str]:
    """Delete saved models ``<db>/<rel_path>/``: local directories, or object-store prefixes and their local
    cache. Returns where the deleted models were (directories, or ``s3://`` URIs).

    Only paths under the database's ``_rerankers/`` directory are touched, which this project writes and
    nothing else does: nothing absolute, no ``..``, and locally nothing a symlink leads out of it. A registry
    path elsewhere (a model saved with ``--out``, even inside the database) is the user's directory, and a
    damaged registry naming a table's directory can never delete it. A path inside one already deleted is
    skipped (the collection's directory holds all its models)."""
    from query.storage import is_local_uri

    local = is_local_uri(db_uri)
    if local:
        root = local_db_root(db_uri).resolve()
        owned = (root / RERANKERS_DIR).resolve()  # resolved: `_rerankers` may be a link to a bigger disk
    else:
        fs, base = _s3_filesystem(db_uri)
    removed = []
    ours = {rel for rel in (r.strip("/") for r in rel_paths) if _in_models_dir(rel)}
    for rel in sorted(ours, key=len):
        if any(rel.startswith(done + "/") for done in removed):
            continue
        if local:
            path = (root / rel).resolve()
            if path != owned and path.is_relative_to(owned) and path.is_dir():
                shutil.rmtree(path)
                removed.append(rel)
            continue
        remote = f"{base}/{rel}"
        try:
            if _is_dir(fs, remote):
                fs.delete_dir(remote)
                removed.append(rel)
        except OSError as exc:
            raise _store_error("remove", rel, db_uri, exc) from None
        shutil.rmtree(cache_root(db_uri) / rel, ignore_errors=True)
    return [str((root / rel).resolve()) if local else _uri(db_uri, rel) for rel in removed]


def registry_or_empty(table) -> Registry:
    """:func:`read_registry`, or an empty registry when its stored value is damaged: searches never break on it."""
    return parsed_or_empty(table.to_lance().metadata.get(REGISTRY_KEY))


def parsed_or_empty(raw) -> Registry:
    """A stored registry value (any table version's) parsed, or an empty registry when it is damaged."""
    try:
        return Registry.from_json(raw)
    except (ValueError, TypeError, RerankerRegistryError):
        return Registry()


def promoted_model(table, db_uri: str) -> tuple[RerankerEntry, Path] | None:
    """The promoted re-ranker of ``table`` and its directory, or ``None``.

    A promoted model whose directory is gone is reported as ``None`` with the reason left to the caller's
    fallback: the registry never breaks a search.
    """
    entry = registry_or_empty(table).promoted_entry
    if entry is None:
        return None
    try:
        path = model_path(db_uri, entry)
    except RerankerRegistryError:
        return None
    return (entry, path) if path.is_dir() else None
