"""Results as tables, paging, score thresholds and highlights (issue #12, item 5), on a real collection.

One small collection is written by the indexing stages' own functions (``tests.test_api._index``: no
Prefect server, whose harness alone takes ~25 s here) with the real MiniLM bi-encoder; the re-ranker is
a real tiny BERT cross-encoder. Highlights are checked word by word against LanceDB's own full-text index.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from datetime import UTC, datetime

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from query.errors import InvalidQueryError
from query.highlight import highlight, query_terms
from query.hits import Hit, Hits
from tests.test_api import _index, serving

COLLECTION = "results"
PARAGRAPHS = [
    "Search engines keep an inverted index: every page is indexed once, then searched many times.",
    "Indexing a large collection takes hours, so the INDEXER only re-reads pages that changed.",
    "The Café Zürich serves coffee and cake; its naïve menu lists espresso, cappuccino and tea.",
    "Glaciers form where more snow falls in winter than melts in summer, compacting into ice.",
    "A glacier flows downhill under its own weight, carving valleys shaped like the letter U.",
    "Runners who keep running every day run further: the runs get easier as fitness builds.",
    "Honey bees collect nectar from flowers and turn it into honey inside the hive's wax cells.",
    "Volcanoes erupt when magma rises through cracks in the crust and pressure is released.",
    "The printing press with movable type made books cheap, and reading spread across Europe.",
    "Tides rise and fall twice a day because the moon's gravity pulls the oceans into bulges.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in leaves.",
    "Penguins keep warm with dense feathers, a layer of fat and by huddling in large groups.",
]
QUERY = "How are pages indexed by search engines?"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    from tasks.records import Article

    uri = str(tmp_path_factory.mktemp("results") / "lancedb")
    _index(uri, COLLECTION, [Article(doc_id="facts.txt", source="/corpus/facts.txt", title="Assorted facts",
                                     body="\n\n".join(PARAGRAPHS), kind="text")])
    return uri


@pytest.fixture(scope="module")
def ce_path(tmp_path_factory) -> str:
    from tests._models import build_cross_encoder

    return str(build_cross_encoder(tmp_path_factory.mktemp("results-ce") / "model", body="tiny-bert"))


@pytest.fixture(scope="module")
def searcher(db, ce_path):
    from query.searcher import Searcher

    return Searcher(db_uri=db, collection=COLLECTION, cross_encoder=ce_path)


def _cell(value, field: pa.Field):
    """An Arrow row value as the Hit field holds it."""
    if pa.types.is_map(field.type) and value is not None:
        return dict(value)
    if field.name == "highlights":
        return tuple((d["start"], d["end"]) for d in value)
    return value


# ---------------------------------------------------------------- Hits: a list that converts to tables


def test_search_returns_hits_that_are_a_list_of_hit_and_slice_to_hits(searcher):
    hits = searcher.search(QUERY, k=5)
    assert isinstance(hits, Hits) and isinstance(hits, list) and len(hits) == 5
    assert all(isinstance(h, Hit) for h in hits) and hits[0].rank == 1
    assert hits == list(hits) and hits[1:3] == [hits[1], hits[2]]
    assert isinstance(hits[1:3], Hits) and hits[1:3].query == hits.query == QUERY
    assert hits.mode == "hybrid" and hits.timings is searcher.timings
    many = searcher.search_many([QUERY, "glaciers"], k=2)
    assert all(isinstance(h, Hits) for h in many) and [h.query for h in many] == [QUERY, "glaciers"]


def test_to_arrow_has_every_hit_field_typed_and_the_values_of_the_hits(searcher):
    hits = searcher.search(QUERY, k=6)
    table = hits.to_arrow()
    assert table.column_names == [f.name for f in dataclasses.fields(Hit)]
    assert table.schema == Hits.schema() and table.num_rows == len(hits) == 6
    types = {f.name: f.type for f in table.schema}
    assert types["published"] == pa.timestamp("us", tz="UTC")
    assert types["metadata"] == pa.map_(pa.string(), pa.string())
    assert types["highlights"] == pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32())]))
    assert types["score"] == pa.float64() and types["rank"] == pa.int64() and types["text"] == pa.string()
    for row, hit in zip(table.to_pylist(), hits, strict=True):
        assert {f.name: _cell(row[f.name], f) for f in table.schema} == dataclasses.asdict(hit) | {
            "highlights": hit.highlights}


def test_to_pandas_gives_one_row_per_hit_with_the_same_values(searcher):
    hits = searcher.search(QUERY, k=4, rerank=False)
    df = hits.to_pandas()
    assert list(df.columns) == [f.name for f in dataclasses.fields(Hit)] and len(df) == 4
    assert df["id"].tolist() == [h.id for h in hits] and df["rank"].tolist() == [1, 2, 3, 4]
    assert df["score"].tolist() == [h.score for h in hits] and df["text"].tolist() == [h.text for h in hits]
    assert [tuple((d["start"], d["end"]) for d in v) for v in df["highlights"]] == [h.highlights for h in hits]
    assert str(df["published"].dtype) == "datetime64[us, UTC]"


def test_metadata_and_published_convert_as_map_and_utc_timestamp():
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    hits = Hits([Hit(1, 0.9, 0.5, "p1", "d1", "T", "some text", "/a.md", metadata={"author": "Ada"}, published=when,
                     highlights=((0, 4),)),
                 Hit(2, 0.8, 0.4, "p2", "d2", "", "more", "/b.md")])
    table = hits.to_arrow()
    assert table["published"].to_pylist() == [when, None]
    assert table["metadata"].to_pylist() == [[("author", "Ada")], None]
    df = hits.to_pandas()
    assert df["metadata"][0] == {"author": "Ada"} and df["published"][0] == when
    assert df["highlights"][0][0] == {"start": 0, "end": 4}


def test_an_empty_result_is_an_empty_table_with_the_same_schema(searcher):
    hits = searcher.search(QUERY, k=5, where={"doc_id": "no-such-document"})
    assert hits == [] and isinstance(hits, Hits)
    table = hits.to_arrow()
    assert table.num_rows == 0 and table.schema == Hits.schema()
    df = hits.to_pandas()
    assert len(df) == 0 and list(df.columns) == table.column_names


def test_to_pandas_without_pandas_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # what Python does for a package that is not installed
    with pytest.raises(ImportError, match=re.escape("pip install 'corpus-search[pandas]'")):
        Hits().to_pandas()


# ---------------------------------------------------------------- offset and score_threshold


@pytest.mark.parametrize(("mode", "rerank"), [("hybrid", True), ("lexical", False), ("dense", False)])
def test_page_two_equals_hits_k_plus_1_to_2k_of_one_bigger_query(searcher, mode, rerank):
    # candidates=4 is fewer than the page's last rank: the pool must grow to offset + k for both.
    page2 = searcher.search("indexing pages, glaciers and coffee", k=3, offset=3, candidates=4, mode=mode,
                            rerank=rerank)
    bigger = searcher.search("indexing pages, glaciers and coffee", k=6, candidates=4, mode=mode, rerank=rerank)
    assert len(bigger) == 6 or mode == "lexical"
    assert page2 == bigger[3:6] and [h.rank for h in page2] == list(range(4, 4 + len(page2)))
    assert searcher.search("glaciers", k=5, offset=len(PARAGRAPHS) + 5, mode=mode, rerank=rerank) == []


def test_score_threshold_drops_the_hits_scoring_below_it(searcher):
    for rerank in (True, False):
        everything = searcher.search(QUERY, k=10, rerank=rerank)
        cut = float(np.median([h.score for h in everything]))
        kept = searcher.search(QUERY, k=10, rerank=rerank, score_threshold=cut)
        assert kept == [h for h in everything if h.score >= cut] and 0 < len(kept) < len(everything)
    assert searcher.search(QUERY, k=10, score_threshold=1.01) == []  # re-ranked scores are at most 1
    page = searcher.search(QUERY, k=3, offset=2, score_threshold=-1.0)
    assert [h.rank for h in page] == [3, 4, 5]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"offset": -1}, "offset must be a whole number from 0"),
    ({"offset": 1.5}, "offset must be a whole number from 0"),
    ({"offset": True}, "offset must be a whole number from 0"),
    ({"offset": 999_999, "k": 5}, "offset must be a whole number from 0 to 999,995"),
    ({"score_threshold": float("nan")}, "score_threshold must be a finite number"),
    ({"score_threshold": "0.5"}, "score_threshold must be a finite number"),
    ({"score_threshold": True}, "score_threshold must be a finite number"),
])
def test_bad_offsets_and_thresholds_are_clear_errors(searcher, kwargs, fragment):
    with pytest.raises(InvalidQueryError, match=re.escape(fragment)):
        searcher.search(QUERY, **kwargs)


def test_rank_passages_pages_filters_and_highlights_too(ce_path):
    from query.searcher import rank_passages

    everything = rank_passages("indexing", PARAGRAPHS, k=len(PARAGRAPHS), cross_encoder=ce_path)
    assert isinstance(everything, Hits)
    page = rank_passages("indexing", PARAGRAPHS, k=3, offset=3, cross_encoder=ce_path)
    assert page == everything[3:6] and [h.rank for h in page] == [4, 5, 6]
    cut = everything[4].score
    assert rank_passages("indexing", PARAGRAPHS, k=12, score_threshold=cut, cross_encoder=ce_path) == everything[:5]
    marked = {h.text[s:e] for h in everything for s, e in h.highlights}
    assert marked == {"index", "indexed", "Indexing", "INDEXER"}  # Porter2 stems all four to "index"


# ---------------------------------------------------------------- highlights


def _marked(text: str, query: str) -> list[str]:
    spans = highlight(text, query_terms(query))
    assert list(spans) == sorted(spans) and all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))
    return [text[s:e] for s, e in spans]


def test_highlights_match_stemmed_words_as_porter2_does():
    text = "Pages are indexed; indexing is fast. An index, two Indexes. The indexer ran; runners keep running."
    assert _marked(text, "indexing") == ["indexed", "indexing", "index", "Indexes", "indexer"]  # all: "index"
    assert _marked(text, "runs") == ["running"]  # run: not "ran" (irregular) nor "runners" (stem "runner")
    assert _marked("Glaciers formed; a formation", "glacier form") == ["Glaciers", "formed"]  # "format" differs


def test_highlights_ignore_stop_words_and_fold_case_and_accents():
    assert _marked("What is the capital of France? The capital is Paris.", "what is THE capital of france") == [
        "capital", "France", "capital"]
    assert _marked("Le CAFÉ de Zürich et un cafe naïf", "cafe zurich") == ["CAFÉ", "Zürich", "cafe"]
    assert _marked("a naïve résumé", "NAIVE") == ["naïve"]
    assert _marked("the_index and re-indexing", "index") == ["index", "indexing"]  # "_" and "-" split words
    assert query_terms("the of and what doing") == frozenset()  # "doing" stems to the stop word "do"
    assert _marked("nothing matches here", "") == []


def test_highlights_agree_with_lancedb_full_text_search_word_by_word(tmp_path):
    """A word is highlighted for a query exactly when LanceDB's FTS (configured as tasks/store.py does) matches it."""
    from lancedb.index import FTS
    from lancedb.query import MatchQuery

    words = ["indexed", "indexing", "Index", "running", "runs", "ran", "Café", "cafe", "résumés", "resume",
             "naïve", "NAIVE", "Straße", "strasse", "the", "what", "how", "do", "does", "doing", "generously",
             "generous", "dying", "die", "skies", "sky", "ÆON", "aeon", "œuvre", "oeuvre", "ﬁsh", "fish",
             "happily", "happy", "x" * 41, "ångström", "angstrom", "connection", "connected", "ponies", "pony",
             "İstanbul", "istanbul", "Ørsted", "orsted", "caresses", "caress", "argued", "argue", "news",
             "heres", "here", "yourselves", "ourselves", "won", "wont", "2024", "π",
             "not", "no", "nor", "don", "couldn", "re",  # lancedb 0.41 keeps negations and contraction pieces
             # Vowel signs are Alphabetic to the index ("हिन्दी" is हिन + दी, split at the virama): split at
             # them too, single letters were marked inside unrelated words ("न" in "किनारे").
             "हिन्दी", "हिन", "दी", "ह", "न", "किनारे", "के", "ภาษาไทย", "ไทย", "বাংলা", "ব"]
    table = lancedb.connect(str(tmp_path)).create_table("w", pa.table({"id": list(range(len(words))), "text": words}))
    table.create_index("text", config=FTS(stem=True, remove_stop_words=True, ascii_folding=True))
    disagree = []
    for query in words:
        found = table.search(MatchQuery(query, "text"), query_type="fts").select(["id"]).limit(100).to_arrow()
        lance = sorted(words[i] for i in found["id"].to_pylist())
        ours = sorted(w for w in words if highlight(w, query_terms(query)))
        if lance != ours:
            disagree.append((query, lance, ours))
    assert disagree == []


