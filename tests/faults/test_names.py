"""Fault cases of hostile collection names and database locations (issue #8).

A bad name or location is refused with a ``CorpusSearchError`` that says the rule, before any
file is created; the CLI prints it as ``corpus-search: error: ...`` and exits 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from query.errors import CorpusSearchError, DatabaseLocationError, InvalidNameError
from query.schema import validate_collection_name
from tasks.lock import WriterBusyError, writer_lock
from tests.conftest import REPO

BAD_NAMES = {
    "parent": "../x",
    "escape": "./../escaped",
    "slash": "x/y",
    "long": "a" * 300,
    "empty": "",
    "nul": "a\x00b",
    "control": "a\x1bb",
    "tab": "a\tb",
    "space": "my articles",
    "trailing-space": "notes ",
    "newline": "notes\n",
    "hidden": ".hidden",
    "dot": ".",
    "non-ascii": "café",
    "articles-table": "z__articles",
    "runs-table": "z__runs",
    "double-underscore": "a__b",
}
GOOD_NAMES = ["default", "Art_Demo", "html-eval", "wiki_2024.en", "a" * 128, "_private", "v1.2"]


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*")) if path.exists() else set()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``corpus-search`` of this worktree, in a subprocess, offline."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "corpus_search.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=120)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("corpus-search: error:"), proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr


# ---------------------------------------------------------------- 5. one name rule


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_collection_name_is_refused_with_the_rule_and_an_example(name):
    with pytest.raises(InvalidNameError) as err:
        validate_collection_name(name)
    message = str(err.value)
    assert "letters, digits" in message and "e.g. 'my-articles'" in message
    assert len(message) < 400  # a 300-character name is shortened in the message


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_lancedb_compatible_names_are_accepted(name):
    from lancedb.util import validate_table_name

    validate_table_name(name)  # our rule is no looser than LanceDB's
    assert validate_collection_name(name) == name


def test_a_name_error_is_a_corpus_search_error_and_a_value_error():
    assert issubclass(InvalidNameError, CorpusSearchError) and issubclass(InvalidNameError, ValueError)


@pytest.mark.parametrize("name", ["./../escaped", "../x", "x/y", "a\x00b"])
def test_the_writer_lock_refuses_a_bad_name_before_creating_any_file(tmp_path, name):
    db = tmp_path / "sub" / "lancedb"
    with pytest.raises(InvalidNameError), writer_lock(str(db), name, timeout_s=0.1):
        pytest.fail("the lock was taken")
    assert files_under(tmp_path) == set()  # not even the database directory, let alone ../.escaped.writer.lock


@pytest.mark.parametrize("name", ["./../escaped", "z__articles", "a" * 300, ""])
def test_the_searcher_refuses_a_bad_name_before_opening_the_database(tmp_path, name):
    from query import Searcher

    with pytest.raises(InvalidNameError):
        Searcher(db_uri=str(tmp_path / "lancedb"), collection=name)
    assert files_under(tmp_path) == set()


def test_settings_refuse_a_bad_collection_name():
    from query.settings import Settings

    with pytest.raises(ValueError, match="collection name '../x'"):
        Settings(collection="../x")
    assert Settings(collection="wiki_2024.en").collection == "wiki_2024.en"


def test_writer_busy_is_a_corpus_search_error_and_still_a_runtime_error():
    assert issubclass(WriterBusyError, CorpusSearchError) and issubclass(WriterBusyError, RuntimeError)


# ---------------------------------------------------------------- 4. names that collide with internal tables


def test_indexing_or_searching_an_internal_table_name_is_refused_without_a_schema_error(run_index, db_uri, tmp_path):
    from query import Searcher

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tides.txt").write_text("Tides rise and fall twice a day because the Moon's gravity pulls the oceans.\n")
    assert run_index([docs], collection="z")["articles_failed"] == 0
    import lancedb

    before = set(lancedb.connect(db_uri).table_names())
    assert {"z", "z__articles"} <= before
    for name in ("z__articles", "z__articles__articles", "z__runs"):
        with pytest.raises(ValueError, match="reserved for internal tables"):  # the flow's Settings refuse it
            run_index([docs], collection=name)
        with pytest.raises(InvalidNameError, match="reserved for internal tables"):
            Searcher(db_uri=db_uri, collection=name)
    assert set(lancedb.connect(db_uri).table_names()) == before
    # The collection itself, whose article table is z__articles, still indexes and searches.
    assert run_index([docs], collection="z")["paragraphs_encoded"] == 0
    assert Searcher(db_uri=db_uri, collection="z").search("moon tides", mode="lexical", rerank=False)


# ---------------------------------------------------------------- 6. database locations


def test_a_database_that_is_a_regular_file_is_refused_by_reader_and_writer(tmp_path):
    from query import Searcher

    f = tmp_path / "db.txt"
    f.write_text("not a database")
    with pytest.raises(DatabaseLocationError, match="is a file, not a directory"):
        Searcher(db_uri=str(f), collection="notes")
    with pytest.raises(DatabaseLocationError, match="is a file, not a directory"), writer_lock(str(f), "notes"):
        pytest.fail("the lock was taken")
    assert f.read_text() == "not a database"


def test_a_database_under_a_regular_file_is_refused_by_reader_and_writer(tmp_path):
    from query import Searcher

    f = tmp_path / "file"
    f.write_text("x")
    db = str(f / "lancedb")
    with pytest.raises(DatabaseLocationError, match="cannot be created"):
        Searcher(db_uri=db, collection="notes")
    with pytest.raises(DatabaseLocationError, match="cannot be created"), writer_lock(db, "notes"):
        pytest.fail("the lock was taken")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits, so a chmod 0555 directory stays writable")
def test_a_read_only_database_directory_is_refused_by_the_writer(tmp_path):
    db = tmp_path / "lancedb"
    db.mkdir()
    db.chmod(0o555)
    try:
        with pytest.raises(DatabaseLocationError, match="not writable"), writer_lock(str(db), "notes"):
            pytest.fail("the lock was taken")
    finally:
        db.chmod(0o755)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody")
def test_a_read_only_database_is_a_user_error_for_index_even_when_run_by_root(tmp_path):
    """As root, permission bits are ignored: drop to user nobody (setpriv) to meet a really read-only database."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="corpus-search-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        (base / "notes").mkdir()
        (base / "notes" / "a.txt").write_text("Glaciers are slow rivers of ice that carve deep valleys over time.")
        db = base / "lancedb"
        db.mkdir()
        db.chmod(0o555)
        home = base / "home"
        home.mkdir()
        home.chmod(0o777)
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "corpus_search.cli",
             "index", str(base / "notes"), "--db", str(db), "-c", "notes"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("corpus-search: error:") and "not writable" in out.stderr
        assert "Traceback" not in out.stderr and list(db.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- 7. the CLI prints one line and exits 2


def test_cli_search_of_a_bad_collection_name_is_a_user_error(tmp_path):
    assert_user_error(cli("search", "glacier", "-c", "./../escaped", "--db", str(tmp_path / "db"), "--no-rerank"),
                      "collection name './../escaped' is not allowed")
    assert files_under(tmp_path) == set()


def test_cli_search_with_db_at_a_regular_file_is_a_user_error(tmp_path):
    f = tmp_path / "db.txt"
    f.write_text("x")
    assert_user_error(cli("search", "glacier", "--db", str(f), "--no-rerank"), "is a file, not a directory", "--db")


def test_cli_a_bad_collection_in_the_environment_is_a_user_error(tmp_path):
    proc = cli("search", "glacier", "--db", str(tmp_path / "db"), "--no-rerank",
               env={"CORPUS_SEARCH_COLLECTION": "../x"})
    assert_user_error(proc, "setting collection (the CORPUS_SEARCH_COLLECTION setting): collection name '../x'")
    assert "pydantic.dev" not in proc.stderr
