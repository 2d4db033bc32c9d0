"""LanceDB on object storage, end to end against a real S3 API server (moto's server mode on 127.0.0.1).

The CLI runs as subprocesses configured only by the standard AWS_* environment variables, against the
Prefect harness's API (one server for every writer, as a deployment shares one). Real MiniLM, real flow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO

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
    notes = tmp_path / "notes"
    shutil.copytree(NOTES, notes)
    # A low threshold, so that the ANN index is really built (and searched) on this small table.
    ann = {"CORPUS_SEARCH_ANN_MIN_ROWS": "10"}

    first = cli("index", str(notes), "--db", s3_db, "-c", "notes", "--json", extra_env=ann)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["outcome"] == "ok" and out["paragraphs_encoded"] == out["rows"] > 10
    # The data really is in the bucket, under the URI's prefix.
    bucket = s3_db.split("/")[2]
    assert any(k.startswith("lancedb/notes.lance/") for k in s3_server.keys(bucket))

    from query.storage import connect

    table = connect(s3_db).open_table("notes")
    kinds = {tuple(i.columns): i.index_type for i in table.list_indices()}
    assert ("vector",) in kinds and ("text",) in kinds, kinds  # ANN and FTS indexes live on S3 too
    got = rows(s3_db, "notes")
    assert len(got) == len({r["id"] for r in got}) == out["rows"]

    rerun = cli("index", str(notes), "--db", s3_db, "-c", "notes", "--json", extra_env=ann)
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)
    assert again["paragraphs_encoded"] == 0 and again["rows"] == out["rows"]

    # A second process reads what the writer committed: lexical (FTS) and dense (ANN) retrieval.
    for mode, query in (("lexical", "penguins"), ("dense", "birds that cannot fly and live in the cold")):
        hit = cli("search", query, "--db", s3_db, "-c", "notes", "--mode", mode, "--no-rerank", "--json", "-k", "3")
        assert hit.returncode == 0, hit.stderr
        hits = json.loads(hit.stdout)["hits"]
        assert hits and "penguins" in hits[0]["source"], (mode, hits)

    listed = cli("collections", "--db", s3_db, "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["name"] == "notes" and entry["rows"] == out["rows"] and entry["size_bytes"] is None

    penguins = str(notes / "penguins.txt")
    deleted = cli("delete", "notes", "--source", penguins, "--db", s3_db, "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["rows_deleted"] > 0
    assert not any(r["source"] == penguins for r in rows(s3_db, "notes"))

    tagged = cli("tag", "notes", "prod", "--db", s3_db)
    assert tagged.returncode == 0, tagged.stderr
    versions = cli("versions", "notes", "--db", s3_db, "--json")
    assert versions.returncode == 0, versions.stderr
    assert "prod" in versions.stdout

    dropped = cli("drop", "notes", "--yes", "--db", s3_db, "--json")
    assert dropped.returncode == 0, dropped.stderr
    assert not any(k.startswith("lancedb/notes") for k in s3_server.keys(bucket))
