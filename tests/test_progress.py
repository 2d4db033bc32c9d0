"""Index progress: a bar over paragraphs encoded that moves per encode chunk, and a summary printed once.

Real MiniLM, real flow (Prefect test harness); the CLI run is a subprocess against the harness's API,
with Prefect's console logging at INFO, as a user sees it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

TOPICS = ["glaciers", "volcanoes", "deserts", "rivers", "coral reefs", "forests"]


def write_notes(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for topic in TOPICS[:n]:
        (folder / f"{topic.replace(' ', '-')}.txt").write_text(
            f"This note is about {topic} and how {topic} shape the land around them over centuries.\n\n"
            f"A second paragraph on {topic} explains why people living nearby study them with care.\n"
        )
    return folder


class Recorder:
    """An ``EncodeProgress`` that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def planned(self, n: int) -> None:
        self.calls.append(("planned", n))

    def encoded(self, n: int) -> None:
        self.calls.append(("encoded", n))


def test_encode_in_chunks_reports_the_plan_then_every_chunk():
    from query.models import bi_encoder_from_settings
    from query.settings import Settings
    from tasks.encode import encode_in_chunks, reporting_to

    enc = bi_encoder_from_settings(Settings())
    texts = [f"paragraph number {i} about rivers" for i in range(10)]
    explicit = Recorder()
    vectors, _ = encode_in_chunks(enc, texts, 4, progress=explicit)
    assert explicit.calls == [("planned", 10), ("encoded", 4), ("encoded", 4), ("encoded", 2)]
    assert vectors.shape == (10, enc.dim)

    # Someone watching: a big chunk is reported in steps of MIN_PROGRESS_STEP (256) texts, same vectors.
    stepped = Recorder()
    many = [f"short text {i}" for i in range(300)]
    whole, _ = encode_in_chunks(enc, many, 2048)
    steps, _ = encode_in_chunks(enc, many, 2048, progress=stepped)
    assert stepped.calls == [("planned", 300), ("encoded", 256), ("encoded", 44)]
    assert abs(whole - steps).max() < 1e-4

    ambient = Recorder()  # how the index flow reaches the encode task: no task parameter involved
    with reporting_to(ambient):
        encode_in_chunks(enc, texts[:3], 2)
    encode_in_chunks(enc, texts[:3], 2)  # after the block nobody is told
    assert ambient.calls == [("planned", 3), ("encoded", 2), ("encoded", 1)]


def test_the_bar_counts_paragraphs_planned_and_encoded_and_articles_read():
    from flows.progress import IndexProgress
    from tasks.encode import _reporter

    out = io.StringIO()
    bar = IndexProgress(file=out)
    assert _reporter.get() is bar
    bar.planned(7)
    bar.encoded(4)
    bar.articles_read(3)
    bar.planned(5)  # a later batch is planned: the total grows
    bar.encoded(3)
    assert (bar.bar.n, bar.bar.total) == (7, 12)
    bar.close()
    bar.close()  # idempotent
    assert _reporter.get() is None
    last = out.getvalue().split("\r")[-1]
    assert "7/12" in last and "3 articles read" in last and "para/s" in last


def test_the_flow_drives_the_bar_with_encoded_paragraphs(prefect_harness, db_uri, tmp_path, capsys, monkeypatch):
    from flows.index_corpus import index_corpus
    from query.settings import get_settings
    from tasks import stages
    from tasks.encode import _reporter

    bar_open_during_refresh = []
    refresh = stages.refresh_indexes

    def watched_refresh(settings):  # the real refresh; it only notes whether the bar still runs
        bar_open_during_refresh.append(_reporter.get() is not None)
        return refresh(settings)

    monkeypatch.setattr(stages, "refresh_indexes", watched_refresh)
    monkeypatch.setenv("CORPUS_SEARCH_ENCODE_CHUNK_SIZE", "3")
    get_settings.cache_clear()
    try:
        result = index_corpus([str(write_notes(tmp_path / "notes"))], collection="prog", db_uri=db_uri, progress=True)
    finally:
        get_settings.cache_clear()
    n = result["paragraphs_encoded"]
    assert n == 12
    err = capsys.readouterr().err
    frames = [f for f in re.split(r"[\r\n]", err) if "encoding" in f]
    assert frames and f"{n}/{n}" in frames[-1] and "6 articles read" in frames[-1]
    assert bar_open_during_refresh == [False]  # closed when encoding ended: its final rate is the encoding's


def test_cli_index_shows_the_bar_on_stderr_and_the_summary_once(prefect_harness, db_uri, tmp_path):
    from prefect.settings import PREFECT_API_URL

    notes = write_notes(tmp_path / "notes")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "corpus_search.cli", "index", str(notes), "-c", "once", "--db", db_uri]
    text = subprocess.run([*cmd, "--progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert text.returncode == 0, text.stderr[-3000:]
    both = text.stdout + text.stderr
    assert both.count("paragraphs:") == 1 and "paragraphs: 12 added" in text.stdout
    assert "Finished in state" in text.stderr  # Prefect's console logging was on: the summary was not in it
    frames = [f for f in re.split(r"[\r\n]", text.stderr) if "encoding" in f and "para" in f]
    assert frames and "12/12" in frames[-1] and "6 articles read" in frames[-1]
    assert "12/12" not in text.stdout and "\r" not in text.stdout

    # The summary still reaches the run's logs in Prefect (the UI), just not the console.
    from prefect.client.orchestration import get_client

    from prefect.client.schemas.sorting import LogSort

    # Newest first: the session's harness holds every earlier test's logs, and oldest-first put this run's
    # past the limit in a full suite. Polled briefly, since the server may store a batch just after the exit.
    deadline = time.monotonic() + 15
    while True:
        with get_client(sync_client=True) as client:
            messages = [log.message for log in client.read_logs(limit=200, sort=LogSort.TIMESTAMP_DESC)]
        found = any("collection once: 12 rows" in m and "paragraphs: 12 added" in m for m in messages)
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found


def test_cli_index_json_keeps_stdout_one_json_object_with_the_bar_on(prefect_harness, db_uri, tmp_path, capsys):
    from corpus_search.cli import main

    notes = write_notes(tmp_path / "notes", 2)
    assert main(["index", str(notes), "-c", "js", "--db", db_uri, "--progress", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["paragraphs_encoded"] == 4
    assert "4/4" in [f for f in re.split(r"[\r\n]", err) if "encoding" in f][-1]
