"""Fault cases of the query side (issue #8): empty results, typed filters, bad limits, hostile queries.

Every case must end in hits (possibly none) or a clear ``CorpusSearchError``, never a library traceback.
No cross-encoder is available offline, so every search runs with ``rerank=False`` / ``--no-rerank``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from query.errors import CorpusSearchError, InvalidQueryError
from tests.conftest import REPO

MODES = ("dense", "lexical", "hybrid")
DOCS = {
    "glaciers.md": "# Glaciers\n\nGlaciers form where snow accumulates for many years and compresses into ice that "
    "slowly flows downhill.\n\nA glacier moves under its own weight, carving valleys and leaving moraines behind.\n",
    "volcano.txt": "Volcanoes erupt when magma rises through the crust and lava pours out of vents at the surface.\n\n"
    "Ash clouds from large eruptions can cool the climate of the whole planet for a year or more.\n",
}


@pytest.fixture(scope="module")
def db(tmp_path_factory, prefect_harness) -> str:
    """A small collection ``faults`` indexed by the real flow, plus an ``empty`` collection with no rows."""
    from flows.index_corpus import index_corpus
    from query.settings import Settings
    from tasks import stages, store

    root = tmp_path_factory.mktemp("query-faults")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    uri = str(root / "lancedb")
    summary = index_corpus([str(docs)], collection="faults", db_uri=uri)
    assert summary["articles_failed"] == 0 and summary["rows"] >= 4
    settings = Settings(db_uri=uri, collection="empty")
    store.open_paragraph_table(store.connect(uri), "empty", stages.index_metadata(settings))
    return uri


@pytest.fixture(scope="module")
def searcher(db):
    from query import Searcher

    return Searcher(db_uri=db, collection="faults")


def cli(db: str, *args: str) -> subprocess.CompletedProcess:
    """``corpus-search search`` of this worktree, in a subprocess, offline, without re-ranking."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "corpus_search.cli", "search", *args, "--db", db, "--no-rerank"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr


# ---------------------------------------------------------------- 1. nothing retrieved is no hits, in every mode


@pytest.mark.parametrize("mode", MODES)
def test_a_filter_matching_nothing_returns_no_hits(searcher, mode):
    assert searcher.search("glacier ice", mode=mode, rerank=False, where={"source": "no-such-source"}) == []


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_list_filter_returns_no_hits(searcher, mode):
    assert searcher.search("glacier ice", mode=mode, rerank=False, where={"source": []}) == []


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_collection_returns_no_hits(db, mode):
    from query import Searcher

    assert Searcher(db_uri=db, collection="empty").search("glacier", mode=mode, rerank=False) == []


def test_search_many_of_no_queries_returns_an_empty_list(searcher):
    assert searcher.search_many([], rerank=False) == []


def test_search_many_of_a_single_string_is_refused(searcher):
    with pytest.raises(InvalidQueryError, match="use search"):
        searcher.search_many("glacier", rerank=False)


# ---------------------------------------------------------------- 2. filter values take the column's type


@pytest.mark.parametrize("mode", MODES)
def test_a_position_filter_accepts_an_int_or_its_text(searcher, mode):
    as_int = searcher.search("glacier", k=10, mode=mode, rerank=False, where={"position": 0})
    as_text = searcher.search("glacier", k=10, mode=mode, rerank=False, where={"position": ["0"]})
    assert as_int and {h.position for h in as_int} == {0}
    assert [h.id for h in as_text] == [h.id for h in as_int]


@pytest.mark.parametrize("value", ["zero", "1.5", "", True, 1.0])
def test_a_non_integer_position_filter_is_a_clear_error(searcher, value):
    with pytest.raises(InvalidQueryError, match="'position' takes a whole number"):
        searcher.search("glacier", rerank=False, where={"position": value})


def test_a_number_for_a_text_column_is_a_clear_error(searcher):
    with pytest.raises(InvalidQueryError, match="'title' takes text"):
        searcher.search("glacier", rerank=False, where={"title": 3})


def test_a_nul_in_a_filter_value_is_a_clear_error(searcher):
    with pytest.raises(InvalidQueryError, match="NUL"):
        searcher.search("glacier", rerank=False, where={"doc_id": "a\x00b"})


@pytest.mark.parametrize("mode", MODES)
def test_sql_injection_in_filter_values_matches_nothing(searcher, mode):
    for evil in ["' OR 1=1 --", "x') OR ('a'='a", "0; DROP TABLE faults"]:
        assert searcher.search("glacier", mode=mode, rerank=False, where={"source": evil}) == []
    with pytest.raises(InvalidQueryError, match="whole number"):
        searcher.search("glacier", mode=mode, rerank=False, where={"position": "0 OR 1=1"})
    with pytest.raises(InvalidQueryError, match="cannot filter on"):
        searcher.search("glacier", mode=mode, rerank=False, where={"1=1 OR source": "x"})
    assert searcher.count() >= 4  # nothing was dropped


# ---------------------------------------------------------------- 3. k and candidates


@pytest.mark.parametrize("candidates", [-5, 0, 10**12, 1.5])
def test_nonsensical_candidates_are_refused(searcher, candidates):
    with pytest.raises(InvalidQueryError, match="candidates must be a whole number"):
        searcher.search("glacier", rerank=False, candidates=candidates)


@pytest.mark.parametrize("k", [0, -1, 2**63])
def test_nonsensical_k_is_refused(searcher, k):
    with pytest.raises(InvalidQueryError, match="k must be a whole number"):
        searcher.search("glacier", k=k, rerank=False)


def test_an_unknown_mode_is_refused(searcher):
    with pytest.raises(InvalidQueryError, match="not one of dense, lexical, hybrid"):
        searcher.search("glacier", mode="sparse", rerank=False)


