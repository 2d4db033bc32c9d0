"""Write side of the re-ranker registry (read side: :mod:`query.registry`): record, promote, remove, list.

Every change is one table-metadata commit made under the collection's writer lock, so it never races
an index run. On an object-store database a model is trained in the local cache of its prefix, then
uploaded (:func:`publish`) before the registry names it, so a reader never finds an entry without its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from query.registry import (
    COMPLETE_MARKER,
    REGISTRY_KEY,
    RerankerEntry,
    RerankerRegistryError,
    local_db_root,
    model_exists,
    model_location,
    models_root,
    parsed_or_empty,
    read_registry,
    rel_models_root,
    remove_models,
    upload_model,
    write_registry,
)
from query.storage import is_local_uri
from tasks.lock import writer_lock
from tasks.versions import record_run


def new_model_id(signal: str) -> str:
    """A sortable id: creation time (UTC, to the second) and the training signal."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + signal


def default_out_dir(db_uri: str, collection: str, model_id: str) -> Path:
    return models_root(db_uri, collection) / model_id


#: Created (exclusively) in a model directory while a run trains into it; holds the run's process id.
CLAIM_MARKER = ".corpus-search-training"


def claim_model_dir(db_uri: str, collection: str, signal: str, out: str | None = None) -> tuple[str, Path]:
    """A new model id and the directory this run alone trains into.

    Ids are the creation second, so two runs started in the same second would share one directory and
    one registry entry, the later run writing over the earlier's model (perhaps the promoted one). The
    id's directory under the models folder is claimed with an exclusive file instead: the second run takes
    the id with ``-2``. An ``--out`` run claims that directory too, left empty, to reserve its id: on an
    object store a model is uploaded under its id, so two runs of one second, one with ``--out``, uploaded
    into one prefix. Its ``--out`` directory is claimed as well, and refused while another live run holds
    it. A claim whose run died is taken over. :func:`release_model_dir` gives both back.
    """
    first = new_model_id(signal)
    for n in range(1, 1000):
        model_id = first if n == 1 else f"{first}-{n}"
        home = default_out_dir(db_uri, collection, model_id)
        home.mkdir(parents=True, exist_ok=True)
        if not _claim(home / CLAIM_MARKER):
            continue  # a live run of that second holds the id
        if [p for p in home.iterdir() if p.name != CLAIM_MARKER]:
            _release(home)  # an earlier model of that second lives there: the next id
            continue
        if not out:
            return model_id, home
        path = Path(out).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # checked before training (check_out_dir), but a root user passes os.access
            _release(home, remove_empty=True)
            raise RerankerRegistryError(f"--out {out}: cannot create it ({exc.strerror or exc}); choose a directory "
                                        "this user can write") from exc
        if path.resolve() == home.resolve() or _claim(path / CLAIM_MARKER):
            _RESERVED[path.resolve()] = home
            return model_id, path
        _release(home, remove_empty=True)
        raise RerankerRegistryError(f"--out {out}: another train-reranker run is training into it; choose "
                                    "another directory")
    raise RerankerRegistryError(f"no free model directory for {first} under {models_root(db_uri, collection)}")


#: An ``--out`` run's directory → the id's directory it reserves (empty, claimed) in the models folder.
_RESERVED: dict[Path, Path] = {}


def _claim(marker: Path) -> bool:
    import os

    for _ in range(2):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _claimable(marker):
                return False  # a live run holds it (this process included: a claim is once)
            marker.unlink(missing_ok=True)  # a dead run's claim: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {_started(os.getpid())}")
        return True
    return False


