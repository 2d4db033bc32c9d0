"""Fault injection against the index flow and the `corpus-search index` CLI: nothing lost, one bad input never
sinks a run, exit codes a cron job can read, and a SIGKILL at any moment heals on the next run.

Real flow, real MiniLM, real LanceDB, the real Prefect harness; the CLI runs as a subprocess against the
harness's API (or, for the orphan check, its own temporary server).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lancedb
import pytest

from flows.summary import NothingIndexedError
from tests.conftest import REPO, kill_after_first_batch, table_rows

TOPICS = ["glaciers", "volcanoes", "rivers", "deserts", "forests", "oceans", "mountains", "islands", "caves",
          "lakes", "reefs", "storms"]


def write_notes(folder: Path, n: int = 6, variant: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, topic in enumerate(TOPICS[:n]):
        (folder / f"{topic}.txt").write_text(
            f"This note is about {topic}{variant} and how {topic} shape the land around them over centuries.\n\n"
            f"A second paragraph on {topic}{variant} explains why people living nearby study them with care.\n"
        )
    return folder


def ids(db_uri: str, collection: str = "test") -> list[str]:
    return [r["id"] for r in table_rows(db_uri, collection)]


# --------------------------------------------------------------------------- empty sources and mass deletes


def test_an_existing_but_empty_source_directory_keeps_every_row_and_the_run_fails(run_index, db_uri, tmp_path):
    notes = write_notes(tmp_path / "mnt")
    run_index([notes])
    before = sorted(ids(db_uri))
    for f in notes.iterdir():
        f.unlink()  # an unmounted mount point: the directory is there, empty
    with pytest.raises(NothingIndexedError) as err:
        run_index([notes])
    summary = err.value.summary
    assert summary["outcome"] == "failed" and summary["articles_deleted"] == 0
    assert "--allow-empty-source" in summary["failures"][0]["error"]
    assert sorted(ids(db_uri)) == before


def test_allow_empty_source_really_deletes_the_articles_of_an_empty_source(run_index, db_uri, tmp_path):
    notes = write_notes(tmp_path / "mnt")
    run_index([notes])
    for f in notes.iterdir():
        f.unlink()
    summary = run_index([notes], allow_empty_source=True)
    assert summary["articles_deleted"] == 6 and summary["outcome"] == "ok"
    assert ids(db_uri) == []


def test_files_emptied_in_place_keep_their_rows_and_each_is_a_failure(run_index, db_uri, tmp_path):
    """A crashed editor, a failed sync or a full disk leaves a file at 0 bytes: not evidence that its text should go."""
    notes = write_notes(tmp_path / "notes")
    run_index([notes])
    before = sorted(ids(db_uri))
    emptied = sorted(notes.iterdir())[:4]
    for f in emptied[:3]:
        f.write_bytes(b"")
    emptied[3].write_text("  \n\n ")
    (notes / "new-and-empty.txt").write_bytes(b"")  # never held text: nothing to keep, no failure
    (notes / "short.txt").write_text("Buy milk.")  # under the paragraph minimum, and a document all the same
    summary = run_index([notes])
    assert set(before) < set(ids(db_uri)) and summary["paragraphs_deleted"] == 0
    assert summary["paragraphs_added"] == 1  # the short note, whole
    from corpus_search import list_collections

    assert [c["documents"] for c in list_collections(db_uri)] == [7]  # documents you can find
    failed = {Path(f["doc_id"]).name: f["error"] for f in summary["failures"]}
    assert sorted(failed) == sorted(f.name for f in emptied), failed
    assert all("2 indexed paragraphs are kept" in e for e in failed.values()), failed
    emptied[0].write_text("Glaciers are rivers of ice that carve valleys as they move downhill very slowly.\n")
    assert run_index([notes])["paragraphs_added"] == 1  # new text replaces the kept rows as usual


def test_a_truncated_gzip_dump_is_that_sources_failure_and_keeps_its_rows(run_index, db_uri, tmp_path):
    import gzip

    dump, notes = tmp_path / "wiki.jsonl.gz", write_notes(tmp_path / "notes", n=2)
    whole = gzip.compress("".join(json.dumps({"id": f"r{i}", "title": t, "paragraphs": [
        f"All about {t} and their long history on this planet, record {i}."]}) + "\n" for i, t in enumerate(TOPICS)).encode())
    dump.write_bytes(whole)
    run_index([dump])
    before = sorted(ids(db_uri))
    dump.write_bytes(whole[: len(whole) * 2 // 3])  # a download or copy cut short: no end-of-stream marker
    summary = run_index([dump, notes])  # the source after it is still read
    assert summary["outcome"] == "partial" and len(summary["failures"]) == 1, summary
    assert "cannot read source" in summary["failures"][0]["error"]
    assert "end-of-stream" in summary["failures"][0]["error"]
    assert summary["articles_deleted"] == 0 and set(before) <= set(ids(db_uri))
    assert len(ids(db_uri)) == len(before) + 4  # the two notes, two paragraphs each


def test_an_empty_dump_file_keeps_the_rows_it_indexed(run_index, db_uri, tmp_path):
    dump = tmp_path / "wiki.jsonl"
    dump.write_text("".join(json.dumps({"id": t, "title": t, "paragraphs": [f"All about {t} and their long "
                                         "history on this planet."]}) + "\n" for t in TOPICS[:4]))
    run_index([dump])
    dump.write_text("")  # truncated by a failed export
    with pytest.raises(NothingIndexedError):
        run_index([dump])
    assert len(ids(db_uri)) == 4


def test_a_run_that_would_delete_most_of_the_collection_deletes_nothing_until_confirmed(run_index, db_uri, tmp_path):
    notes = write_notes(tmp_path / "notes")
    run_index([notes])
    for topic in TOPICS[:4]:  # 4 of 6 articles vanish: 67 % of the rows
        (notes / f"{topic}.txt").unlink()
    summary = run_index([notes])
    assert summary["outcome"] == "partial" and summary["articles_deleted"] == 0
    assert "--allow-mass-delete" in summary["failures"][0]["error"] and "8 of 12 rows" in summary["failures"][0]["error"]
    assert len(ids(db_uri)) == 12
    summary = run_index([notes], allow_mass_delete=True)
    assert summary["articles_deleted"] == 4 and summary["outcome"] == "ok"
    assert len(ids(db_uri)) == 4


def test_deleting_up_to_the_fraction_needs_no_confirmation(run_index, db_uri, tmp_path):
    notes = write_notes(tmp_path / "notes")
    run_index([notes])
    for topic in TOPICS[:3]:  # exactly half
        (notes / f"{topic}.txt").unlink()
    assert run_index([notes])["articles_deleted"] == 3


def test_a_dump_with_a_broken_line_deletes_no_article_it_cannot_see(run_index, db_uri, tmp_path):
    dump = tmp_path / "wiki.jsonl"
    lines = [json.dumps({"id": t, "title": t, "paragraphs": [f"All about {t} and their long history on "
                                                              "this planet."]}) for t in TOPICS[:4]]
    dump.write_text("\n".join(lines) + "\n")
    run_index([dump])
    lines[1] = lines[1][:25]  # the second record is cut: its article is unknown, not vanished
    dump.write_text("\n".join(lines) + "\n")
    summary = run_index([dump])
    assert summary["outcome"] == "partial" and summary["articles_deleted"] == 0
    assert len(ids(db_uri)) == 4


def test_dump_records_that_share_a_title_and_have_no_id_keep_the_first_and_say_how_to_keep_both(
    run_index, db_uri, tmp_path
):
    dump = tmp_path / "wiki.jsonl"
    dump.write_text("".join(json.dumps({"title": "Mercury", "paragraphs": [text]}) + "\n" for text in (
        "Mercury is the smallest planet of the Solar System and the closest to the Sun.",
        "Mercury is a chemical element, a heavy silvery metal that is liquid at room temperature.")))
    summary = run_index([dump])
    assert summary["outcome"] == "partial" and summary["rows"] == 1
    [failure] = summary["failures"]
    assert failure["doc_id"] == "Mercury" and "the first copy is indexed, later ones skipped" in failure["error"]
    assert "named by its title" in failure["error"] and "give each record its own 'id'" in failure["error"]


# --------------------------------------------------------------------------- one bad input is its own failure


def test_a_batch_that_raises_fails_its_articles_and_the_other_sources_are_written(run_index, db_uri, tmp_path,
                                                                                   monkeypatch):
    import tasks.stages as stages

    good, bad = write_notes(tmp_path / "good", 3), write_notes(tmp_path / "bad", 3)
    real = stages.read_local_file

    def explode(path, **kw):  # an exception type no stage anticipates
        if "bad" in str(path):
            raise RecursionError("maximum recursion depth exceeded")
        return real(path, **kw)

    monkeypatch.setattr(stages, "read_local_file", explode)
    summary = run_index([bad, good])
    assert summary["outcome"] == "partial"
    assert summary["articles_fetched"] == 3 and summary["articles_failed"] == 3
    assert all("RecursionError" in f["error"] for f in summary["failures"])
    assert {r["doc_id"] for r in table_rows(db_uri)} == {f"{t}.txt" for t in TOPICS[:3]}


def test_a_batch_that_raises_keeps_the_rows_it_had(run_index, db_uri, tmp_path, monkeypatch):
    import tasks.stages as stages

    notes = write_notes(tmp_path / "notes", 4)
    run_index([notes])
    for path in notes.iterdir():  # touched: an unchanged file would be skipped unread
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    monkeypatch.setattr(stages, "read_local_file", lambda *a, **k: 1 / 0)
    with pytest.raises(NothingIndexedError):
        run_index([notes])
    assert len(ids(db_uri)) == 8  # a failed read is never a deletion


def test_a_file_removed_between_listing_and_reading_is_no_failure_and_keeps_its_rows_until_it_is_missed(
        run_index, db_uri, tmp_path, monkeypatch):
    import tasks.stages as stages

    notes = write_notes(tmp_path / "notes", 3)
    run_index([notes])
    (notes / "glaciers.txt").write_text("Glaciers were rewritten today, just before an editor removed this file.\n")
    (notes / "lakes.txt").write_text("A new note about lakes that its editor saved and removed again at once.\n")
    real = stages.read_local_file

    def removed_first(path, **kw):  # the file really goes away after the folder was listed, as it is read
        if path.name in ("glaciers.txt", "lakes.txt"):
            path.unlink()
        return real(path, **kw)

    monkeypatch.setattr(stages, "read_local_file", removed_first)
    summary = run_index([notes])
    assert summary["outcome"] == "ok" and summary["articles_failed"] == 0 and not summary["failures"]
    assert any("2 article(s) were removed while the run read their folder" in n for n in summary["notices"])
    assert len(ids(db_uri)) == 6  # glaciers.txt's rows stay this run
    monkeypatch.undo()
    again = run_index([notes])  # the next run does not find it: deleted as any vanished file
    assert again["articles_deleted"] == 1 and {r["doc_id"] for r in table_rows(db_uri)} == {"volcanoes.txt", "rivers.txt"}


def test_a_file_name_that_is_not_utf8_is_indexed_under_a_printable_name(run_index, db_uri, tmp_path):
    notes = write_notes(tmp_path / "notes", 2)
    raw = os.fsencode(notes) + b"/caf\xe9-notes.txt"
    with open(raw, "wb") as fh:
        fh.write(b"A note written on a machine whose file names are Latin-1 encoded, about coffee and cake.\n")
    summary = run_index([notes])
    assert summary["outcome"] == "ok" and summary["articles_fetched"] == 3
    assert "caf\\xe9-notes.txt" in {r["doc_id"] for r in table_rows(db_uri)}
    again = run_index([notes])
    assert again["articles_unchanged"] == 3 and again["paragraphs_encoded"] == 0 and again["articles_deleted"] == 0


def test_failure_messages_with_undecodable_names_reach_the_artifact(run_index, tmp_path):
    notes = write_notes(tmp_path / "notes", 1)
    with open(os.fsencode(notes) + b"/bin\xff.txt", "wb") as fh:
        fh.write(b"")  # an empty file: no paragraphs, but its name still has to be reported somewhere
    (notes / "gone.txt").symlink_to(notes / "missing-target.txt")  # unreadable: a failure naming it
    summary = run_index([notes])
    assert summary["outcome"] in ("ok", "partial")
    json.dumps(summary)  # every string in it is valid UTF-8


def test_a_legacy_collection_named_like_an_internal_table_is_a_clear_error(run_index, db_uri, tmp_path):
    import pyarrow as pa

    from query.schema import IndexContractError

    # Made before "__" was reserved: a *collection* called z__articles, where z's article state would go.
    lancedb.connect(db_uri).create_table("z__articles", pa.table({"id": ["1"], "text": ["old"]}))
    with pytest.raises(IndexContractError, match="before names with '__' were reserved"):
        run_index([write_notes(tmp_path / "notes", 1)], collection="z")
    assert lancedb.connect(db_uri).open_table("z__articles").count_rows() == 1


# --------------------------------------------------------------------------- the Prefect run's state


def test_the_prefect_run_is_failed_when_nothing_could_be_indexed(prefect_harness, db_uri, tmp_path):
    from flows.index_corpus import index_corpus

    empty = tmp_path / "empty"
    empty.mkdir()
    state = index_corpus([str(empty)], collection="test", db_uri=db_uri, return_state=True)
    assert state.is_failed() and "nothing could be indexed" in state.message
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, NothingIndexedError) and exc.summary["outcome"] == "failed"


def test_a_partly_failed_run_completes_and_logs_its_failures_as_warnings(prefect_harness, db_uri, tmp_path, caplog):
    from flows.index_corpus import index_corpus

    notes = write_notes(tmp_path / "notes", 2)
    with caplog.at_level(logging.WARNING):
        state = index_corpus([str(notes), str(tmp_path / "nope")], collection="test", db_uri=db_uri,
                             return_state=True)
    assert state.is_completed()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "failed:" in r.getMessage()]
    assert len(warned) == 1 and "nope" in warned[0].getMessage() and "does not exist" in warned[0].getMessage()
    result = state.result()
    assert result["outcome"] == "partial"
    assert result["failures"][0]["doc_id"].endswith("nope") and "does not exist" in result["failures"][0]["error"]


# --------------------------------------------------------------------------- the CLI: exit codes and --json


@pytest.fixture
def cli(prefect_harness):
    """Run `corpus-search` in a subprocess against the harness's API (no temporary server per call)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "INFO"}

    def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "corpus_search.cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)

    run.env = env
    return run


