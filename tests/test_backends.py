"""Re-ranker backends (torch, ONNX Runtime fp32/int8, OpenVINO), the auto choice, the score cache and
adaptive depth: real local models, real exports, no mocks of the engines."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from query import backends, onnx_backend
from query.devices import resolve_precision
from query.errors import PrecisionError
from query.fusion import fusion_reach, minmax, rank_order
from query.models import load_cross_encoder
from query.rerank import Reranker
from tests._models import PASSAGES, QUERY, build_cross_encoder

LONGER = [p * 3 for p in PASSAGES]  # a spread of lengths, as real paragraphs have


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    return {(body, labels): build_cross_encoder(root / f"{body}-{labels}", labels, body=body)
            for body, labels in (("minilm", 1), ("tiny-electra", 2), ("tiny-bert", 1))}


def fp32_scores(ce, passages=LONGER) -> np.ndarray:
    return Reranker(ce, precision="fp32").score(QUERY, passages, top_k=len(passages))


@pytest.mark.parametrize("body,labels", [("minilm", 1), ("tiny-electra", 2)])
def test_onnx_fp32_scores_equal_torch_fp32(model_dirs, body, labels):
    ce = load_cross_encoder(str(model_dirs[body, labels]))
    onnx = Reranker(ce, backend="onnx", precision="fp32")
    assert (onnx.backend, onnx.precision) == ("onnx", "fp32")
    np.testing.assert_allclose(onnx.score(QUERY, LONGER, top_k=len(LONGER)), fp32_scores(ce), atol=1e-4)


def test_int8_scores_stay_within_tolerance_of_fp32_and_keep_the_order_of_clear_winners(model_dirs):
    ce = load_cross_encoder(str(model_dirs["minilm", 1]))
    int8 = Reranker(ce, backend="onnx", precision="int8")
    assert (int8.backend, int8.precision) == ("onnx", "int8")
    ref, got = fp32_scores(ce), int8.score(QUERY, LONGER, top_k=len(LONGER))
    assert np.max(np.abs(got - ref)) <= 0.05
    assert np.corrcoef(got, ref)[0, 1] > 0.9


def test_openvino_scores_equal_torch_fp32(model_dirs):
    pytest.importorskip("openvino")
    ce = load_cross_encoder(str(model_dirs["tiny-electra", 2]))
    ov = Reranker(ce, backend="openvino", precision="fp32")
    assert ov.backend == "openvino"
    np.testing.assert_allclose(ov.score(QUERY, LONGER, top_k=len(LONGER)), fp32_scores(ce), atol=1e-4)


def test_the_export_is_cached_beside_a_local_model_and_redone_when_its_weights_change(model_dirs, tmp_path):
    path = build_cross_encoder(tmp_path / "m", 1, body="tiny-bert")
    Reranker(load_cross_encoder(str(path)), backend="onnx", precision="fp32")
    exported = path / "onnx" / onnx_backend.FP32_FILE
    assert exported.is_file()
    first = exported.stat().st_mtime_ns
    Reranker(load_cross_encoder(str(path)), backend="onnx", precision="fp32")
    assert exported.stat().st_mtime_ns == first  # exported once
    weights = path / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "retrained"
    Reranker(load_cross_encoder(str(path)), backend="onnx", precision="fp32")
    assert exported.stat().st_mtime_ns != first


def test_auto_measures_the_candidates_once_per_machine_and_reuses_the_measurement(tmp_path, monkeypatch):
    path = build_cross_encoder(tmp_path / "m", 1, body="tiny-bert")
    first = Reranker(load_cross_encoder(str(path)), backend="auto", precision="auto")
    report = first.backend_report
    assert report["chosen"] == f"{first.backend}:{first.precision}"
    # torch runs at this machine's auto precision (bf16 on CPUs with native bf16, else fp32)
    torch_auto = f"torch:{resolve_precision('auto', 'cpu')}"
    assert {torch_auto, "onnx:fp32"} <= set(report["candidates"])
    meta = json.loads((path / "onnx" / onnx_backend.META_FILE).read_text())
    assert meta["timings"][backends.cpu_key()]

    def no_timing(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(backends, "_time", no_timing)
    again = Reranker(load_cross_encoder(str(path)), backend="auto", precision="auto")
    assert again.backend_report["chosen"] == report["chosen"]


def test_auto_refuses_int8_when_it_disagrees_with_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "INT8_MAX_SCORE_DIFF", -1.0)  # nothing agrees that closely
    path = build_cross_encoder(tmp_path / "m", 1, body="tiny-bert")
    r = Reranker(load_cross_encoder(str(path)), backend="auto", precision="auto")
    assert "refused" in r.backend_report["candidates"]["onnx:int8"]
    assert r.precision != "int8"


def test_auto_with_a_torch_precision_stays_on_torch_and_onnx_refuses_it(model_dirs):
    ce = load_cross_encoder(str(model_dirs["tiny-bert", 1]))
    assert Reranker(ce, backend="auto", precision="fp32").backend in ("torch", "onnx")
    with pytest.raises(PrecisionError, match="torch precision"):
        Reranker(ce, backend="onnx", precision="bf16")
    with pytest.raises(PrecisionError, match="int8"):
        Reranker(ce, backend="torch").logits(QUERY, PASSAGES, precision="int8")


def test_the_score_cache_answers_a_repeated_query_without_a_model_call(model_dirs, monkeypatch):
    r = Reranker(load_cross_encoder(str(model_dirs["tiny-bert", 1])), precision="fp32", cache_size=100)
    first = r.score(QUERY, PASSAGES)
    monkeypatch.setattr(r, "logits", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model called")))
    np.testing.assert_array_equal(r.score(QUERY, PASSAGES), first)
    assert r.cache.hits == len(PASSAGES)


def test_the_score_cache_keys_on_query_and_passage_and_forgets_the_least_recently_used():
    cache = backends.ScoreCache(2)
    a, b, c = cache.keys("q", ["a", "b", "c"])
    assert cache.keys("other", ["a"])[0] != a
    cache.store([a, b], np.array([1.0, 2.0]))
    cache.lookup([a])  # a is now more recent than b
    cache.store([c], np.array([3.0]))
    values, found = cache.lookup([a, b, c])
    assert found.tolist() == [True, False, True]
    assert values[0] == 1.0 and values[2] == 3.0


def test_a_cached_cascade_still_returns_the_exact_top_k(model_dirs):
    ce = load_cross_encoder(str(model_dirs["minilm", 1]))
    r = Reranker(ce, precision="fp32", cache_size=100)
    r.precision = "bf16+fp32"  # the cascade, whatever this CPU supports (emulated bf16 is only slow)
    r._set_coarse_model()
    passages = LONGER * 3
    exact = fp32_scores(ce, passages)
    for _ in range(2):  # cold, then with the exact scores cached
        got = r.score(QUERY, passages, top_k=3)
        top = rank_order(exact)[:3]
        np.testing.assert_array_equal(rank_order(got)[:3], top)
        np.testing.assert_allclose(got[top], exact[top], atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.1, 0.3, 0.6])
def test_fusion_reach_never_drops_a_candidate_that_some_cross_encoder_score_would_put_in_the_top_k(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    for _ in range(200):
        n, k = int(rng.integers(1, 60)), int(rng.integers(1, 12))
        retrieval = np.sort(rng.gamma(1.0, 1.0, n))[::-1]
        keep = fusion_reach(retrieval, alpha, k)
        assert keep.sum() >= min(k, n)
        for ce in (rng.random(n), np.where(~keep, 1.0, 0.0)):  # random, and the most adversarial scores
            fused = alpha * minmax(ce) + (1 - alpha) * minmax(retrieval)
            assert keep[rank_order(fused)[:k]].all()


def test_fusion_reach_keeps_everything_without_fusion():
    assert fusion_reach(np.linspace(1, 0, 50), 1.0, 10).all()


def test_fusion_reach_at_weight_zero_keeps_the_kth_candidate_and_its_ties():
    retrieval = np.array([0.9, 0.8, 0.5, 0.5, 0.5, 0.1])
    assert fusion_reach(retrieval, 0.0, 3).tolist() == [True, True, True, True, True, False]
    assert fusion_reach(retrieval, 0.0, 2).tolist() == [True, True, False, False, False, False]


def test_adaptive_depth_scores_only_the_candidates_that_can_reach_the_top_k(model_dirs):
    from query.searcher import ActiveReranker, _rerank

    n = 40
    retrieval = np.sort(np.random.default_rng(0).gamma(1.0, 1.0, n))[::-1]
    table = pa.table({"id": [f"p{i}" for i in range(n)], "doc_id": [f"d{i}" for i in range(n)],
                      "title": [""] * n, "text": [PASSAGES[i % len(PASSAGES)] + f" {i}" for i in range(n)],
                      "source": ["s"] * n, "position": list(range(n)), "retrieval_score": retrieval})
    model = Reranker(load_cross_encoder(str(model_dirs["tiny-bert", 1])), precision="fp32")
    fused = ActiveReranker(model, "m", alpha=0.1)
    hits, scored = _rerank(QUERY, table, fused, False, 5, adaptive=True)
    assert scored == int(fusion_reach(retrieval, 0.1, 5).sum()) < n
    assert len(hits) == 5 and all(0.0 <= h.score <= 1.0 for h in hits)
    _, full = _rerank(QUERY, table, fused, False, 5, adaptive=False)
    assert full == n
    # Weight 0 (the gate's choice for a re-ranker that does not help): the retrieval order, scored in 0..1.
    # No model is needed there (the Searcher loads none): nothing is scored.
    kept, none_scored = _rerank(QUERY, table, ActiveReranker(None, "m", alpha=0.0), False, 5, adaptive=True)
    assert [h.text for h in kept] == table["text"].to_pylist()[:5] and all(0.0 <= h.score <= 1.0 for h in kept)
    assert none_scored == 0
    page2, _ = _rerank(QUERY, table, ActiveReranker(None, "m", alpha=0.0), False, 5, adaptive=True, offset=5)
    assert [h.text for h in page2] == table["text"].to_pylist()[5:10] and [h.rank for h in page2] == list(range(6, 11))
    _, alone = _rerank(QUERY, table, ActiveReranker(model, "m"), False, 5, adaptive=True)
    assert alone == n  # without fusion the cross-encoder alone decides: every candidate is scored


def test_quantising_leaves_the_processs_root_logger_level_as_it_was(tmp_path):
    import logging

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        path = build_cross_encoder(tmp_path / "m", 1, body="tiny-bert")
        Reranker(load_cross_encoder(str(path)), backend="onnx", precision="int8")
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)
