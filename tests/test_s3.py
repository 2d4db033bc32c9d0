"""LanceDB on object storage, end to end against a real S3 API server (moto's server mode on 127.0.0.1).

The CLI runs as subprocesses configured only by the standard AWS_* environment variables, against the
Prefect harness's API (one server for every writer, as a deployment shares one). Real MiniLM, real flow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO, kill_after_first_batch

NOTES = EXAMPLES / "notes"


@pytest.fixture
def cli(prefect_harness, s3_server, s3_db):
    """Run `corpus-search` in a subprocess with the AWS_* variables of the test S3 server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, **s3_server.env, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "INFO"}

    def run(*args: str, timeout: float = 240, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "corpus_search.cli", *args], cwd=REPO,
                              env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=timeout)

    run.env = env
    return run


def rows(db: str, collection: str) -> list[dict]:
    from query.storage import connect

    table = connect(db).open_table(collection)
    return table.to_lance().to_table(columns=["id", "doc_id", "source", "vector"]).to_pylist()


def test_index_rerun_search_and_manage_a_collection_on_s3(cli, s3_server, s3_db, tmp_path):
    from query import Searcher
    from query.storage import connect
    from tasks.collections import delete_documents, drop_collection, list_collections
    from tasks.versions import list_versions, rollback, tag_version

    notes = tmp_path / "notes"
    shutil.copytree(NOTES, notes)
    # A low threshold, so that the ANN index is really built (and searched) on this small table.
    ann = {"CORPUS_SEARCH_ANN_MIN_ROWS": "10"}

    first = cli("index", str(notes), "--db", s3_db, "-c", "notes", "--json", extra_env=ann)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["outcome"] == "ok" and out["paragraphs_encoded"] == out["rows"] > 10
    bucket = s3_db.split("/")[2]
    assert any(k.startswith("lancedb/notes.lance/") for k in s3_server.keys(bucket))  # really in the bucket
    table = connect(s3_db).open_table("notes")
    kinds = {tuple(i.columns): i.index_type for i in table.list_indices()}
    assert ("vector",) in kinds and ("text",) in kinds, kinds  # ANN and FTS indexes live on S3 too
    got = rows(s3_db, "notes")
    assert len(got) == len({r["id"] for r in got}) == out["rows"]

    # Settings override the environment: the credentials and endpoint now come from
    # CORPUS_SEARCH_STORAGE_OPTIONS, while AWS_ENDPOINT points at a port where nothing listens.
    options = {"endpoint": s3_server.endpoint, "aws_access_key_id": s3_server.ACCESS_KEY,
               "secret_access_key": s3_server.SECRET_KEY, "allow_http": True}
    moved = {**ann, "AWS_ENDPOINT": "http://127.0.0.1:9", "AWS_SECRET_ACCESS_KEY": "", "AWS_ACCESS_KEY_ID": "",
             "CORPUS_SEARCH_STORAGE_OPTIONS": json.dumps(options)}
    rerun = cli("index", str(notes), "--db", s3_db, "-c", "notes", "--json", extra_env=moved)
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)
    assert again["paragraphs_encoded"] == 0 and again["rows"] == out["rows"]
    for run in (first, rerun):  # INFO logs of the flow and its summary: never the secret
        assert s3_server.SECRET_KEY not in run.stdout + run.stderr

    # A second process reads what the writer committed (lexical: the FTS index) ...
    hit = cli("search", "penguins", "--db", s3_db, "-c", "notes", "--mode", "lexical", "--no-rerank", "--json")
    assert hit.returncode == 0, hit.stderr
    assert "penguins" in json.loads(hit.stdout)["hits"][0]["source"]
    # ... and so does this one (dense: the ANN index).
    dense = Searcher(db_uri=s3_db, collection="notes").search("birds that cannot fly", k=3, mode="dense", rerank=False)
    assert "penguins" in dense[0].source

    (entry,) = list_collections(s3_db)
    assert entry["name"] == "notes" and entry["rows"] == out["rows"] and entry["size_bytes"] is None
    assert entry["last_indexed"]["paragraphs_encoded"] == 0

    tag_version(s3_db, "notes", "prod")
    penguins = str(notes / "penguins.txt")
    assert delete_documents("notes", sources=[penguins], db_uri=s3_db)["rows_deleted"] > 0
    assert not any(r["source"] == penguins for r in rows(s3_db, "notes"))
    rollback(s3_db, "notes", to="prod")
    assert sorted(r["id"] for r in rows(s3_db, "notes")) == sorted(r["id"] for r in got)
    assert any("prod" in v["tags"] for v in list_versions(s3_db, "notes"))

    assert drop_collection("notes", db_uri=s3_db)["collection"] == "notes"
    assert not any(k.startswith("lancedb/notes") for k in s3_server.keys(bucket))


