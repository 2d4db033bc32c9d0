"""The query module against a real index of the sample corpus: brute-force cross-checks, re-ranking, safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings

import lancedb
import numpy as np
import pytest

from query.fusion import rrf, top_k_cosine
from tests.conftest import EXAMPLES, REPO, html_page


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory, prefect_harness) -> str:
    """The sample corpus (HTML articles and notes) indexed once by the real flow."""
    from flows.index_corpus import index_corpus

    db = str(tmp_path_factory.mktemp("query") / "lancedb")
    summary = index_corpus([str(EXAMPLES / "articles"), str(EXAMPLES / "notes")], collection="sample", db_uri=db)
    assert summary["articles_failed"] == 0 and summary["rows"] > 50
    return db


@pytest.fixture(scope="module")
def cross_encoder_path(tmp_path_factory) -> str:
    from tests._models import build_cross_encoder

    return str(build_cross_encoder(tmp_path_factory.mktemp("ce1") / "model", num_labels=1))


@pytest.fixture(scope="module")
def searcher(corpus_db, cross_encoder_path):
    from query import Searcher

    return Searcher(db_uri=corpus_db, collection="sample", cross_encoder=cross_encoder_path)


def _all_rows(db: str):
    t = lancedb.connect(db).open_table("sample").to_lance().to_table(columns=["id", "source", "vector"])
    vecs = np.asarray(t["vector"].combine_chunks().flatten(), dtype=np.float32).reshape(t.num_rows, -1)
    return t["id"].to_pylist(), t["source"].to_pylist(), vecs


QUERIES = ["How do glaciers form?", "Who printed the first books with movable type?", "what does the heart pump"]


@pytest.mark.parametrize("query", QUERIES)
def test_dense_retrieval_equals_numpy_cosine_top_k(searcher, corpus_db, query):
    ids, _, vecs = _all_rows(corpus_db)
    qv = searcher.bi_encoder.encode([query])[0]
    idx, sims = top_k_cosine(vecs, qv, 20)
    hits = searcher.search(query, k=20, mode="dense", candidates=20, rerank=False)
    assert [h.id for h in hits] == [ids[i] for i in idx]
    np.testing.assert_allclose([h.retrieval_score for h in hits], sims, atol=1e-5)


@pytest.mark.parametrize("query", QUERIES)
def test_hybrid_retrieval_equals_rrf_of_dense_and_lexical_by_hand(searcher, query):
    n = 30
    dense = [h.id for h in searcher.search(query, k=n, mode="dense", candidates=n, rerank=False)]
    lexical = [h.id for h in searcher.search(query, k=n, mode="lexical", candidates=n, rerank=False)]
    hybrid = searcher.search(query, k=n, mode="hybrid", candidates=n, rerank=False)
    score = {}
    for ranking in (dense, lexical):
        for r, i in enumerate(ranking, start=1):
            score[i] = score.get(i, 0) + 1 / (60 + r)
    expected = sorted(score.items(), key=lambda kv: -kv[1])[:n]
    np.testing.assert_allclose([h.retrieval_score for h in hybrid], [s for _, s in expected])
    assert [h.id for h in hybrid] == rrf([dense, lexical], k=60, limit=n)[0]


def test_lexical_retrieval_returns_only_rows_with_a_query_term_best_first(searcher):
    hits = searcher.search("volcano eruption lava", k=50, mode="lexical", rerank=False)
    assert hits and all(any(w in h.text.lower() for w in ("volcan", "erupt", "lava")) for h in hits)
    assert [h.retrieval_score for h in hits] == sorted((h.retrieval_score for h in hits), reverse=True)


def test_rerank_order_equals_the_cross_encoders_own_predict_order(corpus_db, cross_encoder_path):
    from sentence_transformers import CrossEncoder

    from query import Searcher
    from query.settings import get_settings

    fp32 = get_settings().model_copy(update={"rerank_precision": "fp32"})
    searcher = Searcher(db_uri=corpus_db, collection="sample", cross_encoder=cross_encoder_path, settings=fp32)
    query = "How do glaciers form?"
    hits = searcher.search(query, k=40, mode="hybrid", candidates=40)
    model = CrossEncoder(cross_encoder_path, device="cpu")
    # predict's default activation for a one-logit model is the sigmoid: its scores are ours.
    expected = np.asarray(model.predict([(query, f"{h.title} {h.text}") for h in hits])).reshape(-1)
    assert len(hits) == 40 and all(0.0 <= h.score <= 1.0 for h in hits)
    # Our order is predict's order: each hit's score is >= the next one's (up to float noise).
    assert np.all(np.diff(expected) <= 1e-5), np.diff(expected).max()
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
    assert searcher.timings.stages[-1] == f"rerank:{cross_encoder_path}"


def test_filters_restrict_results_and_injection_attempts_match_nothing(searcher, corpus_db):
    origins = lancedb.connect(corpus_db).open_table("sample").to_arrow()["origin"].to_pylist()
    notes = next(s for s in set(origins) if s.endswith("notes"))
    hits = searcher.search("earth", k=50, mode="hybrid", rerank=False, where={"origin": notes})
    assert hits and {h.origin for h in hits} == {notes}
    # source is each file's own path: a prefix filter on the root finds the same hits.
    assert all(h.source.startswith(notes + "/") for h in hits)
    same = searcher.search("earth", k=50, mode="hybrid", rerank=False, where={"source": {"prefix": notes + "/"}})
    assert [h.id for h in same] == [h.id for h in hits]
    for evil in ["' OR 1=1 --", "x' OR 'a'='a", "'); DROP TABLE sample; --"]:
        assert searcher.search("earth", k=5, mode="dense", rerank=False, where={"source": evil}) == []
        assert searcher.search("earth", k=5, mode="lexical", rerank=False, where={"doc_id": [evil, "none"]}) == []
    assert searcher.count() > 50  # nothing was dropped


def test_threads_sharing_the_models_search_without_errors_and_as_one_thread_does(searcher):
    """One model per process serves every thread; its fast tokenizer is not thread-safe (a padded call beside
    an unpadded one raised ValueError "Unable to create tensor" about once in a thousand searches)."""
    import threading

    queries = [("glaciers ice snow " * (i % 12 + 1)).strip() for i in range(12)] + ["Paris", "the Eiffel Tower"]
    expected = {q: [h.id for h in searcher.search(q, k=3)] for q in queries[-3:]}
    enc = searcher.bi_encoder
    vectors, first8 = enc.encode(queries), enc.encode(queries[:8])  # bf16 results depend on the batch: one each
    errors, answers = [], []
    stop = time.monotonic() + 8

    def work(i: int) -> None:
        while time.monotonic() < stop:
            try:
                if i == 0:  # whole searches, re-ranked, beside the rest
                    q = queries[-3:][len(answers) % 3]
                    answers.append((q, [h.id for h in searcher.search(q, k=3)]))
                elif i % 2:  # a search's query encoding: unpadded token counts, then the vectors
                    np.testing.assert_allclose(searcher.encode_queries(queries[:8]), first8, atol=1e-5)
                else:  # an index run's padded batches of mixed lengths
                    np.testing.assert_allclose(enc.encode(queries), vectors, atol=1e-5)
            except Exception as exc:  # noqa: BLE001 - collected, then asserted empty
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and answers
    assert all(ids == expected[q] for q, ids in answers)


def test_search_many_matches_single_searches(searcher):
    many = searcher.search_many(QUERIES, k=5, mode="hybrid", rerank=False)
    assert [[h.id for h in hs] for hs in many] == [
        [h.id for h in searcher.search(q, k=5, mode="hybrid", rerank=False)] for q in QUERIES
    ]


@pytest.mark.parametrize("query", ["", "   \n\t"])
def test_an_empty_query_is_a_clear_value_error(searcher, query):
    with pytest.raises(ValueError, match="query is empty"):
        searcher.search(query)


def test_an_overlong_query_is_truncated_with_a_warning(searcher):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = searcher.search("glacier ice " * 400, k=3, mode="dense", rerank=False)
    assert hits and any("truncated" in str(w.message) for w in caught)


def test_a_missing_collection_says_how_to_index_one(corpus_db):
    from query import Searcher
    from query.errors import CollectionNotFoundError

    with pytest.raises(CollectionNotFoundError, match="corpus-search index SOURCE... --collection nothing-here"):
        Searcher(db_uri=corpus_db, collection="nothing-here")


def test_an_unloadable_cross_encoder_names_the_model_and_the_fix(corpus_db):
    from query import Searcher
    from query.errors import ModelUnavailableError

    s = Searcher(db_uri=corpus_db, collection="sample", cross_encoder="acme/no-such-reranker")
    # rerank="require" keeps the hard error (the default falls back to retrieval: tests/test_train_reranker.py)
    with pytest.raises(ModelUnavailableError, match="acme/no-such-reranker") as err:
        s.search("glaciers", k=3, rerank="require")
    assert "CORPUS_SEARCH_CROSS_ENCODER" in str(err.value)


def test_trust_remote_code_is_off_by_default():
    from query.settings import Settings

    assert Settings().trust_remote_code is False


def test_rank_passages_scores_every_passage_with_the_cross_encoder(cross_encoder_path):
    from query import rank_passages

    passages = ["Glaciers form from compacted snow.", "Paris is in France.", "Bees make honey."]
    hits = rank_passages("How do glaciers form?", passages, k=3, cross_encoder=cross_encoder_path)
    assert sorted(h.text for h in hits) == sorted(passages)
    assert [h.rank for h in hits] == [1, 2, 3] and all(0 <= h.score <= 1 for h in hits)
    assert all(h.reranked for h in hits) and hits.timings.reranker == cross_encoder_path


def test_rank_passages_ranks_a_repeated_paragraph_once_keeping_each_passages_own_position(cross_encoder_path):
    """search-document returned one paragraph twice, at ranks 1 and 2, when the document repeated it."""
    from query import rank_passages

    passages = ["Glaciers form from compacted snow.", "Bees make honey.", "Glaciers  form from compacted snow.",
                "Paris is in France."]
    hits = rank_passages("How do glaciers form?", passages, k=4, cross_encoder=cross_encoder_path)
    assert sorted(h.position for h in hits) == [0, 1, 3] and len({h.text for h in hits}) == 3
    assert {h.position: h.text for h in hits}[3] == "Paris is in France."


def test_rank_passages_without_a_cross_encoder_ranks_by_bi_encoder_cosine_with_one_warning(tmp_path):
    from query import rank_passages
    from query.errors import ModelUnavailableError
    from query.models import bi_encoder_from_settings
    from query.searcher import RerankSkippedWarning

    passages = ["Glaciers form from compacted snow.", "Paris is in France.", "Bees make honey.", "Ice sheets move."]
    missing = str(tmp_path / "no-such-model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = rank_passages("How do glaciers form?", passages, k=3, cross_encoder=missing)
    assert [w.category for w in caught if w.category is RerankSkippedWarning] == [RerankSkippedWarning]
    enc = bi_encoder_from_settings()
    cosine = enc.encode(passages) @ enc.encode(["How do glaciers form?"])[0]
    expected = sorted(range(4), key=lambda i: -cosine[i])[:3]
    assert [h.text for h in hits] == [passages[i] for i in expected]
    assert np.allclose([h.score for h in hits], cosine[expected], atol=1e-5)
    assert not any(h.reranked for h in hits) and all(h.score == h.retrieval_score for h in hits)
    assert hits.timings.reranker is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [h.text for h in rank_passages("How do glaciers form?", passages, k=3, rerank=False)] == [
            h.text for h in hits]
    assert not [w for w in caught if w.category is RerankSkippedWarning]
    with pytest.raises(ModelUnavailableError):
        rank_passages("How do glaciers form?", passages, cross_encoder=missing, rerank="require")


@pytest.mark.parametrize(("passages", "rerank", "message"), [
    ("glaciers form from snow", False, "wrap one text in a list"),  # not ranked as its characters
    ({"text": "glaciers"}, False, "wrap one text in a list"),
    ([None], False, "passage 1 must be a text or a mapping with a 'text' string"),
    (["fine", 5], False, "passage 2 must be"),
    ([{"title": "x"}], False, "passage 1 must be"),
    ([{"text": None}], False, "passage 1 must be"),
    (["fine", "  "], False, "passage 2 is empty"),
    (["fine"], 1, "rerank must be True, False or 'require'"),
])
def test_rank_passages_refuses_what_is_not_a_list_of_passages(passages, rerank, message):
    from query import rank_passages
    from query.errors import InvalidQueryError

    with pytest.raises(InvalidQueryError, match=message):
        rank_passages("How do glaciers form?", passages, rerank=rerank)


@pytest.mark.parametrize("version", [True, 1.5, None.__class__])
def test_a_version_that_is_neither_a_number_nor_a_tag_is_refused(version):
    from query.errors import InvalidQueryError
    from query.versions import parse_version

    with pytest.raises(InvalidQueryError, match="a version is a number or a tag name"):
        parse_version(version)


def test_search_document_ranks_paragraphs_of_a_served_page(site, cross_encoder_path, capsys, monkeypatch, request):
    from corpus_search.cli import main
    from query.settings import get_settings

    request.addfinalizer(get_settings.cache_clear)  # do not leak the allowed-private settings

    paragraphs = [
        "Europe is a continent located entirely in the Northern Hemisphere and mostly in the Eastern Hemisphere.",
        "It is bordered by the Arctic Ocean to the north and the Atlantic Ocean to the west.",
        "The European Union is a political and economic union of member states in Europe.",
    ]
    url = site.page("/europe.html", html_page("Europe", paragraphs))
    monkeypatch.setenv("CORPUS_SEARCH_FETCH_ALLOW_PRIVATE", "true")  # the test server is on 127.0.0.1
    get_settings.cache_clear()
    assert main(["search-document", url, "Where is Europe?", "-k", "2", "--json", "--cross-encoder", cross_encoder_path]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reranked"] is True and len(out["hits"]) == 2
    assert {h["text"] for h in out["hits"]} <= set(paragraphs)
    # The keys scripts rely on, first and in order; later keys (highlights, origin, published, metadata) are additive.
    assert list(out["hits"][0])[:8] == ["rank", "score", "retrieval_score", "id", "doc_id", "title", "text", "source"]
    assert set(out["hits"][0]) == {"rank", "score", "retrieval_score", "id", "doc_id", "title", "text", "source",
                                   "highlights", "origin", "published", "metadata"}


def test_search_document_without_a_cross_encoder_answers_with_the_bi_encoder_and_one_warning(tmp_path):
    page = tmp_path / "europe.html"
    page.write_text(html_page("Europe", [
        "Europe is a continent located entirely in the Northern Hemisphere and mostly in the Eastern Hemisphere.",
        "The European Union is a political and economic union of member states in Europe."]), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CORPUS_SEARCH_CROSS_ENCODER": str(tmp_path / "no-such-model")}
    base = [sys.executable, "-m", "corpus_search.cli", "search-document", str(page), "Where is Europe?", "-k", "1"]
    out = subprocess.run([*base, "--json"], cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout)
    assert answer["reranked"] is False and answer["hits"][0]["text"].startswith("Europe is a continent")
    assert out.stderr.count("corpus-search: warning: re-ranking did not run") == 1
    strict = subprocess.run([*base, "--require-rerank"], cwd=REPO, capture_output=True, text=True, timeout=180,
                            env=env)
    assert strict.returncode == 2 and strict.stderr.startswith("corpus-search: error:")


def test_cli_search_json_has_the_documented_keys(corpus_db, cross_encoder_path, capsys):
    from corpus_search.cli import main

    assert main(["search", "How do bees make honey?", "--db", corpus_db, "-c", "sample", "-k", "3", "--json",
                 "--cross-encoder", cross_encoder_path]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"query", "mode", "reranked", "hits"} and out["reranked"] is True and out["mode"] == "hybrid"
    assert len(out["hits"]) == 3


def test_importing_query_and_searching_never_imports_prefect(corpus_db):
    code = textwrap.dedent(f"""
        import sys
        import query
        from query import Searcher
        hits = Searcher(db_uri={corpus_db!r}, collection="sample").search("glaciers", k=2, rerank=False)
        assert hits, "no hits"
        bad = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]


