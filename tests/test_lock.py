"""One writer per collection."""

from __future__ import annotations

import threading
import time

import pytest

from tasks.lock import WriterBusyError, writer_lock


def test_two_writers_of_one_collection_never_overlap(tmp_path):
    db = str(tmp_path / "db")
    spans: list[tuple[float, float]] = []

    def write() -> None:
        with writer_lock(db, "c"):
            start = time.monotonic()
            time.sleep(0.3)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1


def test_different_collections_do_not_block_each_other(tmp_path):
    db = str(tmp_path / "db")
    with writer_lock(db, "a"), writer_lock(db, "b", timeout_s=0.2):
        pass


def test_a_busy_collection_times_out_with_a_clear_error(tmp_path):
    db = str(tmp_path / "db")
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with writer_lock(db, "c"):
            holding.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(5)
    try:
        with pytest.raises(WriterBusyError, match="still locked by another writer"):
            with writer_lock(db, "c", timeout_s=0.3):
                pass
    finally:
        release.set()
        t.join()


def test_an_object_store_lock_on_a_temporary_server_warns_that_it_keeps_out_this_machines_writers_only(caplog):
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.lock import _warn_if_machine_local_server

    with temporary_settings(updates={PREFECT_API_URL: None}), caplog.at_level(logging.WARNING):
        _warn_if_machine_local_server()
    assert "keeps out the writers of this machine only" in caplog.text and "PREFECT_API_URL" in caplog.text
    caplog.clear()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}), caplog.at_level(logging.WARNING):
        _warn_if_machine_local_server()
    assert "machine only" not in caplog.text