# --------------------------------------------------------------------------- the one-writer rule on s3


@pytest.fixture
def fast_heartbeat(monkeypatch):
    """Writers beat every 0.5 s, so a dead one is noticed within seconds (the default is 10 s)."""
    from query.settings import get_settings

    monkeypatch.setenv("CORPUS_SEARCH_WRITER_HEARTBEAT_S", "0.5")
    get_settings.cache_clear()
    yield "0.5"
    get_settings.cache_clear()


def test_two_writers_of_an_s3_collection_take_turns_through_the_prefect_limit(prefect_harness, s3_db, fast_heartbeat):
    import threading

    from tasks.lock import writer_lock

    spans: list[tuple[float, float]] = []

    def write() -> None:
        with writer_lock(s3_db, "turns", timeout_s=60):
            start = time.monotonic()
            time.sleep(1.5)  # three heartbeats: a live, slow holder is never taken for a dead one
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1


def test_a_killed_s3_writer_does_not_block_the_next_one(prefect_harness, s3_server, s3_db, fast_heartbeat, caplog):
    """SIGKILL skips every release; the next writer frees the dead one's slot within a few heartbeats."""
    import signal

    from prefect.settings import PREFECT_API_URL

    from tasks.lock import writer_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tasks.lock import writer_lock\n"
         "with writer_lock(sys.argv[1], 'killed'):\n    print('held', flush=True)\n    time.sleep(600)\n", s3_db],
        cwd=REPO, env={**os.environ, **s3_server.env, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
                       "CORPUS_SEARCH_WRITER_HEARTBEAT_S": fast_heartbeat},
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
    finally:
        holder.kill()
        holder.wait(30)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tasks.lock"), writer_lock(s3_db, "killed", timeout_s=60):
        waited = time.monotonic() - start
    assert waited < 20  # three silent beats (1.5 s), not the lease (300 s) nor the timeout
    # The harness's server still knows the dead lease, so it was released through it (once, atomically).
    assert any("stopped renewing its lock" in r.getMessage() and "released its lease" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_slot_whose_lease_died_with_a_temporary_prefect_server_is_freed_once(prefect_harness, s3_db, fast_heartbeat,
                                                                              caplog):
    """Without PREFECT_API_URL each CLI run has its own temporary server, sharing only PREFECT_HOME's
    database: a killed run leaves its slot taken there and its lease nowhere. The waiter frees it by hand."""
    import uuid

    from prefect.client.orchestration import get_client

    from tasks.lock import _write_record, ensure_global_limit, lock_name, record_name, writer_lock

    limit = lock_name("orphaned", s3_db)
    ensure_global_limit(limit)
    with get_client(sync_client=True) as client:
        client.increment_concurrency_slots([limit], 1, "concurrency")  # taken, with no lease on this server
        _write_record(client, record_name("orphaned", s3_db), {"owner": "dead", "lease_id": str(uuid.uuid4()), "beats": 3,
                                                        "interval_s": 0.5, "host": "elsewhere", "pid": 1})
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tasks.lock"), writer_lock(s3_db, "orphaned", timeout_s=60):
        assert time.monotonic() - start < 20
    assert any("freed its slot" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert any("host elsewhere, pid 1" in r.getMessage() for r in caplog.records)  # the wait names the holder
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(limit).active_slots == 0  # nothing leaked either way


# --------------------------------------------------------------------------- errors say what to set


def _user_error(run: subprocess.CompletedProcess, *must: str) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    err = run.stderr
    assert "corpus-search: error:" in err and "Traceback" not in err, err[-2000:]
    for text in must:
        assert text in err, (text, err[-2000:])
    assert S3_SECRET not in run.stdout + err
    return err


S3_SECRET = "s3cr3t-never-printed-0123456789"  # tests.conftest.S3Server.SECRET_KEY


def test_an_unreachable_store_a_missing_bucket_and_bad_credentials_are_one_line_errors(cli, s3_server, s3_db):
    missing = s3_db.replace(s3_db.split("/")[2], "no-such-bucket")
    for command in (["search", "q", "-c", "notes"], ["collections"]):
        _user_error(cli(*command, "--db", missing), "'no-such-bucket'", "does not exist", "aws s3 mb")
    _user_error(cli("collections", "--db", s3_db, extra_env={"AWS_ENDPOINT": "http://127.0.0.1:9"}),
                "cannot reach the object store at http://127.0.0.1:9", "AWS_ENDPOINT")
    _user_error(cli("collections", "--db", s3_db, extra_env={"AWS_ALLOW_HTTP": ""}), "AWS_ALLOW_HTTP=true")
    with s3_server.require_auth():  # moto now checks keys: ours is unknown to its IAM
        _user_error(cli("search", "q", "-c", "notes", "--db", s3_db), "refused the credentials", "AWS_SECRET_ACCESS_KEY")
    # The index flow reports it the same way, before anything is fetched or encoded.
    err = _user_error(cli("index", str(NOTES), "--db", missing, "-c", "notes"), "'no-such-bucket'", "does not exist")
    assert "paragraphs" not in err


# --------------------------------------------------------------------------- concurrent and killed CLI runs

TOPICS = ["glaciers", "volcanoes", "rivers", "deserts", "forests", "oceans", "mountains", "islands", "caves",
          "lakes", "reefs", "storms"]


def write_notes(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for topic in TOPICS[:n]:
        (folder / f"{topic}.txt").write_text(
            f"This note is about {topic} and how {topic} shape the land around them over centuries.\n\n"
            f"A second paragraph on {topic} explains why people living nearby study them with care.\n")
    return folder


def ids(db: str, collection: str) -> list[str]:
    return [r["id"] for r in rows(db, collection)]


@pytest.mark.slow
def test_two_concurrent_cli_runs_on_one_s3_collection_take_turns_and_write_no_duplicates(cli, s3_db, tmp_path):
    import socket

    from tasks.lock import writer_lock

    notes = write_notes(tmp_path / "notes", 6)
    args = [sys.executable, "-m", "corpus_search.cli", "index", str(notes), "--db", s3_db, "-c", "both", "--json"]
    logs = [tmp_path / f"run{i}.err" for i in range(2)]
    # Both runs start while this test holds the collection's writer lock, so each of them must wait, and
    # say for whom. Left to themselves, whether the second run ever meets the first's lock is a matter of
    # timing (the first may be done before the second starts).
    with writer_lock(s3_db, "both", timeout_s=60):
        procs = []
        for log in logs:
            with log.open("w") as err:
                procs.append(subprocess.Popen(args, cwd=REPO, env=cli.env, stdout=subprocess.PIPE, stderr=err, text=True))
        deadline = time.monotonic() + 240
        while not all("waiting for it" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    errs = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for err in errs]
    holder = f"is being written by another run (host {socket.gethostname()}, pid {os.getpid()}); waiting for it"
    assert all(holder in err for err in errs)  # the wait names the holder's host and pid
    got = ids(s3_db, "both")
    assert len(got) == len(set(got)) == 12
    # Then they took turns: the second saw the first's rows and encoded nothing.
    assert sorted(json.loads(out)["paragraphs_encoded"] for out in outs) == [0, 12]


@pytest.mark.slow
def test_sigkill_of_a_run_writing_to_s3_leaves_a_table_that_opens_and_the_rerun_heals_it(cli, s3_db, tmp_path):
    """The killed run's writer slot is freed by the rerun after three missed heartbeats, not after the lease."""
    notes = write_notes(tmp_path / "notes", 12)
    fast = {"CORPUS_SEARCH_WRITER_HEARTBEAT_S": "0.5"}
    args = ["index", str(notes), "--db", s3_db, "-c", "killed", "--batch-articles", "3"]
    kill_after_first_batch(cli, args, env=fast)
    partial = ids(s3_db, "killed")  # the table opens
    assert 0 < len(partial) < 24, "the kill landed mid-run"

    start = time.monotonic()
    rerun = cli(*args, "--json", extra_env=fast)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "stopped renewing its lock" in rerun.stderr
    assert time.monotonic() - start < 180
    healed = ids(s3_db, "killed")
    assert len(healed) == len(set(healed)) == 24
    assert json.loads(rerun.stdout)["paragraphs_encoded"] == 24 - len(partial)


# --------------------------------------------------------------------------- trained re-rankers on s3


def test_a_promoted_reranker_stored_on_s3_is_downloaded_once_and_used(run_index, s3_server, s3_db, tmp_path,
                                                                      monkeypatch):
    from query import Searcher
    from query.registry import RerankerEntry, cache_root, upload_model
    from tasks.rerank_registry import record
    from tests._models import build_cross_encoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run_index([NOTES], collection="notes", db=s3_db)
    build_cross_encoder(tmp_path / "model", body="tiny-bert")
    rel = upload_model(s3_db, tmp_path / "model", "_rerankers/notes/m1")
    bucket = s3_db.split("/")[2]
    assert any(k.startswith("lancedb/_rerankers/notes/m1/") for k in s3_server.keys(bucket))
    record(s3_db, "notes", RerankerEntry(id="m1", path=rel, created="2026-11-28T00:00:00Z", base="tiny-bert",
                                         signal="judgments", fingerprint="0", alpha=1.0), promote=True)

    searcher = Searcher(db_uri=s3_db, collection="notes")
    assert searcher.active_reranker().name == "notes re-ranker m1"
    local = cache_root(s3_db) / rel
    assert (local / "config.json").is_file()
    hits = searcher.search("penguins", k=2)
    assert hits and all(0.0 <= h.score <= 1.0 for h in hits)
    # Downloaded once: with the objects gone from the bucket, a new searcher still loads the cached copy.
    for key in s3_server.keys(bucket):
        if key.startswith("lancedb/_rerankers/"):
            s3_server.client().delete_object(Bucket=bucket, Key=key)
    assert Searcher(db_uri=s3_db, collection="notes").active_reranker().name == "notes re-ranker m1"


def test_removing_a_reranker_on_s3_deletes_its_objects_and_keeps_the_promoted_one(run_index, s3_server, s3_db,
                                                                                  tmp_path, monkeypatch):
    from query.registry import RerankerEntry, cache_root, upload_model
    from tasks.rerank_registry import listing, record, remove
    from tests._models import build_cross_encoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run_index([NOTES], collection="notes", db=s3_db)
    build_cross_encoder(tmp_path / "model", body="tiny-bert")
    bucket = s3_db.split("/")[2]
    for model_id in ("m1", "m2"):
        rel = upload_model(s3_db, tmp_path / "model", f"_rerankers/notes/{model_id}")
        record(s3_db, "notes", RerankerEntry(id=model_id, path=rel, created="2026-11-28T00:00:00Z", base="tiny-bert",
                                             signal="judgments", fingerprint="0", alpha=1.0), promote=model_id == "m1")
    with pytest.raises(Exception, match="is the promoted one"):
        remove(s3_db, "notes", ["m1"])
    assert remove(s3_db, "notes", ["m2"]) == [f"{s3_db}/_rerankers/notes/m2"]
    keys = s3_server.keys(bucket)
    assert not [k for k in keys if k.startswith("lancedb/_rerankers/notes/m2/")]
    assert [k for k in keys if k.startswith("lancedb/_rerankers/notes/m1/")]
    assert not (cache_root(s3_db) / "_rerankers" / "notes" / "m2").exists()
    assert [m["id"] for m in listing(s3_db, "notes")["models"]] == ["m1"]


def test_train_reranker_on_an_s3_collection_uploads_the_model_and_drop_removes_it(run_index, s3_server, s3_db,
                                                                                   tmp_path, monkeypatch):
    from flows.train_reranker import train_reranker
    from query import Searcher
    from query.registry import cache_root
    from tasks.collections import drop_collection
    from tasks.rerank_registry import listing
    from tests._models import build_cross_encoder

    bucket = s3_db.split("/")[2]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "trainer-cache"))
    run_index([EXAMPLES / "articles", NOTES], collection="notes", db=s3_db)
    base = build_cross_encoder(tmp_path / "base", num_labels=1, body="tiny-bert")
    result = train_reranker("notes", db_uri=s3_db, base=str(base), self_supervised=True, promote="always",
                            time_budget=5)
    prefix = f"lancedb/_rerankers/notes/{result['id']}/"
    assert result["promoted"] and result["stored"] == f"{s3_db}/_rerankers/notes/{result['id']}"
    assert any(k == prefix + "config.json" for k in s3_server.keys(bucket))
    assert not [k for k in s3_server.keys(bucket) if "/checkpoints/" in k or k.endswith(".corpus-search-complete")]

    # Another machine (another cache): listing downloads nothing; a search downloads the promoted model once.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "reader-cache"))
    listed = listing(s3_db, "notes")
    assert listed["promoted"] == result["id"] and listed["models"][0]["path"] == result["stored"]
    assert not cache_root(s3_db).exists()
    searcher = Searcher(db_uri=s3_db, collection="notes")
    assert searcher.active_reranker().name == f"notes re-ranker {result['id']}"
    assert (cache_root(s3_db) / "_rerankers" / "notes" / result["id"] / "config.json").is_file()

    dropped = drop_collection("notes", db_uri=s3_db)
    assert dropped["rerankers_removed"] == [f"{s3_db}/_rerankers/notes"]
    # (pyarrow keeps an empty "lancedb/_rerankers/" directory marker; no model object is left)
    assert [k for k in s3_server.keys(bucket) if k.startswith("lancedb/_rerankers/notes")] == []
    assert not (cache_root(s3_db) / "_rerankers" / "notes").exists()


def test_two_machines_training_in_one_second_never_share_a_prefix_nor_an_entrys_files(run_index, s3_server, s3_db,
                                                                                        tmp_path, monkeypatch):
    """Ids are unique per machine only: another machine's run of the same second uploaded into the same prefix,
    and removing its entry deleted the promoted model's files."""
    from query.registry import RerankerEntry, RerankerRegistryError
    from tasks.rerank_registry import publish, record
    from tests._models import build_cross_encoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run_index([NOTES], collection="notes", db=s3_db)
    build_cross_encoder(tmp_path / "model", body="tiny-bert")
    first = publish(s3_db, "notes", "20261207-120000-judgments", tmp_path / "model")
    second = publish(s3_db, "notes", "20261207-120000-judgments", tmp_path / "model")  # the other machine's
    assert first == "_rerankers/notes/20261207-120000-judgments" and second == first + "-m2"
    entry = RerankerEntry(id="a", path=first, created="2026-12-07T12:00:00Z", base="tiny-bert", signal="judgments",
                          fingerprint="0", alpha=1.0)
    record(s3_db, "notes", entry, promote=True)
    with pytest.raises(RerankerRegistryError, match="already registered as another model"):
        record(s3_db, "notes", RerankerEntry(**{**entry.__dict__, "id": "b"}), promote=False)


def test_object_store_uris_and_endpoints_a_store_would_misread_are_refused_in_one_line(s3_server, monkeypatch):
    from query.errors import DatabaseLocationError
    from query.storage import check_db_uri, connect
    from tasks.lock import lock_name, record_name

    for uri in ("s3://bucket/h#x", "s3://bucket/q?x=1", "s3://bucket/pct%20x"):
        with pytest.raises(DatabaseLocationError, match="in its path"):
            check_db_uri(uri)
    monkeypatch.setenv("AWS_ENDPOINT", "127.0.0.1:9")  # no scheme: the store panicked in Rust (exit 1)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with pytest.raises(DatabaseLocationError, match="has no scheme"):
        connect("s3://bucket/db")
    # One collection name in two databases is two writers; a trailing slash names the same database.
    assert lock_name("c", "s3://a/db") != lock_name("c", "s3://b/db") == lock_name("c", "s3://b/db/")
    assert record_name("c", "s3://a/db") != record_name("c", "s3://b/db")


def test_a_flow_refuses_credentials_in_its_settings_overrides():
    from query.errors import InvalidQueryError
    from query.settings import refuse_secret_overrides

    with pytest.raises(InvalidQueryError, match="credentials are never a flow parameter"):
        refuse_secret_overrides({"storage_options": {"aws_secret_access_key": "x"}})
    refuse_secret_overrides({"min_paragraph_chars": 10})