def _started(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux), else "": with the pid, it tells the
    run that wrote a claim from a later process given the same pid (a container's every run is pid 1)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def release_model_dir(path: str | Path) -> None:
    """The run is done with its directory (before it is published: the claim is not part of the model), and
    with the id an ``--out`` run reserved (its empty directory goes: no reader takes it for a model)."""
    _release(Path(path))
    if (home := _RESERVED.pop(Path(path).resolve(), None)) is not None and home.resolve() != Path(path).resolve():
        _release(home, remove_empty=True)


def _release(path: Path, remove_empty: bool = False) -> None:
    (path / CLAIM_MARKER).unlink(missing_ok=True)
    if remove_empty:
        try:
            path.rmdir()
        except OSError:
            pass  # not empty (or gone): left as it is


def stored_path(db_uri: str, directory: str | Path) -> str:
    """How the registry records a local database's model directory: relative to the database when inside
    it, else absolute."""
    d = Path(directory).resolve()
    root = local_db_root(db_uri).resolve()
    return str(d.relative_to(root)) if d.is_relative_to(root) else str(d)


def publish(db_uri: str, collection: str, model_id: str, directory: str | Path) -> str:
    """Make the saved model ``directory`` reachable by every reader of the database; returns the path the
    registry records. Local: the directory where it is. Object store: uploaded to
    ``<db>/_rerankers/<collection>/<model_id>/`` (from any local directory, ``--out`` included)."""
    if is_local_uri(db_uri):
        return stored_path(db_uri, directory)
    from query.registry import model_prefix_taken

    # Ids are unique on this machine (claim_model_dir), not across machines: another machine's run of the same
    # second uploaded into the same prefix, and removing either model deleted both. Never into a taken one.
    rel = f"{rel_models_root(collection)}/{model_id}"
    n = 1
    while model_prefix_taken(db_uri, rel):
        n += 1
        rel = f"{rel_models_root(collection)}/{model_id}-m{n}"
    rel = upload_model(db_uri, directory, rel)
    if Path(directory).resolve() == (models_root(db_uri, collection) / model_id).resolve():
        (Path(directory) / COMPLETE_MARKER).touch()  # trained in the cache: this reader need not download it
    return rel


def _open(db_uri: str, collection: str):
    """The collection's table, opened with the same checks and messages as a search."""
    from query.searcher import Searcher

    return Searcher(db_uri=db_uri, collection=collection).table


#: ``record``'s ``gated_against`` when the promotion does not depend on which model is promoted now.
UNGATED = object()


def record(db_uri: str, collection: str, entry: RerankerEntry, promote: bool,
           gated_against: str | None | object = UNGATED) -> tuple[RerankerEntry, bool]:
    """Add ``entry`` to the collection's registry, promoting it when ``promote``; returns it and whether it was.

    Under the collection's lock, so that runs ending together cannot undo each other:
    - an id already registered (two runs of the same second, one of them with ``--out``) is never replaced:
      the entry takes the next free ``-N`` id (replacing it lost the other model and could leave a model the
      gate refused promoted);
    - ``gated_against`` is the model id promoted when the gate scored it (``None``: none): a promotion is
      withdrawn when another run promoted a model meanwhile, which this one was never compared with.
    """
    from dataclasses import replace

    with writer_lock(db_uri, collection):
        table = _open(db_uri, collection)
        reg = read_registry(table)
        if entry.path in {e.path for e in reg.models}:  # two entries, one model's files: removing one lost both
            raise RerankerRegistryError(f"re-ranker files {entry.path!r} are already registered as another model; "
                                        "train again (a new run uploads under a new prefix)")
        if not model_exists(db_uri, entry):  # deleted while this run waited for the lock: never register none
            raise RerankerRegistryError(f"the trained model at {model_location(db_uri, entry)} is gone (deleted "
                                        "before it was registered): nothing was registered; train again")
        taken = {e.id for e in reg.models}
        if entry.id in taken:
            entry = replace(entry, id=next(f"{entry.id}-{n}" for n in range(2, 10_000) if f"{entry.id}-{n}" not in taken))
        if promote and gated_against is not UNGATED and reg.promoted != gated_against:
            promote = False
        reg.models = [*reg.models, entry]
        if promote:
            reg.promoted = entry.id
        write_registry(table, reg)
        record_run(db_uri, collection, {"trained": entry.id, "signal": entry.signal, "promoted": reg.promoted},
                   kind="reranker")
    return entry, promote


def promote(db_uri: str, collection: str, model_id: str | None) -> RerankerEntry | None:
    """Make ``model_id`` the collection's re-ranker (``None``: none, searches use the configured one)."""
    if model_id is not None and not model_id.strip():  # a script's empty variable must not unpromote silently
        raise RerankerRegistryError("no re-ranker id given to promote (an empty one): give an id that `corpus-search "
                                    f"rerankers --collection {collection}` lists, or --unpromote to promote none")
    with writer_lock(db_uri, collection):
        table = _open(db_uri, collection)
        reg = read_registry(table)
        entry = reg.get(model_id) if model_id else None
        if entry is not None and not model_exists(db_uri, entry):
            raise RerankerRegistryError(f"re-ranker {model_id!r} has no saved model at {model_location(db_uri, entry)}")
        if reg.promoted == model_id:
            return entry  # nothing changes: no new table version, no run-log line
        reg.promoted = model_id
        write_registry(table, reg)
        record_run(db_uri, collection, {"promoted": model_id}, kind="reranker")
        return entry


def remove(db_uri: str, collection: str, model_ids: Sequence[str]) -> list[str]:
    """Forget trained re-rankers and delete their saved models; returns where the deleted models were.

    The promoted one is refused: promote another (or none) first. A model saved with ``train-reranker --out
    DIR`` anywhere but the database's ``_rerankers/`` directory is only forgotten, since that directory is
    the user's (see :func:`query.registry.remove_models`, which ``drop`` uses too). Older table
    versions still name the removed models: a search on a version rolled back to one whose promoted model
    is gone falls back, with a warning that says so.
    """
    ids = list(dict.fromkeys(model_ids))
    with writer_lock(db_uri, collection):
        table = _open(db_uri, collection)
        reg = read_registry(table)
        ids, entries, loose = _removal(db_uri, collection, table, reg, ids, reg.promoted)
        if not ids:
            return remove_models(db_uri, [f"{rel_models_root(collection)}/{i}" for i in loose])
        reg.models = [e for e in reg.models if e.id not in ids]
        write_registry(table, reg)
        record_run(db_uri, collection, {"removed": ids, "promoted": reg.promoted}, kind="reranker")
        return remove_models(db_uri, [e.path for e in entries] + [f"{rel_models_root(collection)}/{i}" for i in loose])


def check_removable(db_uri: str, collection: str, model_ids: Sequence[str], promoted: str | None) -> None:
    """Raise what :func:`remove` would raise for ``model_ids`` once ``promoted`` is the promoted one (the CLI's
    ``--promote B --remove A`` checks both before either commits)."""
    table = _open(db_uri, collection)
    _removal(db_uri, collection, table, read_registry(table), list(dict.fromkeys(model_ids)), promoted)


def _removal(db_uri: str, collection: str, table, reg, ids: list[str],
             promoted: str | None) -> tuple[list[str], list[RerankerEntry], list[str]]:
    """(registered ids, their entries, leftover directories' ids) to remove; raises for any that must stay."""
    # A directory no kept version's registry names (a run killed before it registered its model) goes
    # by its id too: nothing else would ever remove it.
    unknown = [i for i in ids if reg.find(i) is None]
    leftovers = {Path(d["path"]).name: d for d in unregistered_dirs(db_uri, collection, reg, table)} if unknown else {}
    loose = [i for i in unknown if i in leftovers]
    for model_id in loose:
        d = leftovers[model_id]
        if d["training"]:
            raise RerankerRegistryError(f"{d['path']} is the directory of a train-reranker run in progress: "
                                        "let it finish, or stop it, first")
        if d["versions"]:
            raise RerankerRegistryError(
                f"{d['path']} is not in this version's registry, but version(s) {', '.join(map(str, d['versions']))} "
                "of the collection name it: a rollback there needs it. It goes once retention removes them")
    ids = [i for i in ids if i not in loose]
    entries = [reg.get(model_id) for model_id in ids]  # an unknown id fails here, before anything changes
    if promoted in ids:
        raise RerankerRegistryError(f"re-ranker {promoted!r} is the promoted one: promote another "
                                    "(--promote ID) or none (--unpromote) before removing it")
    if ids and (held := _promoted_by_tags(table, ids)):  # rollback --to TAG would restore a promotion without files
        raise RerankerRegistryError("; ".join(f"re-ranker {i!r} is the promoted one of tag(s) {', '.join(tags)}"
                                              for i, tags in held.items())
                                    + ": a rollback to a tag needs its model, so it is kept while the tag is")
    return ids, entries, loose


def listing(db_uri: str, collection: str) -> dict:
    """The collection's trained re-rankers (oldest first) with their metrics, and which one is promoted."""
    table = _open(db_uri, collection)
    reg = read_registry(table)
    models = []
    for e in reg.models:
        models.append({"id": e.id, "promoted": e.id == reg.promoted, "path": model_location(db_uri, e),
                       "created": e.created, "base": e.base, "signal": e.signal, "alpha": e.alpha,
                       "dev": e.dev, "train": e.train, "fingerprint": e.fingerprint,
                       # e.g. a rollback restored the promotion of a model removed since: searches cannot use it
                       "missing": not model_exists(db_uri, e)})
    return {"collection": collection, "promoted": reg.promoted, "models": models,
            "unregistered": unregistered_dirs(db_uri, collection, reg, table)}


def unregistered_dirs(db_uri: str, collection: str, reg, table) -> list[dict]:
    """Model directories under the collection's models folder that its registry (at this version) does not
    name: a run in progress (``training``), one interrupted or killed before it registered its model, or
    the models of another version of the collection (``versions``: the kept versions whose registry names
    it, which a rollback to them needs). Local databases only."""
    if not is_local_uri(db_uri):
        return []
    root = models_root(db_uri, collection)
    if not root.is_dir():
        return []
    named = {(local_db_root(db_uri) / e.path).resolve() for e in reg.models}
    dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.resolve() not in named]
    if not dirs:
        return []
    by_version = _named_by_versions(db_uri, table)
    return [{"path": str(d), "training": (d / CLAIM_MARKER).exists() and not _claimable(d / CLAIM_MARKER),
             "versions": sorted(v for v, paths in by_version.items() if d.resolve() in paths)} for d in dirs]