# ---------------------------------------------------------------- 8. hostile queries

HOSTILE = ['"', "*", "title:glacier", "(ice", "AND", "OR NOT", '"unbalanced quote', "glacier^2 ~ -ice +lava",
           "\\", "a\x00b glacier", "' OR 1=1 --", "🧊 glaciers ❄️", "\u200b\u200bglacier"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q))
def test_fts_syntax_and_odd_characters_are_matched_not_parsed(searcher, mode, query):
    hits = searcher.search(query, k=5, mode=mode, rerank=False)
    assert isinstance(hits, list) and all(h.text for h in hits)
    if mode != "lexical":  # dense always finds the nearest paragraphs
        assert hits


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ["", "   \n\t", "\x00\x01", None, b"glacier"], ids=repr)
def test_empty_or_non_text_queries_are_a_clear_error(searcher, mode, query):
    with pytest.raises(InvalidQueryError, match="query is empty|query must be text"):
        searcher.search(query, mode=mode, rerank=False)


@pytest.mark.parametrize("mode", MODES)
def test_a_lone_surrogate_is_a_clear_error(searcher, mode):
    with pytest.raises(InvalidQueryError, match="not valid Unicode"):
        searcher.search("glacier \udcff", mode=mode, rerank=False)


@pytest.mark.parametrize("mode", MODES)
def test_a_one_megabyte_query_is_truncated_with_a_warning(searcher, mode):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = searcher.search("glacier ice " * 90_000, k=3, mode=mode, rerank=False)
    assert hits and any("truncated" in str(w.message) for w in caught)


def test_every_query_error_is_a_corpus_search_error_and_a_value_error():
    assert issubclass(InvalidQueryError, CorpusSearchError) and issubclass(InvalidQueryError, ValueError)


# ---------------------------------------------------------------- 7. the CLI: exit 2 and one line, never a traceback


def test_cli_where_position_zero_is_coerced_to_an_integer(db):
    proc = cli(db, "glacier", "-c", "faults", "--mode", "lexical", "--where", "position=0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"]


def test_cli_a_non_integer_position_is_a_user_error(db):
    assert_user_error(cli(db, "glacier", "-c", "faults", "--where", "position=first"), "corpus-search: error:",
                      "whole number")


@pytest.mark.parametrize("bad", [["--candidates", "-5"], ["--candidates", "0"], ["-k", "0"], ["-k", "-3"]])
def test_cli_nonpositive_k_or_candidates_is_a_user_error(db, bad):
    assert_user_error(cli(db, "glacier", "-c", "faults", *bad), "must be a whole number >= 1")


def test_cli_where_without_equals_is_a_user_error(db):
    assert_user_error(cli(db, "glacier", "-c", "faults", "--where", "position"), "corpus-search: error:",
                      "KEY<op>VALUE")


def test_cli_a_hostile_query_is_matched_not_parsed(db):
    proc = cli(db, '"unbalanced AND (title:* glacier', "-c", "faults", "--mode", "lexical", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"]


def test_cli_default_hybrid_search_of_an_empty_collection_prints_no_hits(db):
    proc = cli(db, "glacier", "-c", "empty", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"] == []


def test_cli_an_empty_query_is_a_user_error(db):
    assert_user_error(cli(db, "  ", "-c", "faults", "--mode", "lexical"), "corpus-search: error:", "query is empty")


def test_cli_a_query_of_undecodable_bytes_is_a_user_error(db):
    # Python decodes argv bytes that are not UTF-8 to lone surrogates, which no tokenizer accepts.
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "corpus_search.cli", "search", b"glacier \xff\xfe", "-c", "faults", "--db", db,
         "--mode", "lexical", "--no-rerank"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert_user_error(proc, "corpus-search: error:", "not valid Unicode")


def _edition(n: str) -> list[dict]:
    return [{"id": "r0", "title": "Glaciers", "text": f"Glacier formation, edition {n}: snow compacts into firn and ice."}] + \
        [{"id": f"f{i}", "title": f"F{i}", "text": f"Filler {i} about cooking, baking and gardening."} for i in range(6)]


@pytest.mark.parametrize("writes", ["once", "every time"])
def test_a_hybrid_search_reads_one_version_though_a_write_commits_between_its_two_halves(
        tmp_path, prefect_harness, monkeypatch, writes):
    """Dense, then lexical: a write between them fused two versions (the old and the new text as two hits)."""
    from corpus_search import index_records
    from query import Searcher, retrieve

    db = str(tmp_path / "db")
    index_records(_edition("1"), "live", db_uri=db)
    searcher = Searcher(db_uri=db, collection="live")
    lexical, editions = retrieve.lexical, iter(range(2, 10))

    def lexical_after_a_commit(*args, **kw):  # another process's index run commits right here
        index_records(_edition(str(next(editions))), "live", db_uri=db)
        if writes == "once":
            monkeypatch.setattr(retrieve, "lexical", lexical)
        return lexical(*args, **kw)

    monkeypatch.setattr(retrieve, "lexical", lexical_after_a_commit)
    hits = searcher.search("glacier formation firn", k=5, rerank=False)
    glacier = [h.text for h in hits if h.doc_id == "r0"]
    assert len(glacier) == 1 and len({h.id for h in hits}) == len(hits)  # one version of the paragraph, once
    monkeypatch.setattr(retrieve, "lexical", lexical)
    assert glacier == [h.text for h in searcher.search("glacier formation firn", k=5, rerank=False) if h.doc_id == "r0"] \
        or writes == "every time"  # a writer that never pauses: a snapshot of one version, maybe not the last
