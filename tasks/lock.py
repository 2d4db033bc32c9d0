"""One writer per collection: an exclusive lock held for the whole index run.

Concurrent ``merge_insert`` writers can duplicate rows, so every writer takes this lock first.
A local database uses an OS file lock beside the data. Object-store URIs (``s3://``) use a Prefect
global concurrency limit with one slot per collection, held under a lease (``writer_lease_s``), so every
writer that talks to the same Prefect server (or, without one, shares PREFECT_HOME) takes turns.

A writer killed with SIGKILL never releases its slot. A Prefect server's repossessor frees it once the
lease expires, but Prefect's temporary servers (the CLI without PREFECT_API_URL, the test harness) run no
repossessor, and a temporary server dies with its run, lease and all. So the holder also publishes a
heartbeat (a Prefect variable, renewed every ``writer_heartbeat_s``), and a waiter that sees it stand
still for three beats frees the dead holder's slot itself: through its lease when the server still
knows it (atomic: only one waiter frees it), else by hand, once, after claiming the heartbeat record.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import logging
import os
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterator

from query.errors import CorpusSearchError, DatabaseLocationError
from query.schema import validate_collection_name
from query.storage import check_db_uri, is_local_uri, local_path

__all__ = ["WriterBusyError", "ensure_global_limit", "is_local_uri", "lock_name", "writer_lock"]

log = logging.getLogger(__name__)


class WriterBusyError(CorpusSearchError, RuntimeError):
    """Another writer holds the collection and did not release it in time."""


def lock_name(collection: str, db_uri: str | None = None) -> str:
    """Name of the Prefect concurrency limit guarding ``collection`` (of the database ``db_uri``: collections of
    one name in two databases are two writers, which waited for each other and shared one heartbeat record)."""
    return f"corpus-search-writer-{collection}" + (f"-{_db_key(db_uri)}" if db_uri else "")


def _db_key(db_uri: str) -> str:
    """A short, stable key of a database URI (a trailing slash names the same database)."""
    return f"{zlib.crc32(db_uri.rstrip('/').encode()):08x}"


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


def _warn_if_machine_local_server() -> None:
    """Say so when an object-store lock is held by a temporary Prefect server: it excludes only the writers
    of this machine that share its ``PREFECT_HOME``. Two machines writing one ``s3://`` collection, each
    through its own temporary server, both held the lock at once (a commit conflict stopped one)."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        _logger().warning(
            "the writer lock of an object-store database is held by the Prefect server, and this run has a "
            "temporary one (no PREFECT_API_URL): it keeps out the writers of this machine only. Where several "
            "machines write this database, point them all at one Prefect server (PREFECT_API_URL)")


@contextlib.contextmanager
def writer_lock(db_uri: str, collection: str, *, timeout_s: float = 3600.0, poll_s: float = 0.2) -> Iterator[None]:
    """Hold the collection's writer lock; wait up to ``timeout_s`` for another writer, then fail clearly.

    The collection name and database location are checked first, before any file is created.
    """
    validate_collection_name(collection)
    check_db_uri(db_uri, write=True)
    if not is_local_uri(db_uri):
        _warn_if_machine_local_server()
        with _object_store_lock(collection, timeout_s=timeout_s, poll_s=poll_s, db_uri=db_uri):
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


# --------------------------------------------------------------------------- object stores: a Prefect limit


def record_name(collection: str, db_uri: str | None = None) -> str:
    """Name of the Prefect variable that holds the heartbeat of ``collection``'s writer (of ``db_uri``).

    Variable names allow letters, digits, '-' and '_' only; the checksum keeps 'a.b' and 'a_b' apart.
    """
    return (f"corpus_search_writer_{re.sub(r'[^A-Za-z0-9_-]', '_', collection)}_{zlib.crc32(collection.encode()):08x}"
            + (f"_{_db_key(db_uri)}" if db_uri else ""))


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _read_record(client, name: str) -> dict | None:
    variable = client.read_variable_by_name(name)
    return variable.value if variable is not None and isinstance(variable.value, dict) else None


def _write_record(client, name: str, value: dict) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.create_variable(VariableCreate(name=name, value=value))
    except ObjectAlreadyExists:
        client.update_variable(VariableUpdate(name=name, value=value))


def _delete_record(client, name: str, owner: str) -> None:
    """Delete the record if ``owner`` still owns it (a waiter may have freed a stalled holder's slot)."""
    from prefect.exceptions import ObjectNotFound

    current = _read_record(client, name)
    if current is not None and current.get("owner") == owner:
        with contextlib.suppress(ObjectNotFound):
            client.delete_variable_by_name(name)


class _Staleness:
    """Tells a dead holder from a slow one by watching its heartbeat record change, on this machine's clock
    alone (holders and waiters on different machines need not agree on the time)."""

    def __init__(self, default_interval_s: float) -> None:
        self.default = default_interval_s
        self.key: object = ()
        self.since = time.monotonic()

    def stale_for(self, record: dict | None) -> float | None:
        """Seconds the holder has been silent past three beats, or None while it looks alive."""
        key = (record.get("owner"), record.get("beats")) if record else None
        now = time.monotonic()
        if key != self.key:
            self.key, self.since = key, now
            return None
        interval = float(record.get("interval_s", self.default)) if record else self.default
        silent = now - self.since
        return silent if silent > 3 * interval else None