def test_cli_exit_codes_tell_a_cron_job_what_happened(cli, db_uri, tmp_path):
    notes = write_notes(tmp_path / "notes", 2)
    ok = cli("index", str(notes), "--db", db_uri, "-c", "t", "--json")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["outcome"] == "ok" and out["failures"] == [] and out["rows"] == 4

    partial = cli("index", str(notes), str(tmp_path / "unmounted"), "--db", db_uri, "-c", "t", "--json")
    assert partial.returncode == 3, partial.stderr
    failures = json.loads(partial.stdout)["failures"]
    assert len(failures) == 1 and "does not exist" in failures[0]["error"]

    nothing = cli("index", str(tmp_path / "unmounted"), "--db", db_uri, "-c", "t", "--json")
    assert nothing.returncode == 4, nothing.stderr
    assert json.loads(nothing.stdout)["outcome"] == "failed"

    for url in ("ftp://example.org/x.txt", "http://[::1"):
        # Among other sources, a malformed URL is that source's failure; alone, the command is a usage error.
        among = cli("index", str(notes), url, "--db", db_uri, "-c", "t", "--json")
        assert among.returncode == 3 and [f["doc_id"] for f in json.loads(among.stdout)["failures"]] == [url]
        usage = cli("index", url, "--db", db_uri, "-c", "t")
        assert usage.returncode == 2 and "corpus-search: error:" in usage.stderr and "Traceback" not in usage.stderr
    for batch in ("0", "-5"):
        usage = cli("index", str(notes), "--batch-articles", batch, "--db", db_uri, "-c", "t")
        assert usage.returncode == 2 and "--batch-articles: must be a whole number >= 1" in usage.stderr
    bad_name = cli("index", str(notes), "--db", db_uri, "-c", "./../escaped")
    assert bad_name.returncode == 2 and "corpus-search: error:" in bad_name.stderr
    assert "Traceback" not in bad_name.stderr and not (tmp_path / "escaped").exists()
    at_file = cli("index", str(notes), "--db", str(notes / "glaciers.txt"), "-c", "t")
    assert at_file.returncode == 2 and "corpus-search: error:" in at_file.stderr and "Traceback" not in at_file.stderr
    assert "exit codes: 0 every source was indexed; 3" in cli("index", "--help").stdout


