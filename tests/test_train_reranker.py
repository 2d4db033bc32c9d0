"""The train-reranker flow, the per-collection registry and the no-model fallback, on real small models.

Training runs the real sentence-transformers trainer for a few steps from a tiny BERT (seconds on a CPU);
what it learns is not the point here -- that it trains, saves, loads, scores, is gated and promoted is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tests.conftest import EXAMPLES, REPO

CONTRACT_KEYS = {"collection", "model", "base", "signal", "train_queries", "pairs", "steps", "seconds", "dev", "promoted"}


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory, prefect_harness) -> str:
    from flows.index_corpus import index_corpus

    db = str(tmp_path_factory.mktemp("rr") / "lancedb")
    summary = index_corpus([str(EXAMPLES / "articles"), str(EXAMPLES / "notes")], collection="sample", db_uri=db)
    assert summary["articles_failed"] == 0
    return db


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    from tests._models import build_cross_encoder

    return str(build_cross_encoder(tmp_path_factory.mktemp("base") / "tiny", num_labels=1, body="tiny-bert"))


@pytest.fixture(scope="module")
def judgments_dir(tmp_path_factory, sample_db) -> str:
    """A BEIR-layout judgments directory over the sample collection: each article's title asks for it."""
    import lancedb

    rows = lancedb.connect(sample_db).open_table("sample").to_lance().to_table(columns=["doc_id", "title"]).to_pylist()
    titles = {r["doc_id"]: r["title"] for r in rows if r["title"]}
    root = tmp_path_factory.mktemp("judged")
    (root / "qrels").mkdir()
    with open(root / "queries.jsonl", "w") as q, open(root / "qrels" / "train.tsv", "w") as qr:
        qr.write("query-id\tcorpus-id\tscore\n")
        for i, (doc, title) in enumerate(sorted(titles.items())):
            q.write(json.dumps({"_id": f"q{i}", "text": f"what about {title.lower()}?"}) + "\n")
            qr.write(f"q{i}\t{doc}\t1\n")
    return str(root)


def _train(db: str, base: str, **kw) -> dict:
    from flows.train_reranker import train_reranker

    return train_reranker("sample", db_uri=db, base=base, time_budget=kw.pop("time_budget", 20), **kw)


def test_training_from_judgments_saves_a_model_that_loads_and_scores(sample_db, tiny_base, judgments_dir):
    from query.models import load_reranker

    result = _train(sample_db, tiny_base, judgments=judgments_dir, promote="never")
    assert CONTRACT_KEYS <= set(result)
    assert result["signal"] == "judgments" and result["base"] == tiny_base and result["steps"] >= 1
    from tasks.rerank_train import pairs_trained

    assert result["pairs"] == pairs_trained(result["steps"], result["train_queries"]) and result["train_queries"] >= 8
    dev = result["dev"]
    assert dev["queries"] >= 1 and dev["previous"] is None and result["promoted"] is False
    assert 0.0 <= dev["retrieval"]["ndcg@10"] <= 1.0 and 0.0 <= dev["candidate"]["ndcg@10"] <= 1.0
    assert os.path.isdir(result["model"]) and result["model"].startswith(sample_db)
    scores = load_reranker(result["model"]).score("how do glaciers form", ["Glaciers form from snow.", "Bees make honey."])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()