def test_queries_during_an_index_run_stay_consistent(corpus_db, tmp_path):
    """A second process queries in a loop while the index flow writes to the same collection."""
    from flows.index_corpus import index_corpus

    notes = tmp_path / "more"
    notes.mkdir()
    for i in range(40):
        (notes / f"n{i}.txt").write_text(f"Note {i} about glaciers and ice sheets, paragraph one of many words.\n\n"
                                         f"Second paragraph {i} mentions the Alps, valleys and melting snow.")
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    code = textwrap.dedent(f"""
        import pathlib, sys, time
        from query import Searcher
        s = Searcher(db_uri={corpus_db!r}, collection="sample")
        n = 0
        while not pathlib.Path({str(stop)!r}).exists() and n < 2000:
            for mode in ("dense", "lexical", "hybrid"):
                hits = s.search("glaciers ice", k=10, mode=mode, rerank=False)
                ids = [h.id for h in hits]
                assert len(ids) == len(set(ids)), ("duplicate ids", mode)
                assert all(h.text for h in hits)
            n += 1
            pathlib.Path({str(ready)!r}).touch()
        print(n)
    """)
    reader = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the reader is loading its model; start writing once it queries
        assert ready.exists(), reader.stderr.read()[-3000:] if reader.poll() is not None else "reader never got ready"
        index_corpus([str(notes)], collection="sample", db_uri=corpus_db)
    finally:
        stop.write_text("done")
        out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err[-3000:]
    assert int(out.strip()) >= 2  # it kept querying while the flow wrote