# --------------------------------------------------------------------------- SIGKILL, then heal


def _assert_healed(db_uri: str, collection: str, clean: list[str]) -> None:
    got = ids(db_uri, collection)
    assert len(got) == len(set(got)), "duplicate ids after the rerun"
    assert sorted(got) == sorted(clean)
    lancedb.connect(db_uri).open_table(collection).count_rows()  # the table opens


@pytest.mark.slow
def test_sigkill_during_a_first_and_an_incremental_run_heals_with_no_duplicates(cli, run_index, db_uri, tmp_path):
    notes = write_notes(tmp_path / "notes", 12)
    run_index([notes], collection="clean")
    args = ["index", str(notes), "--db", db_uri, "-c", "killed", "--batch-articles", "3"]

    kill_after_first_batch(cli, args)
    partial = ids(db_uri, "killed")
    assert 0 < len(partial) < 24, "the kill landed mid-run"
    assert cli(*args).returncode == 0
    _assert_healed(db_uri, "killed", ids(db_uri, "clean"))

    write_notes(notes, 12, variant=" (revised)")  # every article changes: an incremental run rewrites them
    run_index([notes], collection="clean")
    kill_after_first_batch(cli, args)
    assert cli(*args).returncode == 0
    _assert_healed(db_uri, "killed", ids(db_uri, "clean"))


