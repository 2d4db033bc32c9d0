"""Evaluation outputs for IR people: TREC run files, per-query metrics, significance tests, re-rank warnings.

The unit tests use synthetic rankings and per-query scores; one end-to-end run of ``corpus-search eval``
(real index flow, real MiniLM, a real tiny cross-encoder with random weights that makes the ranking
worse) checks that everything reaches the ``--out`` file, ``--json``, the text report and Prefect's logs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import ir_measures
import pytest
from scipy import stats

from tasks.metrics import (
    MEASURES,
    RunFileError,
    compare_to_best,
    evaluate_per_query,
    evaluate_run,
    holm,
    paired_ttest,
    trec_run_lines,
    write_trec_run,
)

BEIR = Path(__file__).resolve().parent / "fixtures" / "beir_tiny"
IR_MEASURES = [ir_measures.parse_measure(m) for m in MEASURES.values()]


def _read_back(path: Path, qrels: dict) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score a run file the way an IR person would: ir_measures.read_trec_run + the qrels."""
    agg, rows = ir_measures.calc(IR_MEASURES, qrels, list(ir_measures.read_trec_run(str(path))))
    per: dict[str, dict[str, float]] = {q: dict.fromkeys(MEASURES.values(), 0.0) for q in qrels}
    for row in rows:
        per[row.query_id][str(row.measure)] = row.value
    return {str(m): v for m, v in agg.items()}, per


# --------------------------------------------------------------------------- run files


def test_run_file_reads_back_to_the_same_numbers_even_with_tied_scores(tmp_path):
    # Ties that trec_eval would break by doc id ("a" before "z" would put the relevant doc second).
    scored = {
        "q1": [("z", 2.0), ("a", 2.0), ("m", 2.0), ("z", 1.5), ("b", 0.5)],  # "z" twice: its best counts once
        "q2": [("c", 0.3), ("d", 0.3)],
        "q3": [],  # retrieved nothing: no lines, counts 0
    }
    qrels = {"q1": {"z": 1, "m": 1}, "q2": {"d": 2}, "q3": {"x": 1}}
    path = write_trec_run(tmp_path / "runs" / "hybrid+rerank.run", scored, tag="hybrid+rerank")
    lines = [ln.split() for ln in path.read_text().splitlines()]
    assert [ln[:4] for ln in lines] == [["q1", "Q0", "z", "1"], ["q1", "Q0", "a", "2"], ["q1", "Q0", "m", "3"],
                                        ["q1", "Q0", "b", "4"], ["q2", "Q0", "c", "1"], ["q2", "Q0", "d", "2"]]
    assert {ln[5] for ln in lines} == {"hybrid+rerank"}
    scores = [float(ln[4]) for ln in lines]
    assert scores[0] == 2.0 and scores[0] > scores[1] > scores[2] > scores[3] and scores[4] > scores[5]
    assert math.isclose(scores[2], 2.0, rel_tol=1e-6)  # a tie moves by float32 ulps only

    ranked = {q: [d for d, _ in docs] for q, docs in scored.items()}
    ours, our_per = evaluate_per_query(qrels, ranked)
    theirs, their_per = _read_back(path, qrels)
    for name, ir_name in MEASURES.items():
        assert theirs[ir_name] == pytest.approx(ours[name], abs=1e-9), name
        for q in qrels:
            assert their_per[q][ir_name] == pytest.approx(our_per[q][name], abs=1e-9), (q, name)
    assert ours == pytest.approx(evaluate_run(qrels, ranked), abs=1e-12)
    assert not list(tmp_path.glob("runs/.*"))  # no temporary file left behind


@pytest.mark.parametrize("bad", [{"q 1": [("d", 1.0)]}, {"q1": [("my doc", 1.0)]}, {"q1": [("", 1.0)]}])
def test_ids_a_trec_run_cannot_hold_are_refused_with_the_id(bad):
    with pytest.raises(RunFileError, match="whitespace: a TREC run file cannot hold it"):
        list(trec_run_lines(bad, "lexical"))


# --------------------------------------------------------------------------- significance