def test_self_supervised_training_then_promote_and_roll_back_a_promotion(sample_db, tiny_base):
    from query import Searcher
    from tasks.rerank_registry import listing, promote

    first = _train(sample_db, tiny_base, self_supervised=True, promote="always", time_budget=5)
    assert first["signal"] == "self-supervised" and first["promoted"] is True
    assert first["dev"]["queries"] >= 1
    second = _train(sample_db, tiny_base, self_supervised=True, promote="always", time_budget=5, seed=1)
    assert second["dev"]["previous"]["id"] == first["id"]  # the gate scored the promoted one too
    reg = listing(sample_db, "sample")
    assert reg["promoted"] == second["id"] and [m["id"] for m in reg["models"]][-2:] == [first["id"], second["id"]]

    s = Searcher(db_uri=sample_db, collection="sample")
    hits = s.search("How do glaciers form?", k=3)
    assert hits and all(h.reranked for h in hits) and second["id"] in s.timings.reranker

    promote(sample_db, "sample", first["id"])  # roll the promotion back to the earlier model
    s = Searcher(db_uri=sample_db, collection="sample")
    s.search("How do glaciers form?", k=3)
    assert first["id"] in s.timings.reranker

    out = subprocess.run([sys.executable, "-m", "corpus_search.cli", "rerankers", "--collection", "sample",
                          "--db", sample_db, "--promote", second["id"], "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert listed["promoted"] == second["id"] and sum(m["promoted"] for m in listed["models"]) == 1
    assert all("ndcg@10" in m["dev"]["candidate"] for m in listed["models"])

    with pytest.raises(Exception, match="no re-ranker 'nope'"):
        promote(sample_db, "sample", "nope")
    promote(sample_db, "sample", None)

    # Each change is logged on the version it made: a rollback there restores that promotion.
    from tasks.versions import list_versions

    changes = [v["summary"] for v in list_versions(sample_db, "sample") if v["kind"] == "reranker"]
    assert changes[-5:] == [
        {"trained": first["id"], "signal": "self-supervised", "promoted": first["id"]},
        {"trained": second["id"], "signal": "self-supervised", "promoted": second["id"]},
        {"promoted": first["id"]}, {"promoted": second["id"]}, {"promoted": None}]
    shown = subprocess.run([sys.executable, "-m", "corpus_search.cli", "versions", "sample", "--db", sample_db],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert f"re-ranker {second['id']} trained (self-supervised); re-ranker {second['id']} promoted" in shown
    assert shown.rstrip().endswith("no re-ranker promoted")

    # Removing: never the promoted model; the others go with their saved directories.
    from pathlib import Path

    from tasks.rerank_registry import remove

    promote(sample_db, "sample", second["id"])
    with pytest.raises(Exception, match="is the promoted one"):
        remove(sample_db, "sample", [second["id"]])
    assert Path(second["model"]).is_dir()
    out = subprocess.run([sys.executable, "-m", "corpus_search.cli", "rerankers", "-c", "sample", "--db", sample_db,
                          "--promote", first["id"], "--remove", second["id"]],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert f"removed re-ranker(s) {second['id']}; deleted {second['model']}" in out.stdout
    reg = listing(sample_db, "sample")
    assert reg["promoted"] == first["id"] and second["id"] not in [m["id"] for m in reg["models"]]
    assert not Path(second["model"]).exists() and Path(first["model"]).is_dir()
    # Promoting and removing the same one is refused before either acts (it used to promote, then fail).
    both = subprocess.run([sys.executable, "-m", "corpus_search.cli", "rerankers", "-c", "sample", "--db", sample_db,
                           "--promote", first["id"], "--remove", first["id"]], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert both.returncode == 2 and "cannot be promoted and removed at once" in both.stderr
    assert listing(sample_db, "sample")["promoted"] == first["id"] and Path(first["model"]).is_dir()

    # A rollback to a version whose promoted model was removed since: the listing and a search say so.
    from tasks.versions import rollback

    when = [v["version"] for v in list_versions(sample_db, "sample") if v["summary"] == {"promoted": second["id"]}]
    rollback(sample_db, "sample", when[-1])
    missing = {m["id"]: m["missing"] for m in listing(sample_db, "sample")["models"]}
    assert listing(sample_db, "sample")["promoted"] == second["id"] and missing[second["id"]] is True
    assert missing[first["id"]] is False
    shown = subprocess.run([sys.executable, "-m", "corpus_search.cli", "rerankers", "-c", "sample", "--db", sample_db],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "(its files are missing)" in shown.stdout and "searches use retrieval alone" in shown.stderr
    with pytest.warns(UserWarning, match=f"promoted re-ranker {second['id']} of collection 'sample' is missing"):
        assert not any(h.reranked for h in Searcher(db_uri=sample_db, collection="sample").search("glaciers", k=3))
    promote(sample_db, "sample", None)


def test_the_gate_refuses_a_model_that_does_not_beat_retrieval():
    from tasks.rerank_gate import decide

    assert decide("auto", 0.70, None, 0.70) == (False, "not promoted: dev nDCG@10 0.7000 does not beat retrieval alone (0.7000)")
    assert decide("auto", 0.70, 0.74, 0.72)[0] is False
    assert decide("auto", 0.70, 0.71, 0.72, p=0.05)[0] is True
    assert decide("auto", 0.70, None, 0.72, p=0.4)[0] is False  # a gain within dev-set noise
    small = decide("auto", 0.70, None, 0.705, p=0.01)  # consistent, but too small to pay for the cross-encoder
    assert small[0] is False and "by less than 0.01" in small[1]
    assert decide("always", 0.7, None, 0.1)[0] is True and decide("never", 0.1, None, 0.9)[0] is False


def test_the_fusion_weight_is_the_smallest_within_one_standard_error_of_the_best():
    from tasks.rerank_gate import ALPHAS, one_se_alpha

    qids = [f"q{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    base = dict(zip(qids, rng.uniform(0.3, 0.7, len(qids)), strict=True))
    # Weights 0.4..0.7 are 0.1 above the rest, 0.7 by 0.005 above its neighbours: well within their
    # per-query noise (zero-mean, so that 0.7 is the best on average).
    noise = {al: rng.normal(0.0, 0.05, len(qids)) for al in ALPHAS}
    per = {al: {q: base[q] + (0.1 + n - noise[al].mean() + 0.005 * (al == 0.7) if 0.4 <= al <= 0.7 else 0.0)
                for q, n in zip(qids, noise[al], strict=True)} for al in ALPHAS}
    assert max(ALPHAS, key=lambda al: np.mean(list(per[al].values()))) == 0.7
    assert one_se_alpha(per, qids) == 0.4
    # A clear winner is kept: every smaller weight is far below it on every query.
    steep = {al: {q: al for q in qids} for al in ALPHAS}
    steep[1.0] = {q: 0.0 for q in qids}
    assert one_se_alpha(steep, qids) == 0.9
    # Retrieval alone best: weight 0, which the gate then refuses.
    flat = {al: {q: 1.0 - al for q in qids} for al in ALPHAS}
    assert one_se_alpha(flat, qids) == 0.0


def test_self_supervised_dev_queries_do_not_depend_on_the_training_sample_and_share_no_document(sample_db):
    """Every self-supervised model of a collection is gated on the same held-out documents, unseen in training."""
    from flows.train_reranker import pseudo_split
    from query.searcher import Searcher

    searcher = Searcher(db_uri=sample_db, collection="sample")
    small_dev, small_train = pseudo_split(searcher, 5, 0)
    big_dev, big_train = pseudo_split(searcher, 400, 0)
    assert [e.query for e in small_dev] == [e.query for e in big_dev] and small_dev
    dev_docs = {d for e in big_dev for d in e.relevant}
    assert len(small_train) == 5 < len(big_train)
    assert not dev_docs & {d for e in small_train + big_train for d in e.relevant}


def test_the_dev_split_holds_out_whole_documents_within_its_share_of_the_paragraphs(sample_db):
    """Training leaves a dev query's whole document out, so the share is counted in those documents'
    paragraphs: at most 30 % of a small collection, never its longest page, and the rest trains."""
    from collections import Counter

    from flows.train_reranker import _n_dev, pseudo_split
    from query.searcher import Searcher

    searcher = Searcher(db_uri=sample_db, collection="sample")
    per_doc = Counter(searcher.table.to_lance().to_table(columns=["doc_id"]).column("doc_id").to_pylist())
    dev, train = pseudo_split(searcher, 400, 0)
    dev_docs = {d for e in dev for d in e.relevant}
    train_docs = {d for e in train for d in e.relevant}
    assert len(dev) >= 10 and len(dev_docs) >= 3
    assert sum(per_doc[d] for d in dev_docs) <= _n_dev(searcher) == sum(per_doc.values()) * 3 // 10
    assert max(per_doc[d] for d in dev_docs) < max(per_doc.values())
    assert not dev_docs & train_docs and len(train_docs) >= len(per_doc) // 2
    # A budget no document fits still holds out one, whole.
    from flows.train_reranker import held_out_rows
    from tasks.rerank_data import sample_paragraphs

    one = held_out_rows(searcher, sample_paragraphs(searcher, 5, 0), 1, 0)
    assert len({r["doc_id"] for r in one}) == 1 and len(one) == per_doc[one[0]["doc_id"]] > 1


def test_the_self_supervised_sample_is_counted_in_queries_though_some_paragraphs_make_none(sample_db, tmp_path):
    from flows.index_corpus import index_corpus
    from flows.train_reranker import pseudo_dev, pseudo_split
    from query.searcher import Searcher
    from tasks import rerank_data as rd

    # Like CACM, where many documents are a title alone: one-line notes make no pseudo-query.
    notes = tmp_path / "one-liners"
    notes.mkdir()
    for i in range(200):
        (notes / f"n{i}.md").write_text(f"Reading list item {i}, for the club on the weekend.\n")
    summary = index_corpus([str(EXAMPLES / "articles"), str(EXAMPLES / "notes"), str(notes)], collection="mixed",
                           db_uri=sample_db)
    assert summary["articles_failed"] == 0
    searcher = Searcher(db_uri=sample_db, collection="mixed")
    dev_docs = {d for e in pseudo_dev(searcher, 0) for d in e.relevant}
    rows = [r for r in rd.sample_paragraphs(searcher, searcher.table.count_rows()) if r["doc_id"] not in dev_docs]
    n = len(rd.pseudo_queries(rows, searcher.meta.encode_title))  # every training query the collection has
    assert n < len(rows) / 2  # the premise: most of its paragraphs make no query
    _, train = pseudo_split(searcher, n, 0)
    assert len(train) == n and len({e.qid for e in train}) == n
    assert not dev_docs & {d for e in train for d in e.relevant}


def test_the_gate_refuses_an_untrained_model_on_real_dev_queries(sample_db, tmp_path):
    """A random-init head is a worse ranker; its cross-validated fusion never beats retrieval alone."""
    from query.models import load_reranker
    from query.searcher import Searcher
    from tasks import rerank_gate as rg
    from tasks.rerank_data import pseudo_dev_queries, sample_paragraphs
    from tests._models import build_cross_encoder

    searcher = Searcher(db_uri=sample_db, collection="sample")
    dev = pseudo_dev_queries(searcher, sample_paragraphs(searcher, 200, 0), 40, 0)
    assert len(dev) >= 5
    devset = rg.dev_set(searcher, dev, 30)
    assert all(h.id != e.hide for e, hs in zip(dev, devset.hits, strict=True) for h in hs)
    retrieval = rg.ndcg10(devset, None, 0.0)
    model = build_cross_encoder(tmp_path / "random", num_labels=1, body="tiny-bert", seed=3)
    candidate = rg.choose_alpha(devset, rg.rerank_scores(load_reranker(str(model)), devset))
    assert candidate["alone"] < retrieval
    assert rg.decide("auto", retrieval, None, candidate["ndcg@10"], candidate["p"])[0] is False


def test_without_any_cross_encoder_search_falls_back_to_retrieval_with_one_warning(sample_db, tmp_path):
    from query import Searcher
    from query.errors import ModelUnavailableError
    from query.searcher import RerankSkippedWarning

    missing = str(tmp_path / "no-such-model")
    s = Searcher(db_uri=sample_db, collection="sample", cross_encoder=missing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = s.search("How do glaciers form?", k=3)
    assert [w.category for w in caught] == [RerankSkippedWarning]
    assert "re-ranking did not run" in str(caught[0].message)
    assert hits and not any(h.reranked for h in hits) and all(h.score == h.retrieval_score for h in hits)
    assert s.timings.reranker is None
    with pytest.raises(ModelUnavailableError):
        s.search("How do glaciers form?", k=3, rerank="require")

    env = {**os.environ, "PYTHONPATH": str(REPO), "CORPUS_SEARCH_CROSS_ENCODER": missing}
    base = [sys.executable, "-m", "corpus_search.cli", "search", "How do glaciers form?", "-c", "sample", "--db", sample_db]
    out = subprocess.run([*base, "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["reranked"] is False
    assert out.stderr.count("corpus-search: warning: re-ranking did not run") == 1
    strict = subprocess.run([*base, "--require-rerank"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert strict.returncode == 2 and strict.stderr.startswith("corpus-search: error:")


def test_the_fallback_warning_points_at_the_collections_unpromoted_or_missing_rerankers(sample_db):
    """Offline with no promoted model, the warning says what the registry holds instead of "train one"."""
    from query import Searcher
    from query.registry import REGISTRY_KEY, Registry, RerankerEntry, read_registry, write_registry
    from query.searcher import RerankSkippedWarning

    def warning_text() -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hits = Searcher(db_uri=sample_db, collection="sample").search("How do glaciers form?", k=3)
        assert hits and not any(h.reranked for h in hits)
        skipped = [w for w in caught if w.category is RerankSkippedWarning]
        assert len(skipped) == 1
        return str(skipped[0].message)

    table = Searcher(db_uri=sample_db, collection="sample").table
    saved = table.to_lance().metadata.get(REGISTRY_KEY)
    entry = RerankerEntry(id="refused", path="_rerankers/sample/refused", created="2026-01-01T00:00:00+00:00",
                          base="tiny", signal="self-supervised", fingerprint="0", alpha=0.3)
    try:
        write_registry(table, Registry(None, []))
        assert "Train one for this collection" in warning_text()
        write_registry(table, Registry(None, [entry]))
        text = warning_text()
        assert "1 trained re-ranker(s), none promoted" in text and "--promote ID" in text
        assert "Train one" not in text
        write_registry(table, Registry("refused", [entry]))  # promoted, but its directory is not there
        text = warning_text()  # not the default cross-encoder instead: one the gate never compared
        assert "promoted re-ranker refused of collection 'sample' is missing from the database" in text
        assert "--unpromote" in text
        assert "ms-marco" not in text
        from query.errors import ModelUnavailableError

        with pytest.raises(ModelUnavailableError, match="promoted re-ranker refused of collection 'sample' is missing"):
            Searcher(db_uri=sample_db, collection="sample").search("How do glaciers form?", k=3, rerank="require")
    finally:
        write_registry(table, Registry.from_json(saved))
    assert read_registry(table).to_json() == Registry.from_json(saved).to_json()


def test_a_model_promoted_at_fusion_weight_zero_is_never_loaded_and_ranks_as_retrieval(sample_db):
    """Weight 0 (``--promote always`` of a model the gate found no weight for): retrieval's order, at no model cost."""
    from pathlib import Path

    from query import Searcher
    from query.registry import REGISTRY_KEY, Registry, RerankerEntry, write_registry

    table = Searcher(db_uri=sample_db, collection="sample").table
    saved = table.to_lance().metadata.get(REGISTRY_KEY)
    # A directory with no model in it: loading it would fail, so a search that works never loaded it.
    (Path(sample_db) / "_rerankers" / "sample" / "weight-zero").mkdir(parents=True)
    entry = RerankerEntry(id="weight-zero", path="_rerankers/sample/weight-zero", created="2026-01-01T00:00:00+00:00",
                          base="tiny", signal="self-supervised", fingerprint="0", alpha=0.0)
    try:
        write_registry(table, Registry("weight-zero", [entry]))
        retrieval = Searcher(db_uri=sample_db, collection="sample").search("How do glaciers form?", k=4, rerank=False)
        s = Searcher(db_uri=sample_db, collection="sample")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback warning: nothing failed to load
            hits = s.search("How do glaciers form?", k=4, rerank="require")
        assert [h.id for h in hits] == [h.id for h in retrieval] and all(0.0 <= h.score <= 1.0 for h in hits)
        assert s.timings.reranker == "sample re-ranker weight-zero" and s.timings.reranked == 0
        assert s.active_reranker().model is None
    finally:
        write_registry(table, Registry.from_json(saved))
        (Path(sample_db) / "_rerankers" / "sample" / "weight-zero").rmdir()


def test_a_failed_training_run_is_reported_as_leaving_the_rerankers_unchanged(sample_db, tiny_base, tmp_path):
    from flows.hooks import log_failure
    from flows.train_reranker import train_reranker
    from tests.conftest import hook_summary

    assert train_reranker.on_failure_hooks == [log_failure]
    empty = tmp_path / "judged"
    (empty / "qrels").mkdir(parents=True)
    (empty / "queries.jsonl").write_text("")
    (empty / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    state = train_reranker("sample", db_uri=sample_db, judgments=str(empty), base=tiny_base, return_state=True)
    assert state.is_failed()
    summary = hook_summary(state.state_details.flow_run_id)
    assert "train-reranker run" in summary and "collection 'sample'" in summary
    assert "re-rankers are unchanged" in summary and "re-encoded" not in summary


def _signal_mid_training(argv: list[str], env: dict, err_path, sig: int) -> tuple[subprocess.Popen, str, str]:
    """Run ``argv`` (a train-reranker command), send ``sig`` a few steps into training: (process, stdout, stderr)."""
    import time

    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            deadline = time.monotonic() + 240
            while "train-cross-encoder" not in err_path.read_text() or " training " not in err_path.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()[-2000:]
                time.sleep(0.5)
            time.sleep(3)  # a few steps in
            proc.send_signal(sig)
            stdout, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    return proc, stdout, err_path.read_text()


def test_ctrl_c_saves_the_weights_so_far_and_the_cli_says_where_and_exits_130(sample_db, tmp_path):
    import signal

    from sentence_transformers import CrossEncoder

    out, err_path = tmp_path / "model", tmp_path / "stderr"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO"}
    # The packaged MiniLM body: slow enough on a CPU (about a second a step) that the run is mid-training.
    args = [sys.executable, "-m", "corpus_search.cli", "train-reranker", "-c", "sample", "--db", sample_db,
            "--self-supervised", "--time-budget", "600", "--out", str(out)]
    # A shell that starts jobs in the background (nohup, CI) leaves SIGINT ignored, and an ignored signal stays
    # ignored across exec. So the CLI runs as `python -m` does, with Ctrl-C's handler put back, as a
    # terminal's foreground job has it.
    interruptible = [sys.executable, "-c", "import runpy, signal, sys; signal.signal(signal.SIGINT, "
                     "signal.default_int_handler); sys.argv = sys.argv[1:]; runpy.run_module('corpus_search.cli', "
                     "run_name='__main__', alter_sys=True)", "corpus-search", *args[3:]]
    proc, stdout, stderr = _signal_mid_training(interruptible, env, err_path, signal.SIGINT)
    assert proc.returncode == 130, stderr[-2000:]
    assert "corpus-search: interrupted\n" in stderr and "Traceback" not in stderr.split("corpus-search: interrupted")[-1]
    assert f"the weights so far are saved in {out / 'interrupted'}" in stderr
    assert stdout == ""  # no summary: nothing was gated or registered
    assert CrossEncoder(str(out / "interrupted")).predict([("a query", "a passage")]).shape == (1,)
    assert not (out / "checkpoints").exists()  # the run's epoch checkpoints go: only the kept weights stay
    from tasks.rerank_registry import listing

    assert all(m["path"] != str(out) for m in listing(sample_db, "sample")["models"])
    # The same command again never writes over what the interrupted run kept, and says how to go on.
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and (out / "interrupted" / "model.safetensors").is_file()
    assert again.stderr.splitlines().count(
        f"corpus-search: error: --out {out} is not an empty directory: a trained model is never written over other "
        f"files; choose a new or empty directory (the weights of an interrupted run are in {out / 'interrupted'}: "
        f"--base {out / 'interrupted'} continues from them, with a new --out)") == 1


def test_sigterm_during_training_keeps_the_weights_and_the_cli_says_where_and_exits_143(sample_db, tmp_path):
    import signal

    out, err_path = tmp_path / "model", tmp_path / "stderr"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO"}
    args = [sys.executable, "-m", "corpus_search.cli", "train-reranker", "-c", "sample", "--db", sample_db,
            "--self-supervised", "--time-budget", "600", "--out", str(out)]
    # e.g. a cancelled run, or systemd stopping a job
    proc, _, stderr = _signal_mid_training(args, env, err_path, signal.SIGTERM)
    assert proc.returncode in (143, -signal.SIGTERM), stderr[-2000:]
    assert f"corpus-search: the weights so far are saved in {out / 'interrupted'}" in stderr, stderr[-2000:]
    assert (out / "interrupted" / "model.safetensors").is_file() and not (out / "checkpoints").exists()


def test_only_an_interruption_keeps_the_weights_so_far_never_an_error(sample_db, tiny_base, judgments_dir, tmp_path):
    from prefect.exceptions import TerminationSignal

    from query.searcher import Searcher
    from tasks import rerank_data as rd
    from tasks.rerank_train import train_cross_encoder

    searcher = Searcher(db_uri=sample_db, collection="sample")
    queries, qrels = rd.judged_queries(judgments_dir, "train")
    examples = rd.fill_negatives(rd.examples_from_judgments(searcher, queries, qrels, 0), 0)
    for raised, kept in ((KeyboardInterrupt(), True), (TerminationSignal(15), True), (RuntimeError("nan"), False)):
        out = tmp_path / type(raised).__name__

        def log(line: str, raised=raised) -> None:  # the trainer's first progress line is mid-training
            if line.startswith("train step"):
                raise raised

        with pytest.raises(type(raised)) as caught:
            train_cross_encoder(examples, tiny_base, out, time_budget_s=60, log=log, log_every=1)
        assert (out / "interrupted").is_dir() == kept
        assert (f"saved in {out / 'interrupted'}" in " ".join(getattr(caught.value, "__notes__", []))) == kept


def test_train_reranker_cli_refuses_a_missing_signal_before_any_work(sample_db):
    base = [sys.executable, "-m", "corpus_search.cli", "train-reranker", "--collection", "sample", "--db", sample_db]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    none = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert none.returncode == 2 and "--judgments DATASET_DIR or --self-supervised" in none.stderr
    missing = subprocess.run([sys.executable, "-m", "corpus_search.cli", "train-reranker", "--collection", "nope",
                              "--db", sample_db, "--self-supervised"], cwd=REPO, capture_output=True,
                             text=True, timeout=60, env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    # Options a flow would only refuse once Prefect ran it (a traceback per failed run): one line, no server.
    for extra, message in ((["--judgments", str(EXAMPLES / "beir-sample"), "--split", "dev"],
                            "choose another with --split: splits there: test"),
                           (["--self-supervised", "--time-budget", "inf"], "positive, finite number of seconds"),
                           (["--self-supervised", "--out", __file__], "is not an empty directory")):
        proc = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**env, "PREFECT_API_URL": ""})
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "temporary server" not in proc.stderr, proc.stderr


def test_a_base_that_cannot_load_is_one_line_with_the_fix_before_any_training_data_is_built(sample_db, tmp_path,
                                                                                         monkeypatch):
    from flows.train_reranker import train_reranker
    from query.errors import ModelUnavailableError
    from tasks import rerank_data

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    for base, reason in ((str(tmp_path / "nope"), "no such local directory"),
                         ("some-org/not-cached", "not in the Hugging Face cache, and HF_HUB_OFFLINE is set"),
                         (str(tmp_path), "has no config.json")):
        out = subprocess.run([sys.executable, "-m", "corpus_search.cli", "train-reranker", "-c", "sample", "--db",
                              sample_db, "--self-supervised", "--base", base], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env=env)
        last = out.stderr.strip().splitlines()[-1]  # above it: the Prefect run's own log of its failure
        assert out.returncode == 2, out.stderr[-1500:]
        assert last.startswith(f"corpus-search: error: training base {base!r} is unavailable: ") and reason in last
        assert "To fix: give --base a local directory" in last
    # In process: it fails before a single training query is made.
    monkeypatch.setattr(rerank_data, "sample_paragraphs", lambda *a, **k: pytest.fail("training data was built"))
    with pytest.raises(ModelUnavailableError, match="training base"):
        train_reranker("sample", db_uri=sample_db, self_supervised=True, base=str(tmp_path / "nope"))


def test_a_max_length_past_the_bases_positions_is_capped_so_long_passages_still_train(tiny_base):
    from tasks.rerank_train import load_base

    model = load_base(tiny_base, "cpu", 100_000)
    assert model.max_seq_length == model.config.max_position_embeddings
    assert model.predict([("a query", "word " * 5_000)]).shape == (1,)  # truncated, not an index error


def test_train_layers_zero_trains_the_head_only_not_everything(tiny_base, tmp_path):
    from tasks.rerank_data import Example
    from tasks.rerank_train import NEGATIVES, train_cross_encoder

    examples = [Example(f"q{i}", f"query {i}", "title", f"passage {i}", [f"other {i} {j}" for j in range(NEGATIVES)])
                for i in range(16)]
    logged: list[str] = []
    train_cross_encoder(examples, tiny_base, tmp_path / "m", time_budget_s=60, max_epochs=1, train_layers=0,
                        log=logged.append)
    assert "2 lower layers frozen" in logged[0]  # 0 was read as "not given": every layer trained


def test_training_options_out_of_range_are_refused_before_any_work(sample_db, monkeypatch):
    from flows.train_reranker import MIN_MAX_LENGTH, train_reranker
    from query.errors import InvalidQueryError
    from tasks import rerank_data

    monkeypatch.setattr(rerank_data, "sample_paragraphs", lambda *a, **k: pytest.fail("training data was built"))
    with pytest.raises(InvalidQueryError, match=f"--max-length must be at least {MIN_MAX_LENGTH}"):
        train_reranker("sample", db_uri=sample_db, self_supervised=True, max_length=0)
    with pytest.raises(InvalidQueryError, match="--train-layers must be 0"):
        train_reranker("sample", db_uri=sample_db, self_supervised=True, train_layers=-1)


def test_runs_started_in_the_same_second_train_into_directories_of_their_own(tmp_path, monkeypatch):
    from query.registry import RerankerRegistryError
    from tasks import rerank_registry
    from tasks.rerank_registry import CLAIM_MARKER, claim_model_dir, release_model_dir

    monkeypatch.setattr(rerank_registry, "new_model_id", lambda signal: f"20261207-015927-{signal}")
    db = str(tmp_path / "db")
    first, second = (claim_model_dir(db, "c", "judgments") for _ in range(2))
    assert [first[0], second[0]] == ["20261207-015927-judgments", "20261207-015927-judgments-2"]
    assert first[1] != second[1] and (first[1] / CLAIM_MARKER).exists()
    (first[1] / "model.safetensors").write_text("weights")
    release_model_dir(first[1])
    release_model_dir(second[1])  # a finished model of that second, and a claim given back (empty directory)
    assert claim_model_dir(db, "c", "judgments")[0] == "20261207-015927-judgments-2"

    out = tmp_path / "out"
    reserved = claim_model_dir(db, "c", "judgments", str(out))
    # An --out run reserves its id: a run of the same second without --out takes the next one, so the two never
    # upload into one object-store prefix (they did: the --out run's id was never claimed in the models folder).
    beside = claim_model_dir(db, "c", "judgments")
    assert reserved[0] == "20261207-015927-judgments-3" and beside[0] == "20261207-015927-judgments-4"
    release_model_dir(beside[1])
    release_model_dir(reserved[1])  # its reservation goes with it: an empty folder no reader takes for a model
    assert not rerank_registry.default_out_dir(db, "c", reserved[0]).exists() and not (out / CLAIM_MARKER).exists()
    claim_model_dir(db, "c", "judgments", str(out))
    with pytest.raises(RerankerRegistryError, match="another train-reranker run is training into it"):
        claim_model_dir(db, "c", "judgments", str(out))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / CLAIM_MARKER).write_text(dead.stdout.strip())  # a run that died: its claim is taken over
    assert claim_model_dir(db, "c", "judgments", str(out))[1] == out


def test_a_registered_id_is_never_replaced_and_a_promotion_gated_against_another_model_is_withdrawn(sample_db, tmp_path):
    """Two runs ending in the same second (one with --out) shared an id: the second replaced the first's entry,
    so a model the gate refused could end up promoted; and a run gated against no model promoted itself over
    one that another run had promoted meanwhile."""
    import shutil

    from query.registry import RerankerEntry, registry_or_empty
    from query.searcher import Searcher
    from tasks.rerank_registry import UNGATED, record

    db = str(tmp_path / "db")
    shutil.copytree(sample_db, db)
    same = "20261207-075435-self-supervised"

    def entry(path: str) -> RerankerEntry:
        return RerankerEntry(id=same, path=path, created="2026-12-07T07:54:35+00:00", base="b",
                             signal="self-supervised", fingerprint="0", alpha=1.0)

    def registry():
        return registry_or_empty(Searcher(db_uri=db, collection="sample").table)

    for name in ("outA", "outB", "outC", "outD", "outE"):
        (tmp_path / "db" / name).mkdir()
    a, promoted = record(db, "sample", entry("outA"), True, None)
    b, refused = record(db, "sample", entry("outB"), False, None)
    assert (a.id, promoted, b.id, refused) == (same, True, same + "-2", False)
    mine = [(e.id, e.path) for e in registry().models if e.id.startswith(same)]  # the copy holds earlier tests' too
    assert registry().promoted == same and mine == [(same, "outA"), (same + "-2", "outB")]
    c, kept = record(db, "sample", entry("outC"), True, None)  # gated against none: A was promoted meanwhile
    assert (c.id, kept, registry().promoted) == (same + "-3", False, same)
    d, kept = record(db, "sample", entry("outD"), True, same)  # gated against A, which is still promoted
    assert kept and registry().promoted == d.id == same + "-4"
    e, kept = record(db, "sample", entry("outE"), True, UNGATED)  # --promote always
    assert kept and registry().promoted == e.id


def test_rerankers_lists_model_directories_the_registry_does_not_name(sample_db):
    import shutil

    from tasks.rerank_registry import claim_model_dir, listing, release_model_dir

    _, held = claim_model_dir(sample_db, "sample", "self-supervised")  # a run in progress (this process)
    try:
        assert {u["path"]: u["training"] for u in listing(sample_db, "sample")["unregistered"]}[str(held)] is True
        release_model_dir(held)
        (held / "model.safetensors").write_text("weights")  # what a run killed before registering leaves
        assert {u["path"]: u["training"] for u in listing(sample_db, "sample")["unregistered"]}[str(held)] is False
        shown = subprocess.run([sys.executable, "-m", "corpus_search.cli", "rerankers", "-c", "sample", "--db",
                                sample_db], cwd=REPO, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
        assert shown.returncode == 0 and "registry does not name" in shown.stdout
        assert f"  {held}  (no kept version names it: --remove {held.name} deletes it)\n" in shown.stdout

        # One that an older version's registry names stays: a rollback there needs it.
        from query.registry import REGISTRY_KEY, Registry, RerankerEntry, write_registry
        from query.searcher import Searcher
        from tasks.rerank_registry import remove

        table = Searcher(db_uri=sample_db, collection="sample").table
        saved = Registry.from_json(table.to_lance().metadata.get(REGISTRY_KEY))
        entry = RerankerEntry(id=held.name, path=f"_rerankers/sample/{held.name}", created="2026-01-01T00:00:00+00:00",
                              base="tiny", signal="self-supervised", fingerprint="0", alpha=0.3)
        write_registry(table, Registry(saved.promoted, [*saved.models, entry]))
        naming = table.version
        write_registry(table, saved)
        assert {u["path"]: u["versions"] for u in listing(sample_db, "sample")["unregistered"]}[str(held)] == [naming]
        with pytest.raises(Exception, match=f"version\\(s\\) {naming} of the collection name it: a rollback"):
            remove(sample_db, "sample", [held.name])
        assert held.is_dir()
        _, killed = claim_model_dir(sample_db, "sample", "self-supervised")  # one no version ever named
        release_model_dir(killed)
        (killed / "model.safetensors").write_text("weights")
        assert remove(sample_db, "sample", [killed.name]) == [str(killed.resolve())]
        assert not killed.exists() and str(killed) not in {u["path"] for u in listing(sample_db, "sample")["unregistered"]}
    finally:
        shutil.rmtree(held, ignore_errors=True)


def _registered(db: str, model_id: str, promote: bool = False):
    """A registered model directory (any files will do: nothing here loads it)."""
    from query.registry import RerankerEntry
    from tasks.rerank_registry import default_out_dir, record, stored_path

    home = default_out_dir(db, "sample", model_id)
    home.mkdir(parents=True)
    (home / "config.json").write_text("{}")
    entry = RerankerEntry(id=model_id, path=stored_path(db, home), created="2026-12-07T00:00:00+00:00", base="b",
                          signal="self-supervised", fingerprint="0", alpha=1.0)
    return record(db, "sample", entry, promote)[0], home


def test_a_model_that_a_tag_promotes_is_not_removed_and_a_failed_command_changes_nothing(sample_db, tmp_path, capsys):
    """--remove deleted a model that a tagged version still promoted (rollback --to TAG then restored a promotion
    without files); and --unpromote --remove TYPO committed the unpromotion before failing on the typo."""
    import shutil

    from corpus_search.cli import main
    from tasks.rerank_registry import promote, remove
    from tasks.versions import tag_version

    db = str(tmp_path / "db")
    shutil.copytree(sample_db, db)
    a, a_dir = _registered(db, "20261207-000001-self-supervised", promote=True)
    tag_version(db, "sample", "prod")
    b, _ = _registered(db, "20261207-000002-self-supervised", promote=True)
    with pytest.raises(Exception, match=f"{a.id}.*promoted one of tag\\(s\\) prod .*kept while the tag is"):
        remove(db, "sample", [a.id])
    assert a_dir.is_dir()

    assert main(["rerankers", "-c", "sample", "--db", db, "--unpromote", "--remove", "no-such-id"]) == 2
    assert "nothing was changed" in capsys.readouterr().err
    assert main(["rerankers", "-c", "sample", "--db", db, "--unpromote", "--remove", a.id]) == 2  # the tag holds A
    assert "kept while the tag is; nothing was changed" in capsys.readouterr().err
    from query.registry import registry_or_empty
    from query.searcher import Searcher

    table = Searcher(db_uri=db, collection="sample").table
    assert registry_or_empty(table).promoted == b.id
    version = table.version
    promote(db, "sample", b.id)  # promoting the promoted one changes nothing: no new version
    assert Searcher(db_uri=db, collection="sample").table.version == version


def test_an_out_directory_inside_the_models_folder_or_one_that_cannot_be_made_is_refused(sample_db, tmp_path):
    """Another collection's model saved by --out under _rerankers/<other> was deleted when this one was dropped;
    an --out that cannot be created failed after the training data was built, with a traceback."""
    from flows.train_reranker import check_out_dir
    from query.errors import InvalidQueryError

    with pytest.raises(InvalidQueryError, match="inside the database's models folder"):
        check_out_dir(f"{sample_db}/_rerankers/other", sample_db)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidQueryError, match="cannot be created: .*file is not a directory"):
        check_out_dir(str(tmp_path / "file" / "model"), sample_db)
    check_out_dir(str(tmp_path / "new" / "model"), sample_db)  # a new directory anywhere else is fine


def test_a_claim_left_empty_or_by_a_process_whose_pid_was_reused_is_taken_over(tmp_path):
    """An empty claim (a run killed between creating it and writing its pid) read as pid 0, which signals our
    own process group: alive for ever, so drop refused the collection for good. So did a pid reused."""
    import os
    import time

    from tasks.rerank_registry import EMPTY_CLAIM_GRACE_S, _claim, _claimable

    marker = tmp_path / ".corpus-search-training"
    marker.write_text("")
    assert not _claimable(marker)  # a claim being written right now
    old = time.time() - EMPTY_CLAIM_GRACE_S - 1
    os.utime(marker, (old, old))
    assert _claimable(marker)
    marker.write_text(f"{os.getpid()} 1")  # this pid, but a process started at another time
    assert _claimable(marker)
    marker.unlink()
    assert _claim(marker) and not _claimable(marker)  # our own live claim
    marker.write_text(str(os.getpid()))  # an older version's claim: the pid alone
    assert not _claimable(marker)


def test_a_model_deleted_before_it_is_registered_is_not_registered_and_drop_waits_for_a_training_run(sample_db,
                                                                                                    tmp_path):
    import shutil

    from query.registry import RerankerEntry
    from tasks.collections import drop_collection
    from tasks.rerank_registry import claim_model_dir, record, release_model_dir, stored_path

    db = str(tmp_path / "db")
    shutil.copytree(sample_db, db)
    gone = RerankerEntry(id="20261207-000003-self-supervised", path="_rerankers/sample/20261207-000003-self-supervised",
                         created="2026-12-07T00:00:00+00:00", base="b", signal="self-supervised", fingerprint="0",
                         alpha=1.0)
    with pytest.raises(Exception, match="is gone .*nothing was registered"):
        record(db, "sample", gone, True)
    _, held = claim_model_dir(db, "sample", "self-supervised")  # a run in progress (this process)
    with pytest.raises(Exception, match="train-reranker run in progress"):
        drop_collection("sample", db)
    assert held.is_dir() and stored_path(db, held)
    release_model_dir(held)
    assert drop_collection("sample", db)["collection"] == "sample"


def test_a_directory_reused_for_another_promoted_model_is_loaded_again_not_served_from_the_cache(tiny_base, tmp_path):
    from query import models

    calls = []
    real = models.load_cross_encoder
    models.load_reranker.cache_clear()
    try:
        models.load_cross_encoder = lambda *a, **k: calls.append(a) or real(*a, **k)
        first = models.load_reranker(tiny_base, revision="A")
        assert models.load_reranker(tiny_base, revision="A") is first
        assert models.load_reranker(tiny_base, revision="B") is not first and len(calls) == 2
    finally:
        models.load_cross_encoder = real
        models.load_reranker.cache_clear()


def test_rerankers_refuses_promoting_one_and_none_at_once(sample_db, capsys):
    from corpus_search.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["rerankers", "-c", "sample", "--db", sample_db, "--promote", "x", "--unpromote"])
    assert exit_.value.code == 2 and "not allowed with argument --promote" in capsys.readouterr().err


def test_training_on_a_test_split_warns_that_evaluating_on_it_will_overstate_the_model(sample_db, tiny_base,
                                                                                    judgments_dir, tmp_path):
    import shutil

    judged = tmp_path / "judged"
    shutil.copytree(judgments_dir, judged)
    (judged / "qrels" / "train.tsv").rename(judged / "qrels" / "test.tsv")  # a collection with test judgments only
    with (judged / "queries.jsonl").open("a") as f:  # a judged query whose document is not in the collection
        f.write(json.dumps({"_id": "zz-unknown", "text": "a question about something never indexed"}) + "\n")
    with (judged / "qrels" / "test.tsv").open("a") as f:
        f.write("zz-unknown\tno-such-document\t1\n")
    out = subprocess.run([sys.executable, "-m", "corpus_search.cli", "train-reranker", "-c", "sample", "--db",
                          sample_db, "--judgments", str(judged), "--split", "test", "--base", tiny_base,
                          "--time-budget", "5", "--promote", "never", "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "training on the judgments' test split" in out.stderr and "will overstate" in out.stderr
    assert "1 of" in out.stderr and "judged queries were skipped: none of their judged documents" in out.stderr
    assert "dev queries: the gate's comparison" in out.stderr  # a handful of dev queries is said to be few
    assert json.loads(out.stdout)["signal"] == "judgments"


def test_freezing_lower_layers_leaves_only_the_top_layers_and_the_head_trainable(tiny_base):
    from tasks.rerank_train import freeze_lower_layers, load_base

    model = load_base(tiny_base, "cpu", 64)
    assert freeze_lower_layers(model, 1) == 1  # tiny BERT has 2 layers: layer 0 is frozen
    trainable = {n for n, p in model.model.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.1." in n or n.startswith("classifier") or "pooler" in n for n in trainable)
    assert not any("embeddings" in n or ".layer.0." in n for n in trainable)
    head_only = load_base(tiny_base, "cpu", 64)
    assert freeze_lower_layers(head_only, 0) == 2  # --train-layers 0: every layer frozen, the head trains
    assert all(n.startswith("classifier") or "pooler" in n
               for n, p in head_only.model.named_parameters() if p.requires_grad)


def test_training_scores_each_epoch_on_dev_and_saves_the_best_epochs_weights(sample_db, tiny_base, judgments_dir,
                                                                              tmp_path):
    from sentence_transformers import CrossEncoder

    from query.searcher import Searcher
    from tasks import rerank_data as rd
    from tasks.rerank_gate import dev_set, evaluator_samples
    from tasks.rerank_train import dev_evaluator, train_cross_encoder

    searcher = Searcher(db_uri=sample_db, collection="sample")
    queries, qrels = rd.judged_queries(judgments_dir, "train")
    examples = rd.fill_negatives(rd.examples_from_judgments(searcher, queries, qrels, 0), 0)
    samples = evaluator_samples(dev_set(searcher, examples, 30))
    assert samples and all(set(s) == {"query", "positive", "documents"} for s in samples)
    logged: list[str] = []
    out = tmp_path / "model"
    result = train_cross_encoder(examples, tiny_base, out, time_budget_s=120, max_epochs=3, patience=3,
                                 dev_samples=samples, log=logged.append)
    curve = result.dev_curve
    assert curve is not None and [e for e, _ in curve] == [1.0, 2.0, 3.0] and result.epochs == 3.0
    assert result.best_epoch == max(curve, key=lambda c: c[1])[0]
    assert sum(line.startswith("epoch ") for line in logged) == 3
    assert any(line.startswith("kept the weights of epoch") for line in logged)
    # The other two epochs were each tried in a soup with the best one.
    assert sum(line.startswith("average of epochs") for line in logged) == 2
    assert result.soup is None or (result.soup[0] == result.best_epoch and len(result.soup) > 1)
    assert not (out / "checkpoints").exists()  # epoch checkpoints do not travel with the model
    saved = dev_evaluator(samples, "cpu", result.precision)(CrossEncoder(str(out)))
    assert saved["dev_ndcg@10"] >= max(v for _, v in curve) - 0.02  # the soup never scores below the best epoch


def test_a_budgeted_run_ends_within_its_budget_scorings_and_soup_included(sample_db, tiny_base, judgments_dir,
                                                                            tmp_path):
    from query.searcher import Searcher
    from tasks import rerank_data as rd
    from tasks.rerank_gate import dev_set, evaluator_samples
    from tasks.rerank_train import SOUP_TRIES, dev_evaluator, load_base, precision, train_cross_encoder

    searcher = Searcher(db_uri=sample_db, collection="sample")
    queries, qrels = rd.judged_queries(judgments_dir, "train")
    examples = rd.fill_negatives(rd.examples_from_judgments(searcher, queries, qrels, 0), 0)
    # Many dev queries make each scoring cost about as much as an epoch, as on a real collection: before the
    # budget reserved time for them, the last epoch's scoring and the soup's ran past it.
    samples = evaluator_samples(dev_set(searcher, examples, 30)) * 5
    logged: list[str] = []
    # The budget is sized to this machine's speed now (a busy CI machine scores several times slower), so that
    # two epochs, their scorings and the soup fit in it on any machine: 8 s on a quiet 2-core CPU, where a
    # scoring takes about 1.2 s. A fixed 8 s left a loaded machine one epoch, or passed the budget.
    probe = dev_evaluator(samples, "cpu", precision("cpu"))
    probe(load_base(tiny_base, "cpu"))
    budget = max(8.0, 7 * probe.seconds[-1])
    result = train_cross_encoder(examples, tiny_base, tmp_path / "model", time_budget_s=budget, max_epochs=100,
                                 patience=100, dev_samples=samples, log=logged.append)
    assert result.stopped_by_budget and result.dev_curve and len(result.dev_curve) >= 2, logged
    assert any(line.startswith("time budget: training stops at") for line in logged)
    assert sum(line.startswith("average of epochs") for line in logged) <= SOUP_TRIES
    assert result.seconds <= budget * 1.15, logged


def test_the_scoring_reserve_is_the_runs_mean_scoring_time_for_the_cut_epoch_and_the_soups_tries():
    from tasks.rerank_train import SCORING_SPEEDUP, SOUP_TRIES, scoring_reserve

    assert scoring_reserve([2.0, 4.0], 900, 10.0, 0) == 3.0  # only the cut epoch: no other epoch to average with
    assert scoring_reserve([2.0, 4.0], 900, 10.0, 1) == 6.0
    assert scoring_reserve([3.0], 900, 10.0, 50) == 3.0 * (1 + SOUP_TRIES)  # the soup tries at most SOUP_TRIES
    # Nothing timed yet: the dev pairs at SCORING_SPEEDUP times the training speed.
    assert scoring_reserve([], 800, 10.0, 0) == 800 / (10.0 * SCORING_SPEEDUP)
    assert scoring_reserve([], 800, 0.0, 0) == 0.0


def test_pairs_count_what_was_trained_an_epochs_last_batch_may_be_partial():
    from tasks.rerank_train import BATCH_QUERIES, PAIRS_PER_QUERY, pairs_trained

    assert pairs_trained(1, 4) == 4 * PAIRS_PER_QUERY  # one step over 4 queries: 36 pairs, not a batch's 72
    assert pairs_trained(2, BATCH_QUERIES + 3) == (BATCH_QUERIES + 3) * PAIRS_PER_QUERY  # one epoch, two steps
    assert pairs_trained(3, BATCH_QUERIES + 3) == (2 * BATCH_QUERIES + 3) * PAIRS_PER_QUERY  # into epoch 2
    assert pairs_trained(5, 0) == 0


def test_a_run_whose_last_steps_got_slower_reads_its_pace_from_them():
    from tasks.rerank_train import RECENT_STEPS, pace

    steady = [1.0] * 40
    assert pace([]) == (0.0, 1.0)
    assert pace([1.0, 1.0, 4.0]) == (2.0, 1.0)  # too few steps to tell a trend: their mean
    assert pace([1.0] * 4 + [3.0] * 4) == (3.0, 3.0)  # a short run: its last half against its first (medians)
    assert pace(steady + [2.0] * RECENT_STEPS) == (2.0, 2.0)  # a busier machine: each step now takes twice as long
    assert pace(steady + [0.5] * RECENT_STEPS) == (0.5, 1.0)  # faster: past scorings are never scaled down
    # One long step (an epoch's end holds its dev scoring) is neither the pace nor a slowdown: medians.
    assert pace(steady + [1.0] * (RECENT_STEPS - 1) + [60.0]) == (1.0, 1.0)


def test_a_greedy_soup_takes_in_only_the_epochs_that_do_not_lower_the_dev_score(tiny_base, tmp_path):
    import torch
    from safetensors.torch import save_file

    from tasks.rerank_train import greedy_soup, load_base

    model = load_base(tiny_base, "cpu")
    best = {k: v.clone() for k, v in model.model.state_dict().items()}  # the model holds the best epoch
    torch.manual_seed(0)
    near = {k: v + (torch.rand_like(v) - 0.5) * 0.2 if v.is_floating_point() else v for k, v in best.items()}
    noisy = {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in best.items()}
    paths = []
    # The noisy epoch comes first: a refused trial must leave the kept weights as they were.
    for name, sd in (("best", best), ("noisy", noisy), ("near", near)):
        paths.append(tmp_path / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(paths[-1]))
    paths[0].unlink()  # the best epoch's file is not read again: the model already holds its weights

    def score(m) -> float:  # a stand-in dev score: weights far from the best epoch's score lower
        own = m.model.state_dict()
        return -float(max(float((own[k] - best[k]).abs().max()) for k in best if best[k].is_floating_point()) > 0.5)

    logged: list[str] = []
    assert greedy_soup(model, paths, 0.0, score, logged.append, ["best", "noisy", "near"]) == ["best", "near"]
    assert [line.endswith("(kept)") for line in logged] == [False, True]
    # The noisy epoch was tried and refused: the model holds the mean of the two kept epochs, brute force.
    own = model.model.state_dict()
    for k, v in best.items():
        if v.is_floating_point():
            assert torch.allclose(own[k], (v + near[k]) / 2, atol=1e-6), k


def test_a_long_self_supervised_run_measures_the_training_speed_and_sizes_its_sample_by_it(sample_db, tiny_base,
                                                                                          monkeypatch):
    import flows.train_reranker as fr
    from query import Searcher
    from query.registry import read_registry

    monkeypatch.setattr(fr, "PROBE_MIN_BUDGET", 1.0)  # this run's 5 s budget counts as a long one
    monkeypatch.setattr(fr, "MIN_PSEUDO_SAMPLE", 0)  # and the small sample collection as a large one
    sized = []
    real = fr.pseudo_sample_size
    monkeypatch.setattr(fr, "pseudo_sample_size", lambda *a: sized.append(a) or real(*a))
    result = _train(sample_db, tiny_base, self_supervised=True, promote="never", time_budget=5)
    [(budget, _device, speed)] = sized
    assert budget == 5 and speed > 0  # measured, not the device's constant (None)
    entry = read_registry(Searcher(db_uri=sample_db, collection="sample").table).find(result["id"])
    assert entry.train["measured_queries_per_s"] == round(speed, 3)


def test_the_sample_holds_two_passes_at_the_measured_speed_and_never_under_the_floor():
    from flows.train_reranker import (CPU_QUERIES_PER_S, MIN_PSEUDO_SAMPLE, PSEUDO_EPOCHS, SPEED_MARGIN,
                                      pseudo_sample_size)

    # A measured speed is counted on with a margin: a sample too big for two passes loses the second.
    assert pseudo_sample_size(6000, "cpu", 0.5) == int(6000 * 0.5 * SPEED_MARGIN / PSEUDO_EPOCHS)
    assert SPEED_MARGIN < 1
    assert pseudo_sample_size(60, "cpu", 0.5) == MIN_PSEUDO_SAMPLE
    # Without a measurement: the constant of the CPU's training precision.
    assert pseudo_sample_size(6000, "cpu") in {int(6000 * v / PSEUDO_EPOCHS) for v in CPU_QUERIES_PER_S.values()}


def test_a_speed_probe_times_real_trainer_steps_and_keeps_no_weights(tiny_base, tmp_path, monkeypatch):
    import tempfile

    from tasks.rerank_data import NEGATIVES, Example
    from tasks.rerank_train import BATCH_QUERIES, PROBE_EXAMPLES, measure_speed

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # so that TMPDIR is read again
    words = "glaciers rivers deserts forests islands valleys volcanoes canyons".split()
    examples = [Example(f"q{i}", f"about {words[i % 8]}", "terms", f"A paragraph on {words[i % 8]} number {i}.",
                        [f"Another text on {words[(i + j) % 8]}." for j in range(1, NEGATIVES + 1)], {})
                for i in range(PROBE_EXAMPLES)]
    assert measure_speed(examples, tiny_base, device="cpu") > 0
    assert list(tmp_path.iterdir()) == []  # the probe's model went with its temporary folder
    with pytest.raises(ValueError, match="needs"):
        measure_speed(examples[:BATCH_QUERIES], tiny_base, device="cpu")


def test_a_database_under_the_home_directory_keeps_its_models_there_not_in_a_folder_named_tilde():
    from pathlib import Path

    from query.registry import local_db_root

    assert local_db_root("~/corpus/db") == Path.home() / "corpus" / "db"
    assert local_db_root("file://~/corpus/db") == Path.home() / "corpus" / "db"


def test_filler_negatives_are_never_a_positive_of_a_document_relevant_to_the_query():
    from tasks.rerank_data import NEGATIVES, Example, fill_negatives

    same_doc = [Example(f"q{i}", f"query {i}", "sentence", f"paragraph {i} of doc A", [], {"A": 1}) for i in range(3)]
    others = [Example(f"o{i}", f"other {i}", "sentence", f"paragraph of doc {i}", [], {f"D{i}": 1})
              for i in range(NEGATIVES + 2)]
    for ex in fill_negatives(same_doc + others, seed=0):
        if ex.relevant == {"A": 1}:
            assert not [n for n in ex.negatives if "doc A" in n] and len(ex.negatives) == NEGATIVES


def test_judgments_naming_documents_without_their_file_suffix_match_a_collection_of_html_files():
    from tasks.datasets import judged_as_collection

    ids = {"CACM-0001.html", "CACM-0002.html", "notes/x.md", "42", "pages/CACM-0003.html"}
    qrels = {"1": {"CACM-0001": 1, "CACM-0002": 0}, "2": {"42": 2, "notes/x": 1, "gone": 1, "CACM-0003": 1}}
    assert judged_as_collection(qrels, ids) == {"1": {"CACM-0001.html": 1, "CACM-0002.html": 0},
                                                "2": {"42": 2, "notes/x.md": 1, "gone": 1,
                                                      "pages/CACM-0003.html": 1}}  # an archive's folder, as eval
    assert judged_as_collection(qrels, {"CACM-0001", "42"}) is qrels


def test_the_self_supervised_dev_set_moves_only_by_the_documents_an_index_run_adds(sample_db, tmp_path, monkeypatch):
    """A draw by row position changed whenever the row count did: the promoted model was then gated on
    documents it had trained on."""
    import shutil

    from flows import train_reranker as tr
    from flows.index_corpus import index_corpus
    from query.searcher import Searcher

    db = str(tmp_path / "db")
    shutil.copytree(sample_db, db)
    monkeypatch.setattr(tr, "_n_dev", lambda searcher: 12)  # a budget that does not grow with the collection

    def dev_docs() -> set[str]:
        return {d for e in tr.pseudo_dev(Searcher(db_uri=db, collection="sample"), 0) for d in e.relevant}

    before = dev_docs()
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(3):
        (extra / f"n{i}.md").write_text(f"# Note {i}\n\nThe first paragraph of note {i} is about rivers and deltas.\n\n"
                                        f"The second paragraph of note {i} is about how deltas form at river mouths.")
    index_corpus([str(extra)], collection="sample", db_uri=db)
    after = dev_docs()
    assert before and after - before <= {f"n{i}.md" for i in range(3)}


def test_self_supervised_training_on_one_paragraph_documents_says_why_it_has_no_dev_queries(prefect_harness,
                                                                                             tiny_base, tmp_path):
    from flows.index_corpus import index_corpus
    from flows.train_reranker import train_reranker
    from tasks.rerank_data import TrainingDataError

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(40):
        (notes / f"n{i}.txt").write_text(f"Note {i} says that river number {i} floods in spring after the snow melts.")
    db = str(tmp_path / "db")
    index_corpus([str(notes)], collection="notes", db_uri=db)
    with pytest.raises(TrainingDataError, match="documents of two paragraphs or more.*--judgments"):
        train_reranker("notes", db_uri=db, base=tiny_base, self_supervised=True, time_budget=20)


def test_the_stable_draw_takes_a_paragraph_of_each_document_in_turn_so_no_long_one_fills_it(tmp_path):
    from types import SimpleNamespace

    import lancedb
    import pyarrow as pa

    from tasks.rerank_data import stable_paragraphs

    docs = [("book", 700)] + [(f"page{i}", 5) for i in range(60)]
    rows = [(f"{d}-{p:04d}", d, p) for d, size in docs for p in range(size)]
    table = lancedb.connect(str(tmp_path)).create_table("t", pa.table({
        "id": [r[0] for r in rows], "doc_id": [r[1] for r in rows], "title": [""] * len(rows),
        "text": [f"text of {r[0]}" for r in rows], "position": [r[2] for r in rows]}))
    drawn = stable_paragraphs(SimpleNamespace(table=table, collection="t"), 100, seed=0)
    per_doc = {}
    for r in drawn:
        per_doc[r["doc_id"]] = per_doc.get(r["doc_id"], 0) + 1
    assert len(drawn) == 100 and len(per_doc) == 61 and per_doc["book"] <= 2  # 61 first paragraphs, then seconds
    assert [r["id"] for r in stable_paragraphs(SimpleNamespace(table=table, collection="t"), 100, seed=0)] == \
        [r["id"] for r in drawn]


def _judged_copy(judgments_dir: str, tmp_path):
    import shutil

    root = tmp_path / "judged"
    shutil.copytree(judgments_dir, root)
    return root


def test_queries_of_one_text_land_on_one_side_and_test_queries_are_never_trained_or_gated_on(
        sample_db, judgments_dir, tmp_path):
    """The split hashed query ids: a text judged under two ids was trained on and gated on, and a query judged in
    both train and test was trained on (MS MARCO, Quora and FiQA repeat query texts)."""
    from prefect import flow

    from flows.train_reranker import judged_split
    from query.searcher import Searcher

    root = _judged_copy(judgments_dir, tmp_path)
    queries = [json.loads(line) for line in (root / "queries.jsonl").read_text().splitlines()]
    judged = (root / "qrels" / "train.tsv").read_text().splitlines()[1:]
    # Every query again under a new id (same text, same judgment), and the first two judged in test too.
    with open(root / "queries.jsonl", "a") as q, open(root / "qrels" / "train.tsv", "a") as qr:
        for item, line in zip(queries, judged, strict=True):
            q.write(json.dumps({"_id": "copy-" + item["_id"], "text": item["text"].upper()}) + "\n")
            qr.write("copy-" + line + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(judged[:2]) + "\n")

    @flow
    def split():
        return judged_split(Searcher(db_uri=sample_db, collection="sample"), str(root), "train", 0)

    train, dev = split()
    texts = lambda examples: {e.query.lower() for e in examples}  # noqa: E731
    assert train and dev and not texts(train) & texts(dev)
    tested = {queries[0]["text"].lower(), queries[1]["text"].lower()}
    assert not tested & (texts(train) | texts(dev))


def test_too_few_judged_queries_say_how_many_are_needed(sample_db, judgments_dir, tmp_path):
    from flows.train_reranker import train_reranker
    from tasks.rerank_data import TrainingDataError

    root = _judged_copy(judgments_dir, tmp_path)
    lines = (root / "qrels" / "train.tsv").read_text().splitlines()
    (root / "qrels" / "train.tsv").write_text("\n".join(lines[:3]) + "\n")  # the header and 2 queries
    with pytest.raises(TrainingDataError, match="only 2 judged queries of split 'train' .* at least 3 are held out"):
        train_reranker("sample", db_uri=sample_db, judgments=str(root), time_budget=5, promote="never")


def test_trec_qrels_are_judgments_too(sample_db, judgments_dir, tmp_path):
    from tasks import rerank_data as rd

    root = _judged_copy(judgments_dir, tmp_path)
    beir = rd.judged_queries(root, "train")
    lines = (root / "qrels" / "train.tsv").read_text().splitlines()[1:]
    (root / "qrels" / "train.tsv").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in (ln.split("\t") for ln in lines)))
    assert rd.judged_queries(root, "train") == beir


def test_an_out_directory_that_cannot_be_made_is_refused_and_leaves_no_claimed_folder(sample_db, tmp_path):
    from query.registry import RerankerRegistryError
    from tasks.rerank_registry import claim_model_dir, models_root

    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = set(models_root(sample_db, "sample").glob("*")) if models_root(sample_db, "sample").exists() else set()
    with pytest.raises(RerankerRegistryError, match="cannot create it"):
        claim_model_dir(sample_db, "sample", "judgments", str(blocker / "model"))
    assert set(models_root(sample_db, "sample").glob("*")) == before


def test_an_empty_id_to_promote_is_refused_not_taken_for_none(sample_db, capsys):
    """A script whose id variable was empty unpromoted the collection's re-ranker, and said so with exit 0."""
    from corpus_search.cli import main

    assert main(["rerankers", "-c", "sample", "--db", sample_db, "--promote", ""]) == 2
    assert "no re-ranker id given to promote" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "sentences"), [
    ("Die Stadt wächst schneller als je zuvor. Über die Jahre wuchs sie stetig weiter an.", 2),  # an accented capital
    ("Москва самый большой город страны. Через город течёт широкая река Москва.", 2),
    ("长城是古代中国北方修建的防御工程。它绵延数千公里，穿过山脉和沙漠。", 2),  # no space after 。
    ("the river floods the plain every single spring. it leaves rich silt on the fields.", 2),  # all lower case
    ("See e.g. the paper by Lee and others. It was cited widely.", 2),  # no sentence end before a lower-case word
    ("भारत दक्षिण एशिया का एक बहुत बड़ा देश है। इसकी राजधानी नई दिल्ली है और यहाँ बहुत लोग रहते हैं।", 2),
    # Mostly lower case, with the odd "I": one capital put the whole paragraph in "merge" mode.
    ("I guess so. we could meet at the station around noon. then we walk to the market together.", 3),
    # Dialogue: each quote opens with a quotation mark, and "she asked" continues its sentence.
    ('"Where are you going tonight?" she asked him at the door. "Home," he said quietly to her.', 2),
])
def test_pseudo_queries_cut_sentences_out_of_text_in_any_script_or_case(text, sentences):
    """Only '. ' before an ASCII capital ended a sentence: Russian, Chinese and lower-case collections made no
    sentence query, and so no dev query, and self-supervised training refused them as too short."""
    import random

    from tasks import rerank_data as rd

    assert len(rd._sentences(text)) == sentences
    made = rd._sentence_query({"title": "", "text": text}, random.Random(0), False)
    assert made is not None and made[0] in text and made[0] not in made[1]


def test_salient_terms_of_chinese_text_are_character_pairs():
    from tasks import rerank_data as rd

    terms = rd._terms("长城是防御工程 and the Great Wall of China")
    assert {"长城", "工程", "great", "wall", "china"} <= set(terms) and "the" not in terms
    # A Devanagari word is not cut at its vowel signs; two Hangul syllables make a noun.
    assert {"जनसंख्या", "राजधानी"} <= set(rd._terms("इसकी जनसंख्या बहुत अधिक है और राजधानी दिल्ली"))
    assert {"수도", "도시"} <= set(rd._terms("서울은 대한민국의 수도 가장 큰 도시"))
    assert rd._words("长城是古代中国北方修建的防御工程") >= 6  # 16 characters: a sentence, not one word


def test_auto_refuses_a_model_gated_on_dev_queries_about_fewer_than_three_documents():
    """Nineteen dev queries cut out of one held-out document promoted a model at p = 0.00."""
    from tasks.rerank_gate import decide

    refused, why = decide("auto", 0.50, None, 0.64, p=0.0, documents=1)
    assert refused is False and "ask for 1 document(s), fewer than 3" in why
    assert decide("auto", 0.50, None, 0.64, p=0.0, documents=3)[0] is True
    assert decide("always", 0.50, None, 0.64, p=0.0, documents=1)[0] is True


def test_the_gates_documents_are_the_relevant_ones_among_the_candidates_not_every_judged_id():
    from types import SimpleNamespace

    from tasks.rerank_gate import DevSet, dev_documents

    hits = [[SimpleNamespace(doc_id=d) for d in ("D1", "D9")], [SimpleNamespace(doc_id="D1")]]
    dev = DevSet(["q1", "q2"], ["a", "b"], {"q1": {"D1": 1, "X1": 1, "X2": 1}, "q2": {"D1": 2}}, hits, [[], []])
    assert dev_documents(dev) == 1  # X1 and X2 are judged but not in the collection (or never retrieved)


def test_queries_that_find_no_negatives_outside_their_document_say_so(prefect_harness, tiny_base, tmp_path):
    """One long document and a few one-line notes: every query came from the long one, none found a negative in
    another document, and the refusal said 'index more articles'."""
    from flows.index_corpus import index_corpus
    from flows.train_reranker import train_reranker
    from tasks.rerank_data import TrainingDataError

    folder = tmp_path / "book"
    folder.mkdir()
    (folder / "book.md").write_text("# River Book\n\n" + "\n\n".join(
        f"Chapter {i} tells how river number {i} carved its valley. Its floods came every spring after the snow "
        f"melted on the mountains, and farmers number {i} moved their fields uphill." for i in range(60)))
    for i in range(3):
        (folder / f"note{i}.txt").write_text(f"short note {i}")
    db = str(tmp_path / "db")
    index_corpus([str(folder)], collection="book", db_uri=db)
    with pytest.raises(TrainingDataError, match=r"none found 7 negatives outside its own document"):
        train_reranker("book", db_uri=db, base=tiny_base, self_supervised=True, time_budget=20)