def test_search_hits_carry_highlights_of_the_query_words(searcher):
    for rerank, mode in ((True, "hybrid"), (False, "lexical"), (False, "dense")):
        hits = searcher.search("indexing pages", k=12, mode=mode, rerank=rerank)
        for h in hits:
            words = {h.text[s:e].lower() for s, e in h.highlights}
            assert words <= {"indexed", "indexing", "index", "indexer", "pages", "page"}, (h.text, words)
        marked = {h.text: [h.text[s:e] for s, e in h.highlights] for h in hits}
        assert marked[PARAGRAPHS[0]] == ["index", "page", "indexed"]
        assert marked[PARAGRAPHS[1]] == ["Indexing", "INDEXER", "pages"]
        # Lexical hits are exactly the paragraphs with a matching word (the title "Assorted facts" has none).
        if mode == "lexical":
            assert all(h.highlights for h in hits)


# ---------------------------------------------------------------- CLI and API


def test_cli_search_pages_filters_and_prints_highlights_in_json(db, ce_path, capsys):
    from corpus_search.cli import main

    base = ["search", "indexing pages", "--db", db, "-c", COLLECTION, "--cross-encoder", ce_path, "--json"]
    assert main([*base, "-k", "4"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*base, "-k", "2", "--offset", "2"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["hits"] == first["hits"][2:4] and [h["rank"] for h in page["hits"]] == [3, 4]
    hit = first["hits"][0]
    assert list(hit)[:8] == ["rank", "score", "retrieval_score", "id", "doc_id", "title", "text", "source"]
    assert all(isinstance(p, list) and hit["text"][p[0]:p[1]] for p in hit["highlights"])
    cut = first["hits"][1]["score"]
    assert main([*base, "-k", "4", "--score-threshold", str(cut)]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == [h for h in first["hits"] if h["score"] >= cut]


def test_cli_text_output_is_bold_only_at_a_terminal(db, capsys, monkeypatch):
    from corpus_search import cli
    from corpus_search.answers import BOLD, PLAIN

    argv = ["search", "indexing pages", "--db", db, "-c", COLLECTION, "--mode", "lexical", "--no-rerank"]
    assert cli.main(argv) == 0
    piped = capsys.readouterr().out
    assert "\x1b" not in piped and "stages: " in piped  # capsys is a pipe, as `| less` or a file would be
    monkeypatch.setattr(cli, "_emphasis", lambda: True)
    assert cli.main(argv) == 0
    shown = capsys.readouterr().out
    assert f"{BOLD}indexed{PLAIN}" in shown and f"{BOLD}Indexing{PLAIN}" in shown and f"{BOLD}INDEXER{PLAIN}" in shown
    assert re.sub(r"\x1b\[\d+m", "", shown) == piped.replace(
        re.search(r"\[(load models|encode) .*\]", piped).group(), re.search(r"\[(load models|encode) .*\]", shown).group())


def test_cli_rejects_a_negative_offset_and_a_nan_threshold(db, capsys):
    from corpus_search.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["search", "q", "--db", db, "-c", COLLECTION, "--offset", "-2"])
    assert exc.value.code == 2 and "must be a whole number >= 0" in capsys.readouterr().err
    assert main(["search", "q", "--db", db, "-c", COLLECTION, "--score-threshold", "nan", "--no-rerank"]) == 2
    assert "score_threshold must be a finite number" in capsys.readouterr().err


def test_api_takes_offset_and_score_threshold_and_search_api_passes_them(db, ce_path, capsys):
    import httpx

    from corpus_search.cli import main
    from query.settings import Settings

    settings = Settings(db_uri=db, collection=COLLECTION, cross_encoder=ce_path)
    with serving(settings, collections=[COLLECTION]) as url:
        body = {"query": "indexing pages", "collection": COLLECTION, "k": 4}
        first = httpx.post(url + "/search", json=body, timeout=60).json()
        page = httpx.post(url + "/search", json={**body, "k": 2, "offset": 2}, timeout=60).json()
        assert page["hits"] == first["hits"][2:4] and all("highlights" in h for h in page["hits"])
        cut = first["hits"][1]["score"]
        kept = httpx.post(url + "/search", json={**body, "score_threshold": cut}, timeout=60).json()
        assert kept["hits"] == [h for h in first["hits"] if h["score"] >= cut]
        bad = httpx.post(url + "/search", json={**body, "offset": -1}, timeout=60)
        assert bad.status_code == 400 and "offset must be a whole number" in bad.json()["error"]
        assert main(["search", "indexing pages", "-c", COLLECTION, "--api", url, "--json", "-k", "2",
                     "--offset", "2"]) == 0
        assert json.loads(capsys.readouterr().out)["hits"] == first["hits"][2:4]


def test_cli_search_document_pages_and_filters_a_local_file(tmp_path, ce_path, capsys):
    from corpus_search.cli import main

    doc = tmp_path / "facts.txt"
    doc.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    base = ["search-document", str(doc), "indexing pages", "--cross-encoder", ce_path, "--json"]
    assert main([*base, "-k", "12"]) == 0
    first = json.loads(capsys.readouterr().out)["hits"]
    assert main([*base, "-k", "2", "--offset", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == first[2:4]
    assert main([*base, "-k", "12", "--score-threshold", str(first[1]["score"])]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == first[:2]
    marked = [h["text"][s:e] for h in first for s, e in h["highlights"]]
    assert sorted(marked) == sorted(["index", "page", "indexed", "Indexing", "INDEXER", "pages"])


def test_an_empty_answer_says_in_text_what_most_likely_left_it_empty():
    """Only the stages line was printed: a filter typo, a threshold that cut everything and a document without
    text all looked the same."""
    from corpus_search.answers import Answer, answer_text

    def text(stages: str) -> str:
        return answer_text(Answer({"query": "q", "mode": "hybrid", "reranked": False, "hits": []}, stages), False)

    assert text("retrieve (hybrid, 100 candidates, filtered)").endswith(
        "no hits: the filters (--where) matched no paragraph: their values are compared exactly as stored")
    assert "no paragraph contains the query's words" in text("retrieve (lexical, 100 candidates)")  # no filter given
    assert "every hit scored below the score threshold" in text("retrieve (hybrid, 30 candidates) → score >= 0.5")
    assert "starts past the last hit" in text("retrieve (hybrid, 30 candidates) → hits 11..20")
    # Either can empty a page with both: said as one or the other, not as two facts (the page was not past the end).
    assert text("retrieve (hybrid, 30 candidates) → hits 11..20, score >= 0.5").endswith(
        "no hits: every hit on the page asked for scored below the score threshold, or the page starts past the last hit")
    assert text("fetch + split (0 paragraphs) → cross-encoder only").endswith("no hits: the document has no text to rank")
    assert json.loads(answer_text(Answer({"hits": []}, "x"), True)) == {"hits": []}  # --json stays the payload