def test_paired_ttest_is_scipys_and_never_nan():
    a, b = [0.9, 0.4, 0.7, 0.2, 0.5], [0.6, 0.5, 0.3, 0.1, 0.2]
    assert paired_ttest(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_ttest(a, a) == 1.0  # identical scores: no evidence of a difference
    assert paired_ttest([x + 0.25 for x in b], b) == 0.0  # the same gain on every query (scipy: precision warning)
    assert paired_ttest([1.0], [0.0]) is None  # one query: no test
    with pytest.raises(ValueError, match="3 scores paired with 2"):
        paired_ttest([1, 2, 3], [1, 2])


def test_holm_adjusts_step_down_and_skips_missing():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == [] and holm([None]) == [None]


def _per(scores: dict[str, list[float]]) -> dict[str, dict[str, dict[str, float]]]:
    """{mode: per-query nDCG@10 list} → {mode: {qid: {metric: value}}} (all four metrics the same value)."""
    return {m: {f"q{i}": dict.fromkeys(MEASURES, v) for i, v in enumerate(vals)} for m, vals in scores.items()}


def test_compare_to_best_picks_the_best_by_ndcg_and_holm_corrects_per_metric():
    per = _per({
        "lexical": [0.1, 0.2, 0.0, 0.3, 0.1, 0.2],
        "dense": [0.8, 0.7, 0.9, 0.6, 0.8, 0.9],
        "hybrid": [0.8, 0.7, 0.9, 0.6, 0.8, 0.9],  # identical to dense, listed second
    })
    sig = compare_to_best(per)
    assert sig["best"] == "dense" and sig["by"] == "ndcg@10" and sig["reason"] is None  # a tie: the first listed
    assert sig["test"] == "paired t-test (scipy.stats.ttest_rel, two-sided)" and "Holm" in sig["correction"]
    assert set(sig["vs_best"]) == {"lexical", "hybrid"} and set(sig["vs_best"]["lexical"]) == set(MEASURES)
    assert sig["vs_best"]["hybrid"] == dict.fromkeys(MEASURES, 1.0)
    raw = stats.ttest_rel([0.1, 0.2, 0.0, 0.3, 0.1, 0.2], [0.8, 0.7, 0.9, 0.6, 0.8, 0.9]).pvalue
    assert sig["p_uncorrected"]["lexical"]["ndcg@10"] == pytest.approx(raw)
    assert sig["vs_best"]["lexical"]["ndcg@10"] == pytest.approx(2 * raw)  # Holm, 2 comparisons, the smallest p
    assert sig["significant"] == {"lexical": dict.fromkeys(MEASURES, True), "hybrid": dict.fromkeys(MEASURES, False)}
    json.dumps(sig, allow_nan=False)


def test_compare_to_best_degenerate_cases_give_null_with_a_reason():
    one_query = compare_to_best(_per({"lexical": [0.5], "dense": [1.0]}))
    assert one_query["best"] == "dense" and one_query["vs_best"] == {"lexical": dict.fromkeys(MEASURES)}
    assert "a paired test needs at least 2" in one_query["reason"]
    assert not any(one_query["significant"]["lexical"].values())
    one_mode = compare_to_best(_per({"hybrid": [0.5, 0.7]}))
    assert one_mode["best"] == "hybrid" and one_mode["vs_best"] == {} and "only one mode" in one_mode["reason"]
    for block in (one_query, one_mode):
        json.dumps(block, allow_nan=False)


def test_a_rerank_row_worse_than_its_base_is_warned_about_with_what_to_do(tmp_path):
    from flows.evaluate import rerank_checks

    (tmp_path / "wiki" / "qrels").mkdir(parents=True)
    (tmp_path / "wiki" / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    dataset = str(tmp_path / "wiki")

    per = _per({
        "hybrid": [0.9, 0.8, 1.0, 0.7, 0.9, 0.8, 1.0, 0.9],
        "lexical": [0.5, 0.4, 0.6, 0.5, 0.4, 0.6, 0.5, 0.5],
        "hybrid+rerank": [0.5, 0.4, 0.7, 0.3, 0.6, 0.5, 0.6, 0.4],  # clearly worse on every query
        "lexical+rerank": [0.6, 0.4, 0.6, 0.5, 0.4, 0.6, 0.5, 0.5],  # better: no warning
    })
    checks, warnings = rerank_checks(per, cross_encoder="/models/MiniLM-ce", collection="wiki", dataset=dataset)
    assert set(checks) == {"hybrid+rerank", "lexical+rerank"}
    worse = checks["hybrid+rerank"]
    assert worse["base"] == "hybrid" and worse["worse"] and worse["significant"] and worse["p"] < 0.05
    assert worse["delta"] == pytest.approx(0.5 - 0.875)
    assert not checks["lexical+rerank"]["worse"]
    (w,) = warnings
    assert w.startswith("hybrid+rerank is worse than hybrid: nDCG@10 0.5000 vs 0.8750 (-0.3750, -42.9%), significant")
    assert "The re-ranker '/models/MiniLM-ce' does not help" in w
    assert f"corpus-search train-reranker --collection wiki --judgments {dataset} --split train" in w
    assert "--no-rerank" in w
    # A dataset without a train split: never its test queries, self-supervised instead.
    _, (w,) = rerank_checks(per, cross_encoder="ce", collection="wiki", dataset=str(tmp_path / "no-train"))
    assert "--self-supervised: this dataset has no train split" in w and "--judgments" not in w

    # A small, noisy loss is still warned about, as not significant.
    noisy = _per({"dense": [0.9, 0.1, 0.8, 0.2], "dense+rerank": [0.1, 0.9, 0.2, 0.7]})
    checks, (w,) = rerank_checks(noisy)
    assert not checks["dense+rerank"]["significant"] and "-0.0250" in w and "not significant" in w


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def bad_reranker(tmp_path_factory) -> str:
    """A real (tiny, 2-layer) cross-encoder with random weights: re-ranking with it makes rankings worse."""
    from tests._models import build_cross_encoder

    return str(build_cross_encoder(tmp_path_factory.mktemp("bad-ce") / "model", body="tiny-bert", seed=3))


def test_eval_writes_run_files_per_query_metrics_significance_and_rerank_warnings(
    prefect_harness, db_uri, tmp_path, capsys, bad_reranker
):
    from corpus_search.cli import main
    from flows.evaluate import format_table
    from tasks.datasets import load_dataset

    out, run_dir = tmp_path / "results.json", tmp_path / "runs"
    argv = ["eval", str(BEIR), "--db", db_uri, "--collection", "tiny-outputs", "--modes", "lexical,hybrid",
            "--cross-encoder", bad_reranker, "--out", str(out), "--run-dir", str(run_dir), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads(out.read_text())
    assert printed == saved and printed["details"]["out"] == str(out)  # --json is the --out document, details included
    assert set(printed) == {"dataset", "queries", "modes", "warnings", "details"}
    modes = ["lexical", "hybrid", "lexical+rerank", "hybrid+rerank"]
    assert list(printed["modes"]) == modes

    # One TREC run file per mode, named as the report names the mode, scoring to the report's numbers.
    qrels = load_dataset(BEIR).qrels
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(f"{m}.run" for m in modes)
    assert printed["details"]["run_files"] == {m: str(run_dir / f"{m}.run") for m in modes}
    for mode in modes:
        rows = [ln.split() for ln in (run_dir / f"{mode}.run").read_text().splitlines()]
        assert {len(r) for r in rows} == {6} and {r[1] for r in rows} == {"Q0"} and {r[5] for r in rows} == {mode}
        for q in qrels:
            ranks = [int(r[3]) for r in rows if r[0] == q]
            assert ranks and ranks == list(range(1, len(ranks) + 1))
        agg, per = _read_back(run_dir / f"{mode}.run", qrels)
        m = printed["modes"][mode]
        for name, ir_name in MEASURES.items():
            assert m[name] == m[ir_name], (mode, name)  # ir-measures' names beside ours, same values
            assert agg[ir_name] == pytest.approx(m[name], abs=1e-9), (mode, name)
            for q in qrels:
                assert per[q][ir_name] == pytest.approx(printed["details"]["per_query"][mode][q][name], abs=1e-9)
        assert set(printed["details"]["per_query"][mode]) == set(qrels)

    # Significance: retrieval alone ranks every relevant document first (all 1.0): identical → p = 1.
    sig = printed["details"]["significance"]
    assert sig["best"] == "lexical" and sig["queries"] == 4 and sig["reason"] is None
    assert sig["vs_best"]["hybrid"] == dict.fromkeys(MEASURES, 1.0)
    assert set(sig["vs_best"]) == set(modes) - {"lexical"}
    for mode in ("lexical+rerank", "hybrid+rerank"):
        assert all(0.0 <= p <= 1.0 for p in sig["vs_best"][mode].values())

    # The random re-ranker makes hybrid worse: a warning, in the JSON, the report and the Prefect logs. (BM25
    # matches one document per query here, so re-ranking lexical changes nothing and is not warned about.)
    assert printed["modes"]["hybrid+rerank"]["ndcg@10"] < 1.0 == printed["modes"]["lexical+rerank"]["ndcg@10"]
    warnings = printed["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("hybrid+rerank is worse than hybrid: nDCG@10 ")
    assert "train-reranker --collection tiny-outputs" in warnings[0] and "--no-rerank" in warnings[0]
    checks = printed["details"]["rerank_vs_base"]
    assert checks["lexical+rerank"]["worse"] is False and checks["lexical+rerank"]["delta"] == 0.0
    assert printed["details"]["rerank_vs_base"]["hybrid+rerank"]["worse"] is True
    report = format_table(printed)
    assert all(f"WARNING: {w}" in report for w in warnings)
    assert "differs significantly from the best mode (lexical, by nDCG@10)" in report and "alpha = 0.05" in report
    assert "(best)" in report.splitlines()[3]  # the lexical row
    assert f"+rerank rows: {bad_reranker}\n" in report  # the table names the model its +rerank rows used
    assert warnings[0] in _latest_evaluate_logs(warnings[0])


def _latest_evaluate_logs(expected: str) -> list[str]:
    """Messages of the newest ``evaluate`` flow run (logs arrive asynchronously: wait up to 20 s for one)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    deadline, messages = time.monotonic() + 20, []
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["evaluate"])),
                                       sort=FlowRunSort.START_TIME_DESC, limit=1)
        while time.monotonic() < deadline:
            messages = [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
            if expected in messages:
                break
            time.sleep(0.5)
    return messages


def test_rerank_rows_rerank_as_many_candidates_as_a_search_and_keep_the_retrieval_ranking_below(
    prefect_harness, db_uri, tmp_path, bad_reranker, monkeypatch
):
    """The +rerank rows re-ranked all 100 retrieved paragraphs where a search re-ranks its depth (a trained
    re-ranker's 30, or the candidates setting), so eval measured a ranking no search serves."""
    from flows.evaluate import evaluate
    from query.searcher import Searcher
    from query.settings import settings_with
    from tasks.metrics import maxp

    result = evaluate(str(BEIR), collection="depth3", db_uri=db_uri, modes="hybrid", cross_encoder=bad_reranker,
                      settings_overrides={"candidates": 3}, run_dir=str(tmp_path / "runs"))
    details = result["details"]
    assert details["rerank_depth"] == 3 and any("top 3 candidates, as a search does" in n for n in details["notes"])
    searcher = Searcher(settings=settings_with({"db_uri": db_uri, "collection": "depth3", "candidates": 3,
                                                "cross_encoder": bad_reranker, "rerank_cache_size": 0}))
    queries = {json.loads(ln)["_id"]: json.loads(ln)["text"] for ln in (BEIR / "queries.jsonl").read_text().splitlines()}
    runs = {m: [ln.split() for ln in (tmp_path / "runs" / f"{m}.run").read_text().splitlines()]
            for m in ("hybrid", "hybrid+rerank")}
    for qid in details["per_query"]["hybrid+rerank"]:
        served = searcher.search(queries[qid], k=3, mode="hybrid", rerank="require", distinct=False)
        head = [d for d, _ in maxp([h.doc_id for h in served], [h.score for h in served])]
        reranked = [r[2] for r in runs["hybrid+rerank"] if r[0] == qid]
        assert reranked[: len(head)] == head  # what a search serves, in its order
        rest = [r[2] for r in runs["hybrid"] if r[0] == qid and r[2] not in head]
        assert reranked[len(head):] == rest  # then retrieval's order
    assert any(r[:3] != h[:3] for r, h in zip(runs["hybrid+rerank"], runs["hybrid"]))  # the model did re-rank
    # A depth within the re-ranker's: the row retrieves the search's candidates (5), not the retrieval rows' 100.
    asked = []
    real = Searcher.search_many

    def spy(self, queries, k=5, **kw):
        asked.append((kw.get("rerank"), kw.get("candidates")))
        return real(self, queries, k, **kw)

    monkeypatch.setattr(Searcher, "search_many", spy)
    within = evaluate(str(BEIR), collection="depth3", db_uri=db_uri, modes="hybrid", cross_encoder=bad_reranker,
                      depth=3, settings_overrides={"candidates": 5})
    assert within["details"]["rerank_depth"] == 5 and ("require", 5) in asked and (False, 100) in asked


def test_the_legend_says_when_no_mode_differs_and_the_report_counts_unrun_queries():
    from flows.evaluate import format_table

    metrics = {"ndcg@10": 0.5, "mrr@10": 0.5, "recall@100": 0.9, "map": 0.4, "queries_per_s": 10.0}
    result = {"dataset": "d", "queries": 3, "modes": {"lexical": metrics, "dense": metrics}, "warnings": [],
              "details": {"split": "test", "unit": "paragraph", "collection": "c", "wall_s": {"lexical": 1, "dense": 1},
                          "notes": [], "unjudged_queries_skipped": 2,
                          "significance": {"best": "lexical", "significant": {"dense": {"ndcg@10": False}},
                                           "test": "t", "queries": 3, "correction": "holm", "alpha": 0.05}}}
    report = format_table(result)
    assert "no mode differs significantly from the best mode (lexical" in report
    assert "note: 2 queries of the queries file have no judgments in split 'test': they were not run" in report