def test_a_lexical_search_without_rerank_imports_no_torch_sentence_transformers_or_prefect(corpus_db):
    code = textwrap.dedent(f"""
        import sys
        import query
        from query import Searcher
        hits = Searcher(db_uri={corpus_db!r}, collection="sample").search(
            "glaciers", k=2, mode="lexical", rerank=False)
        assert hits, "no hits"
        heavy = ("torch", "sentence_transformers", "transformers", "prefect")
        bad = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
        assert not bad, bad[:20]
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_first_search_of_a_process_reports_model_loading_apart_from_encoding(corpus_db):
    """A cold CLI call must not read as a slow encode: loading the models is its own timing."""
    code = textwrap.dedent(f"""
        import json
        from query import Searcher
        s = Searcher(db_uri={corpus_db!r}, collection="sample")
        cold = s.search("glaciers", k=2, rerank=False).timings
        warm = s.search("glaciers", k=2, rerank=False).timings
        print(json.dumps([cold.load, cold.encode, cold.total, warm.load, warm.encode]))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    cold_load, cold_encode, cold_total, warm_load, warm_encode = json.loads(out.stdout.splitlines()[-1])
    assert cold_load > 10 * warm_load and cold_load > cold_encode  # the bi-encoder loads once, in the first call
    assert cold_load + cold_encode <= cold_total
    assert warm_encode > 0
