"""Evaluation: loaders (BEIR, TREC) with file:line errors, MaxP, ir-measures wrapper, and the evaluate flow end to end."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tasks.datasets import (
    DatasetFormatError,
    load_beir_corpus,
    load_beir_qrels,
    load_beir_queries,
    load_dataset,
    load_qrels,
    load_queries,
    load_trec_qrels,
    load_trec_topics,
)
from tasks.metrics import NO_HIT, evaluate_run, maxp, rank_run

FIX = Path(__file__).resolve().parent / "fixtures"
BEIR = FIX / "beir_tiny"
TREC = FIX / "trec"


# --------------------------------------------------------------------------- loaders


def test_beir_loaders():
    corpus = load_beir_corpus(BEIR / "corpus.jsonl")
    assert len(corpus) == 6 and corpus["d3"][0] == "Honeybees"
    queries = load_beir_queries(BEIR / "queries.jsonl")
    assert list(queries)[:2] == ["q1", "q2"] and queries["q4"] == "Sicilian Defence chess opening"
    assert load_beir_qrels(BEIR / "qrels" / "test.tsv") == {"q1": {"d3": 1}, "q2": {"d2": 1}, "q3": {"d1": 1}, "q4": {"d4": 1}}


def test_dataset_keeps_only_judged_queries_of_the_split():
    test = load_dataset(BEIR)
    assert test.name == "beir_tiny" and test.corpus == BEIR / "corpus.jsonl"
    assert sorted(test.queries) == ["q1", "q2", "q3", "q4"] and test.unjudged_queries == 1
    train = load_dataset(BEIR, split="train")
    assert list(train.queries) == ["q9"]
    with pytest.raises(DatasetFormatError, match="no qrels for split 'dev'.*test, train"):
        load_dataset(BEIR, split="dev")


def test_trec_topics_both_formats():
    robust = load_trec_topics(TREC / "topics.robust.txt")
    assert robust == {"301": "International Organized Crime", "302": "Poliomyelitis and Post-Polio"}
    assert load_trec_topics(TREC / "topics.robust.txt", field="desc")["302"] == (
        "Is the disease of Poliomyelitis (polio) under control?"
    )
    cacm = load_queries(TREC / "topics.cacm.txt")  # sniffed as TREC
    assert cacm["1"] == "What articles exist which deal with TSS (Time Sharing System), an operating system for IBM computers?"
    assert cacm["2"] == "I am interested in articles written either by Prieve or Udo Pooch Prieve, B. Pooch, U."


def test_trec_qrels():
    assert load_trec_qrels(TREC / "qrels.cacm.txt") == {"1": {"CACM-1410": 1, "CACM-1572": 1}, "2": {"CACM-2434": 2}}
    assert load_qrels(TREC / "qrels.cacm.txt") == load_trec_qrels(TREC / "qrels.cacm.txt")  # sniffed: 4 columns


@pytest.mark.parametrize(
    ("name", "content", "loader", "where", "what"),
    [
        ("q.jsonl", '{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n', load_beir_queries, ":2:", "not valid JSON"),
        ("q.jsonl", '{"_id": "1", "text": "ok"}\n\n{"text": "no id"}\n', load_beir_queries, ":3:", "missing '_id'"),
        ("c.jsonl", '{"_id": "1", "title": "t"}\n', load_beir_corpus, ":1:", "missing 'text'"),
        ("r.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\n", load_beir_qrels, ":3:", "3 tab-separated columns"),
        ("r.tsv", "query-id\tcorpus-id\tscore\n1\td1\thigh\n", load_beir_qrels, ":2:", "not an integer"),
        ("t.txt", "1\tok\n2\n", load_trec_topics, ":2:", "qid<TAB>query"),
        ("t.txt", "<top>\n<num> Number: 7\n<title> a\n", load_trec_topics, ":1:", "never closed"),
        ("t.txt", "<top>\n<title> no number\n</top>\n", load_trec_topics, ":1:", "without a <num>"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, name, content, loader, where, what):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetFormatError) as exc:
        loader(path)
    assert f"{path}{where}" in str(exc.value) and what in str(exc.value)


def test_a_beir_qrels_file_whose_corpus_ids_hold_spaces_is_not_read_as_trec(tmp_path):
    qrels = tmp_path / "test.tsv"
    qrels.write_text("q1\tdoc 02\t1\nq2\tdoc 7\t2\n")  # no header; "doc 02" split on whitespace is 4 columns
    assert load_qrels(qrels) == {"q1": {"doc 02": 1}, "q2": {"doc 7": 2}}
    qrels.write_text("1 0 CACM-1410 1\n")
    assert load_qrels(qrels) == {"1": {"CACM-1410": 1}}  # TREC, space-separated, still TREC
    qrels.write_text("1\t0\tCACM-1410\t1\n")
    assert load_qrels(qrels) == {"1": {"CACM-1410": 1}}  # and tab-separated


def test_a_pair_judged_twice_with_two_grades_keeps_the_higher_and_the_dataset_says_so(tmp_path):
    import shutil

    shutil.copytree(BEIR, tmp_path / "d")
    qrels = tmp_path / "d" / "qrels" / "test.tsv"
    first = next(line for line in qrels.read_text().splitlines()[1:] if line.strip())
    qid, doc, grade = first.split("\t")
    qrels.write_text(qrels.read_text() + f"{qid}\t{doc}\t0\n{qid}\t{doc}\t{grade}\n")  # a 0, then the grade again
    data = load_dataset(tmp_path / "d")
    assert data.qrels == load_dataset(BEIR).qrels  # the higher grade, not the last line's
    assert len(data.notes) == 1 and "judged twice with different grades; the higher grade is kept" in data.notes[0]
    assert f"{qid} {doc}: {grade} on line 2, 0 on line" in data.notes[0]
    assert not load_dataset(BEIR).notes


def test_qrels_with_a_trailing_tab_or_another_header_are_read_as_beir(tmp_path):
    qrels = tmp_path / "test.tsv"
    qrels.write_text("q1\td1\t1\t\nq2\td2\t2\t\n")  # a tab at each line's end: still 3 columns
    assert load_qrels(qrels) == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    for header in ("qid\tdocid\trel", "query_id\tdoc_id\trelevance_score", "topic\tdocno\tjudged"):  # other names
        qrels.write_text(f"{header}\nq1\td1\t1\n")
        assert load_qrels(qrels) == {"q1": {"d1": 1}}, header
    for first in ("q1\td1\t1.5\n", "q1\td1\tyes\n"):  # a judgment with a bad grade is no header: refused
        qrels.write_text(first + "q2\td2\t1\n")
        with pytest.raises(DatasetFormatError, match=":1: relevance .* is not an integer"):
            load_qrels(qrels)


@pytest.mark.parametrize("name", ["queries.jsonl", "qrels/test.tsv"])
def test_a_dataset_file_that_is_not_utf8_names_its_file_line_and_the_fix(tmp_path, name):
    import shutil

    shutil.copytree(BEIR, tmp_path / "d")
    path = tmp_path / "d" / name
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2].replace(b"\t", b"\xe9\t", 1).replace(b'"text": "', b'"text": "\xe9', 1)
                     + b"".join(lines[3:]))
    with pytest.raises(DatasetFormatError) as exc:
        load_dataset(tmp_path / "d")
    assert f"{path}:3: not UTF-8 (byte 0xe9)" in str(exc.value) and "iconv" in str(exc.value)


def test_a_missing_qrels_file_given_by_name_is_said_to_be_missing(tmp_path):
    with pytest.raises(DatasetFormatError, match="nope.tsv: no such file"):
        load_dataset(BEIR, qrels=tmp_path / "nope.tsv")


def test_ids_that_are_not_numbers_never_merge_by_leading_zeros(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text('{"_id": "a1", "text": "x"}\n{"_id": "b2", "text": "y"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("0a1\td1\t1\n")
    with pytest.raises(DatasetFormatError, match="judged queries are not in"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("name", ["queries.jsonl", "corpus.jsonl", "qrels/test.tsv"])
def test_a_utf8_byte_order_mark_at_the_start_of_a_dataset_file_is_read_past(tmp_path, name):
    import shutil

    shutil.copytree(BEIR, tmp_path / "d")
    path = tmp_path / "d" / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Windows tools write UTF-8
    data = load_dataset(tmp_path / "d")
    assert data.queries == load_dataset(BEIR).queries and data.qrels == load_dataset(BEIR).qrels
    assert load_beir_corpus(tmp_path / "d" / "corpus.jsonl") == load_beir_corpus(BEIR / "corpus.jsonl")


def test_an_empty_query_text_names_its_file_line_and_query(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": "  "}\n')
    with pytest.raises(DatasetFormatError, match=r"queries\.jsonl:2: query 'q2' has an empty 'text'"):
        load_beir_queries(path)


def test_eval_warns_when_relevant_judged_documents_are_not_in_the_collection():
    from flows.evaluate import unjudgeable

    qrels = {"q1": {"d1": 1, "d9": 0}, "q2": {"d2": 2, "dX": 1}}
    assert unjudgeable(qrels, {"d1", "d2", "dX"}) is None  # d9 is judged not relevant: no matter
    few = unjudgeable(qrels, {"d1", "d2"})
    assert few.startswith("1 of 3 relevant judged documents are not in the collection, or have no text to index (e.g. ['dX'])")
    assert "check that the qrels" not in few
    assert "check that the qrels' corpus-ids are the corpus's _id values" in unjudgeable(qrels, {"02"})


def test_malformed_fixture_files():
    with pytest.raises(DatasetFormatError, match=r"topics\.malformed\.txt:5: <DOC> without a <DOCNO>"):
        load_trec_topics(TREC / "topics.malformed.txt")
    with pytest.raises(DatasetFormatError, match=r"qrels\.malformed\.txt:2: expected 4 columns"):
        load_trec_qrels(TREC / "qrels.malformed.txt")


# --------------------------------------------------------------------------- MaxP and metrics


def test_a_split_without_relevant_judgments_is_refused_before_anything_is_indexed(tmp_path):
    """It indexed the whole corpus, then crashed on NaN metrics (exit 1)."""
    ds = tmp_path / "ds"
    (ds / "qrels").mkdir(parents=True)
    (ds / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (ds / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    with pytest.raises(DatasetFormatError, match="no relevant judgments"):
        load_dataset(ds)


def test_leading_zero_ids_merge_their_judgments_and_never_join_two_queries(tmp_path):
    """A remap that replaced instead of merging lost judgments ("51 d1" and "051 d2": d1 gone)."""
    topics = tmp_path / "topics.txt"
    topics.write_text("<top>\n<num> Number: 051\n<title> Topic: airbus subsidies\n</top>\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("51 0 d1 1\n051 0 d2 1\n")
    assert load_dataset(tmp_path, queries=str(topics), qrels=str(qrels)).qrels == {"51": {"d1": 1, "d2": 1}}
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "1", "text": "a"}\n{"_id": "01", "text": "b"}\n')  # two queries, one number
    qrels.write_text("001 0 d1 1\n")
    with pytest.raises(DatasetFormatError, match="judged queries are not in"):
        load_dataset(tmp_path, queries=str(queries), qrels=str(qrels))


def test_trec_qrels_and_topics_match_with_or_without_leading_zeros(tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("<top>\n<num> Number: 051\n<title> Topic: airbus subsidies\n</top>\n")
    for qid in ("051", "51"):
        qrels = tmp_path / f"qrels-{qid}.txt"
        qrels.write_text(f"{qid} 0 d1 1\n")
        data = load_dataset(tmp_path, queries=str(topics), qrels=str(qrels))
        assert data.qrels == {"51": {"d1": 1}} and list(data.queries) == ["51"]


def test_maxp_hand_made():
    # Paragraph hits of one query, best first by retrieval, but scores are what counts.
    doc_ids = ["A", "B", "A", "C", "B", "D", "C"]
    scores = [0.9, 0.8, 0.95, 0.8, 0.7, 0.1, 0.85]
    # A: max(0.9, 0.95) = 0.95; C: max(0.8, 0.85) = 0.85; B: 0.8; D: 0.1
    assert maxp(doc_ids, scores) == [("A", 0.95), ("C", 0.85), ("B", 0.8), ("D", 0.1)]
    assert [d for d, _ in maxp(doc_ids, scores, depth=2)] == ["A", "C"]
    # Ties keep first appearance order: X before Y.
    assert [d for d, _ in maxp(["X", "Y", "X"], [0.5, 0.5, 0.2])] == ["X", "Y"]
    assert maxp([], []) == []
    with pytest.raises(ValueError, match="2 doc ids but 1 scores"):
        maxp(["a", "b"], [1.0])


def test_rank_run_and_ir_measures():
    run = rank_run({"q1": ["b", "a", "b"], "q2": []})
    assert run == {"q1": {"b": 2.0, "a": 1.0}, "q2": {NO_HIT: 0.0}}
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    m = evaluate_run(qrels, {"q1": ["b", "a"]})  # q2 has no run: counts 0
    assert m["mrr@10"] == pytest.approx(0.25) and m["recall@100"] == pytest.approx(0.5) and m["map"] == pytest.approx(0.25)
    assert m["ndcg@10"] == pytest.approx(0.5 / 1.584962500721156)  # 1/log2(3), halved
    # Our order is what is scored, never trec_eval's docid tie-break.
    assert evaluate_run({"q": {"z": 1}}, {"q": ["z", "a"]})["ndcg@10"] == 1.0


def test_extract_archive_and_html_ids(tmp_path):
    from flows.evaluate import extract_archive, html_doc_id

    src = tmp_path / "src"
    src.mkdir()
    (src / "DOC-1.html").write_text("<html><pre>Hello</pre></html>")
    archive = tmp_path / "docs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "DOC-1.html", arcname="DOC-1.html")
    out = extract_archive(archive, tmp_path / "cache")
    assert (out / "DOC-1.html").read_text().startswith("<html>")
    assert extract_archive(archive, tmp_path / "cache") == out  # stable: same source root on every run
    assert html_doc_id("CACM-0001.html") == "CACM-0001" and html_doc_id("sub/x.htm") == "sub/x" and html_doc_id("42") == "42"


# --------------------------------------------------------------------------- end to end


def test_eval_cli_end_to_end(prefect_harness, db_uri, tmp_path, capsys):
    """Real index flow, real MiniLM, real LanceDB: each query's one relevant document ranks first in every mode."""
    from corpus_search.cli import main

    out = tmp_path / "results.json"
    argv = ["eval", str(BEIR), "--db", db_uri, "--collection", "tiny-eval", "--modes", "lexical,dense,hybrid",
            "--no-rerank", "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Issue 12: --json now carries the --out document (details, warnings too); the original keys stay.
    assert {"dataset", "queries", "modes"} <= set(printed) and printed["details"] == json.loads(out.read_text())["details"]
    assert printed["dataset"] == "beir_tiny" and printed["queries"] == 4
    assert list(printed["modes"]) == ["lexical", "dense", "hybrid"]
    for mode, m in printed["modes"].items():
        assert {"ndcg@10", "mrr@10", "recall@100", "map", "queries_per_s"} <= set(m), mode  # + ir-measures' names
        assert set(m) - {"ndcg@10", "mrr@10", "recall@100", "map", "queries_per_s"} == {"nDCG@10", "RR@10", "R@100", "AP"}
        assert (m["ndcg@10"], m["mrr@10"], m["recall@100"], m["map"]) == (1.0, 1.0, 1.0, 1.0), mode
        assert m["queries_per_s"] > 0
    saved = json.loads(out.read_text())
    assert saved["details"]["index"]["paragraphs_encoded"] == 6

    # A rerun reuses the index (nothing re-encoded) and the table names the modes; no reranker → said why.
    from flows.evaluate import evaluate, format_table

    res = evaluate(str(BEIR), collection="tiny-eval", db_uri=db_uri, modes="lexical", rerank=False,
                   out=str(tmp_path / "again.json"), run_dir=str(tmp_path / "runs"))
    assert res["details"]["index"]["paragraphs_encoded"] == 0
    # The flow's run_dir (the CLI's --run-dir): a TREC run file per mode that ir-measures scores the same.
    import ir_measures

    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["lexical.run"]
    agg = ir_measures.calc_aggregate([ir_measures.nDCG@10, ir_measures.AP], load_dataset(BEIR).qrels,
                                     ir_measures.read_trec_run(str(tmp_path / "runs" / "lexical.run")))
    assert agg[ir_measures.nDCG@10] == res["modes"]["lexical"]["nDCG@10"] == 1.0 and agg[ir_measures.AP] == 1.0
    table = format_table(res)
    assert "NDCG@10" in table and "lexical" in table and "re-rank rows omitted" in table
    assert "+rerank rows:" not in table

    from prefect.client.orchestration import get_client

    async def artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    import asyncio

    keys = {a.key for a in asyncio.run(artifact())}
    assert "eval-tiny-eval" in keys


# An archive of one top-level folder scored every metric 0; a README beside the folder is no document of it.
@pytest.mark.parametrize("folder", ["", "pages/", "pages/+readme"])
def test_eval_html_archive_with_trec_files(prefect_harness, db_uri, tmp_path, monkeypatch, folder):
    """--corpus-html: a tar.gz of HTML pages is extracted and indexed as a directory; ids lose '.html'."""
    monkeypatch.setenv("CORPUS_SEARCH_CACHE", str(tmp_path / "cache"))
    from flows.evaluate import evaluate

    pages = {
        "DOC-0001": ("Time Sharing Systems", "Interarrival statistics of user inputs in time-sharing systems."),
        "DOC-0002": ("Sorting Networks", "Bitonic sorting networks merge sequences with comparators in parallel."),
        "DOC-0003": ("Compiler Construction", "Intermediate languages make multi-target compilers easier to build."),
    }
    archive = tmp_path / "docs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, (title, text) in pages.items():
            f = tmp_path / f"{name}.html"
            f.write_text(f"<html><pre>\n\n{title}\n\n{text}\n</pre></html>")
            tf.add(f, arcname=folder.removesuffix("+readme") + f.name)
        if folder.endswith("+readme"):
            (tmp_path / "README.md").write_text("# About\n\nThese pages come from a test collection of three.\n")
            tf.add(tmp_path / "README.md", arcname="README.md")
    ds = tmp_path / "ds"
    ds.mkdir()
    topics = ds / "topics.txt"
    topics.write_text("<DOC>\n<DOCNO> 1 </DOCNO>\n bitonic sorting networks\n</DOC>\n"
                      "<DOC>\n<DOCNO> 2 </DOCNO>\n intermediate languages for compilers\n</DOC>\n")
    qrels = ds / "qrels.txt"
    qrels.write_text("1 Q0 DOC-0002 1\n2 Q0 DOC-0003 1\n")
    res = evaluate(str(ds), collection="html-eval", db_uri=db_uri, modes=["lexical"], rerank=False,
                   corpus_html=str(archive), queries=str(topics), qrels=str(qrels), out=str(tmp_path / "r.json"))
    assert res["queries"] == 2 and res["modes"]["lexical"]["ndcg@10"] == 1.0


def test_an_eval_that_fails_writing_its_run_files_leaves_no_tag_behind(prefect_harness, db_uri, tmp_path):
    """The tag was stored before the run files and --out were written: a failure there lost the results but kept
    a tag whose metrics no file holds."""
    from flows.evaluate import evaluate
    from query.errors import CorpusSearchError
    from tasks.versions import list_versions

    ds = tmp_path / "ds"
    (ds / "qrels").mkdir(parents=True)
    (ds / "corpus.jsonl").write_text('{"_id": "doc 01", "title": "Glaciers", "text": "Glaciers carve valleys."}\n'
                                     '{"_id": "doc 02", "title": "Tides", "text": "The moon raises the tides."}\n')
    (ds / "queries.jsonl").write_text('{"_id": "q1", "text": "what carves valleys"}\n')
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdoc 01\t1\n")
    with pytest.raises(CorpusSearchError, match="doc 01") as exc:
        evaluate(str(ds), collection="spaced", db_uri=db_uri, modes="lexical", rerank=False, tag="t1",
                 run_dir=str(tmp_path / "runs"), out=str(tmp_path / "metrics.json"))
    assert not any(v.get("tags") for v in list_versions(db_uri, "spaced"))
    # The metrics are kept (--out), no run file is half there, and the error says both.
    assert "no run file was written, and the metrics are in" in str(exc.value)
    assert json.loads((tmp_path / "metrics.json").read_text())["modes"]["lexical"]["ndcg@10"] == 1.0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_collection_doc_id_is_scored_as_the_judged_id_it_names():
    from tasks.datasets import judged_id

    known = {"A-1", "CACM-0001", "blog/raft"}
    assert judged_id("A-1", known) == "A-1"
    assert judged_id("CACM-0001.html", known) == "CACM-0001"
    assert judged_id("pages/A-1.html", known) == "A-1"  # an archive's one folder (the benchmarks scored it 0)
    assert judged_id("site/blog/raft.md", known) == "blog/raft"
    assert judged_id("pages/B-2.html", known) == "pages/B-2"  # unjudged: not relevant, whatever it is called