@pytest.mark.slow
def test_sigkill_of_the_cli_stops_its_temporary_prefect_server(tmp_path):
    notes = write_notes(tmp_path / "notes", 2)
    env = _own_server_env(tmp_path, PREFECT_LOGGING_LEVEL="INFO")
    proc = subprocess.Popen([sys.executable, "-m", "corpus_search.cli", "index", str(notes), "--db",
                             str(tmp_path / "db"), "-c", "t"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    server = None
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            if "Beginning flow run" in line:
                break
            assert time.monotonic() < deadline
        server = _uvicorn_child(proc.pid)
        assert server is not None, "the CLI started no temporary server"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert _gone(server), "the temporary server outlived the CLI"
    finally:
        proc.kill()
        _kill_if_alive(server)


@pytest.mark.slow
def test_sigterm_while_the_temporary_prefect_server_starts_leaves_no_server(tmp_path):
    notes = write_notes(tmp_path / "notes", 2)
    env = _own_server_env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "corpus_search.cli", "index", str(notes), "--db",
                             str(tmp_path / "db"), "-c", "t"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = None
    try:
        deadline = time.monotonic() + 120
        while server is None:  # the server process exists, and is not healthy yet: start() still waits on it
            assert time.monotonic() < deadline and proc.poll() is None
            server = _uvicorn_child(proc.pid)
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert _gone(server, 20), "the temporary server outlived the CLI"
    finally:
        proc.kill()
        _kill_if_alive(server)


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_interrupts_the_run_not_its_temporary_prefect_server(tmp_path):
    """A terminal sends Ctrl-C's SIGINT to its whole foreground process group, the CLI's children included."""
    notes = write_notes(tmp_path / "notes", 12)
    env = _own_server_env(tmp_path, PREFECT_LOGGING_LEVEL="INFO")
    # With Ctrl-C's handler put back (a background shell leaves SIGINT ignored), as a foreground job has it.
    interruptible = [sys.executable, "-c", "import runpy, signal, sys; signal.signal(signal.SIGINT, "
                     "signal.default_int_handler); sys.argv = sys.argv[1:]; runpy.run_module('corpus_search.cli', "
                     "run_name='__main__', alter_sys=True)", "corpus-search", "index", str(notes), "--db",
                     str(tmp_path / "db"), "-c", "t", "--batch-articles", "1"]
    proc = subprocess.Popen(interruptible, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own group, as a terminal's job is
    server, out = None, []
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            out.append(line)
            if "Beginning flow run" in line:
                break
            assert time.monotonic() < deadline
        server = _uvicorn_child(proc.pid)
        assert server is not None, "the CLI started no temporary server"
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out.append(proc.communicate(timeout=90)[0])
        text = "".join(out)
        assert proc.returncode == 130, text[-3000:]
        assert "corpus-search: interrupted" in text and "Traceback" not in text, text[-3000:]
        assert time.monotonic() - started < 60, "the CLI waited on a server that Ctrl-C had stopped"
        assert _gone(server), "the temporary server outlived the CLI"  # stopped at exit, by Prefect
    finally:
        proc.kill()
        _kill_if_alive(server)


def _own_server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A CLI's environment in which it starts Prefect's temporary server (no PREFECT_API_URL), in a home of its own."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / "prefect"), **extra)
    return env


def _uvicorn_child(pid: int) -> int | None:
    """The temporary server: the uvicorn child process of ``pid``, if it has one yet."""
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", "uvicorn"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def _kill_if_alive(pid: int | None) -> None:
    """Whatever a test found, no server outlives it."""
    if pid and Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def _gone(pid: int, wait_s: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``wait_s``."""
    for _ in range(int(wait_s * 10)):
        if not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid):
            return True
        time.sleep(0.1)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"