def _promoted_by_tags(table, ids: Sequence[str]) -> dict[str, list[str]]:
    """Which of ``ids`` a tagged version of ``table`` promotes, with those tags (one manifest read per tag)."""
    tags = table.tags.list()
    if not tags:
        return {}
    ds = table.to_lance()
    held: dict[str, list[str]] = {}
    for name, info in sorted(tags.items()):
        promoted = parsed_or_empty(ds.checkout_version(int(info["version"])).metadata.get(REGISTRY_KEY)).promoted
        if promoted in ids:
            held.setdefault(promoted, []).append(f"{name} (version {info['version']})")
    return held


def _named_by_versions(db_uri: str, table) -> dict[int, set[Path]]:
    """The model directories each kept version of ``table`` names in its registry (one manifest read each)."""
    ds, root = table.to_lance(), local_db_root(db_uri)
    out: dict[int, set[Path]] = {}
    for v in ds.versions():
        registry = parsed_or_empty(ds.checkout_version(v["version"]).metadata.get(REGISTRY_KEY))
        out[int(v["version"])] = {(root / e.path).resolve() for e in registry.models}
    return out


def training_runs(db_uri: str, collection: str) -> list[Path]:
    """The model directories of ``collection`` that a live train-reranker run holds (local databases, and
    an object store's runs on this machine)."""
    root = models_root(db_uri, collection)
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir())
            if d.is_dir() and (d / CLAIM_MARKER).exists() and not _claimable(d / CLAIM_MARKER)]


#: An empty claim older than this was left by a run that died between creating it and writing its pid.
EMPTY_CLAIM_GRACE_S = 10.0


def _claimable(marker: Path) -> bool:
    """Whether the run that holds ``marker`` is gone (its claim could be taken over)."""
    import os
    import time

    try:
        text = marker.read_text().split()
        if not text:  # pid 0 would signal our own process group: "alive" for ever
            return time.time() - marker.stat().st_mtime > EMPTY_CLAIM_GRACE_S
        pid, started = int(text[0]), text[1] if len(text) > 1 else ""
        if pid <= 0:
            return True
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, FileNotFoundError):
        return True
    except PermissionError:  # alive, another user's
        pass
    return bool(started) and _started(pid) not in ("", started)  # alive, unless the pid now names another process