def _free_dead_holder(client, limit: str, record_key: str, record: dict | None, me: str, silent_s: float) -> str:
    """Free the slot of a holder that stopped beating; returns how (for the log)."""
    from uuid import UUID

    lease_id = (record or {}).get("lease_id")
    if lease_id:
        try:
            client.renew_concurrency_lease(UUID(lease_id), lease_duration=60)
        except Exception as exc:  # noqa: BLE001 - 410: this server does not know the lease
            if _status(exc) not in (404, 410):
                raise
        else:
            # The server still holds the lease: releasing it frees the slot once, however many waiters try.
            client.release_concurrency_slots_with_lease(UUID(lease_id))
            _delete_record(client, record_key, record["owner"])
            return "released its lease"
    # The lease died with a temporary Prefect server (or the holder died before publishing it): free one
    # slot by hand. Claim the record first and look again, so that of several waiters only one does it.
    claim = {"owner": f"repossess:{me}", "freeing": (record or {}).get("owner"), "beats": -1}
    _write_record(client, record_key, claim)
    time.sleep(1.0)
    if _read_record(client, record_key) != claim:
        return "left it to another waiter"
    client.release_concurrency_slots([limit], 1, max(silent_s, 1.0))  # occupancy must be > 0
    _delete_record(client, record_key, claim["owner"])
    return "freed its slot"


class _Heartbeat(threading.Thread):
    """Renews the writer's lease and bumps its heartbeat record until stopped."""

    def __init__(self, record_key: str, record: dict, lease_id, lease_s: float, interval_s: float) -> None:
        super().__init__(name="corpus-search-writer-heartbeat", daemon=True)
        self.record_key, self.record, self.lease_id = record_key, dict(record), lease_id
        self.lease_s, self.interval_s = lease_s, interval_s
        self.stopped = threading.Event()
        # The starting thread's context (its Prefect run): a thread's log lines reach the run's logs in the UI
        # only through it (without, Prefect dropped "another run took over the writer lock" as run-less).
        self._context = contextvars.copy_context()

    def run(self) -> None:
        self._context.run(self._beat)

    def _beat(self) -> None:
        from prefect.client.orchestration import get_client

        renewed = time.monotonic()
        # Its own client, made outside the copied context (get_client would return the run's own one from it):
        # httpx clients are not shared across threads.
        with contextvars.Context().run(get_client, sync_client=True) as client:
            while not self.stopped.wait(self.interval_s):
                try:
                    current = _read_record(client, self.record_key)
                    if current is not None and current.get("owner") != self.record["owner"]:
                        # A waiter took this run for dead (it missed three beats) and freed its slot. Writing
                        # the record back would hide that; stop beating and say so, loudly.
                        log.error("another run took over the writer lock after this run missed its heartbeats "
                                  "(%s): its writes may now overlap; rerun the index once both have finished",
                                  current.get("owner"))
                        return
                    if time.monotonic() - renewed > self.lease_s / 3:
                        client.renew_concurrency_lease(self.lease_id, lease_duration=self.lease_s)
                        renewed = time.monotonic()
                    self.record["beats"] += 1
                    _write_record(client, self.record_key, self.record)
                except Exception as exc:  # noqa: BLE001 - a blip must not kill the run; say so loudly
                    log.error("could not renew the writer lock (%s: %s); if this persists another writer may "
                              "take over", type(exc).__name__, exc)


def _acquire(client, limit: str, lease_s: float, holder):
    """The lease id, or None when the slot is taken (HTTP 423)."""
    try:
        response = client.increment_concurrency_slots_with_lease([limit], 1, "concurrency", lease_s, holder)
    except Exception as exc:  # noqa: BLE001 - 423 Locked: another writer holds it
        if _status(exc) == 423:
            return None
        raise
    from uuid import UUID

    return UUID(response.json()["lease_id"])


@contextlib.contextmanager
def _object_store_lock(collection: str, *, timeout_s: float, poll_s: float,
                       db_uri: str | None = None) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder

    from query.settings import get_settings

    settings = get_settings()
    lease_s = max(60.0, settings.writer_lease_s)  # Prefect refuses leases under a minute
    interval_s = settings.writer_heartbeat_s
    limit, key = lock_name(collection, db_uri), record_name(collection, db_uri)
    me = uuid.uuid4().hex
    ensure_global_limit(limit)
    holder = None
    with contextlib.suppress(Exception):  # inside a flow run the lease names it (the UI shows who holds it)
        from prefect.runtime import flow_run

        if flow_run.id:
            holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id)
    deadline = time.monotonic() + timeout_s
    watch = _Staleness(interval_s)
    announced = False
    with get_client(sync_client=True) as client:
        while (lease_id := _acquire(client, limit, lease_s, holder)) is None:
            record = _read_record(client, key)
            if not announced:
                who = f" (host {record.get('host')}, pid {record.get('pid')})" if record else ""
                _logger().warning("collection %r is being written by another run%s; waiting for it", collection, who)
                announced = True
            silent = watch.stale_for(record)
            if silent is not None:
                how = _free_dead_holder(client, limit, key, record, me, silent)
                _logger().warning("the writer of collection %r stopped renewing its lock %.0fs ago (killed?): "
                                  "%s", collection, silent, how)
                watch = _Staleness(interval_s)
                continue
            if time.monotonic() > deadline:
                raise WriterBusyError(
                    f"collection {collection!r} is still being written by another run after {timeout_s:.0f}s "
                    f"(Prefect concurrency limit {limit!r}); try again when that run has finished"
                )
            time.sleep(max(poll_s, 0.5))
        record = {"owner": me, "lease_id": str(lease_id), "host": socket.gethostname(), "pid": os.getpid(),
                  "beats": 0, "interval_s": interval_s}
        beat = None
        try:
            _write_record(client, key, record)
            beat = _Heartbeat(key, record, lease_id, lease_s, interval_s)
            beat.start()
            yield
        finally:
            if beat is not None:
                beat.stopped.set()
                beat.join(10)
            with contextlib.suppress(Exception):  # the slot must go back even if the record cannot be removed
                _delete_record(client, key, me)
            client.release_concurrency_slots_with_lease(lease_id)
