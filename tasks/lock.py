"""One writer per collection: an exclusive lock held for the whole index run.

Concurrent ``merge_insert`` writers can duplicate rows, so every writer takes this lock first.
A local database uses an OS file lock beside the data; object-store URIs use a Prefect global
concurrency limit (one slot per collection), which the scheduled deployments also use.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator

from query.errors import CorpusSearchError, DatabaseLocationError
from query.schema import validate_collection_name
from query.storage import check_db_uri, is_local_uri, local_path

__all__ = ["WriterBusyError", "ensure_global_limit", "is_local_uri", "lock_name", "writer_lock"]

log = logging.getLogger(__name__)


class WriterBusyError(CorpusSearchError, RuntimeError):
    """Another writer holds the collection and did not release it in time."""


def lock_name(collection: str) -> str:
    """Name of the Prefect concurrency limit guarding ``collection``."""
    return f"corpus-search-writer-{collection}"


def _logger():
    """The Prefect run logger inside a run (so the wait shows in the UI), else this module's logger."""
    try:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        return get_run_logger()
    except (ImportError, MissingContextError):
        return log


def ensure_global_limit(name: str, limit: int = 1) -> None:
    """Create the Prefect global concurrency limit ``name`` (one slot) if the server lacks it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


@contextlib.contextmanager
def writer_lock(db_uri: str, collection: str, *, timeout_s: float = 3600.0, poll_s: float = 0.2) -> Iterator[None]:
    """Hold the collection's writer lock; wait up to ``timeout_s`` for another writer, then fail clearly.

    The collection name and database location are checked first, before any file is created.
    """
    validate_collection_name(collection)
    check_db_uri(db_uri, write=True)
    if not is_local_uri(db_uri):
        from prefect.concurrency.sync import concurrency

        ensure_global_limit(lock_name(collection))
        with concurrency(lock_name(collection), occupy=1, timeout_seconds=timeout_s, strict=True):
            yield
        return
    root = local_path(db_uri)
    path = root / f".{collection}.writer.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # e.g. a read-only file system, which permission bits (and root) do not show
        raise DatabaseLocationError(
            f"cannot create the writer lock {str(path)!r} of collection {collection!r}: {exc.strerror or exc}. "
            "Give a database directory this user can write (--db DIR or CORPUS_SEARCH_DB_URI)"
        ) from exc
    try:
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    _logger().warning("collection %r is being written by another run; waiting for it", collection)
                    announced = True
                if time.monotonic() > deadline:
                    raise WriterBusyError(
                        f"collection {collection!r} is still locked by another writer after {timeout_s:.0f}s "
                        f"({path}); try again when that run has finished"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
