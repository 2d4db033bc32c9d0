"""Behaviour of query.rerank: loading (offline-first, fail fast), score mapping, order, precision."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

from query import devices, models  # noqa: E402
from query.cross_encoder import checkpoint_keys  # noqa: E402
from query.devices import cpu_has_native_bf16  # noqa: E402
from query.errors import ModelUnavailableError  # noqa: E402
from query.models import FIX_HINT, load_cross_encoder  # noqa: E402
from query.rerank import Reranker, logits_to_scores, rank_order, resolve_precision  # noqa: E402
from tests._models import PASSAGES, QUERY, build_cross_encoder, minilm_dir  # noqa: E402


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ce")
    dirs = {}
    for body in ("minilm", "tiny-bert", "tiny-electra"):
        for labels in (1, 2):
            dirs[body, labels] = build_cross_encoder(root / f"{body}-{labels}", labels, body=body)
    return dirs


@pytest.fixture(scope="module")
def loaded(model_dirs):
    cache = {}

    def get(body: str, labels: int):
        if (body, labels) not in cache:
            cache[body, labels] = load_cross_encoder(str(model_dirs[body, labels]))
        return cache[body, labels]

    return get


def raw_logits(ce, passages=PASSAGES) -> np.ndarray:
    out = ce.predict([(QUERY, p) for p in passages], activation_fn=torch.nn.Identity(), show_progress_bar=False)
    return np.asarray(out, dtype=np.float32).reshape(len(passages), -1)


ALL = [(b, n) for b in ("minilm", "tiny-bert", "tiny-electra") for n in (1, 2)]


@pytest.mark.parametrize("body,labels", ALL)
def test_scores_are_float32_in_unit_interval_one_per_passage(loaded, body, labels):
    scores = Reranker(loaded(body, labels), precision="fp32").score(QUERY, PASSAGES)
    assert scores.dtype == np.float32
    assert scores.shape == (len(PASSAGES),)
    assert np.all((scores >= 0.0) & (scores <= 1.0))


@pytest.mark.parametrize("body", ["minilm", "tiny-bert", "tiny-electra"])
def test_one_logit_score_is_sigmoid_of_the_logit(loaded, body):
    ce = loaded(body, 1)
    reranker = Reranker(ce, precision="fp32")
    assert reranker.num_labels == 1
    z = raw_logits(ce)[:, 0].astype(np.float64)
    np.testing.assert_allclose(reranker.score(QUERY, PASSAGES), 1.0 / (1.0 + np.exp(-z)), atol=2e-6)


@pytest.mark.parametrize("body", ["minilm", "tiny-bert", "tiny-electra"])
def test_two_logit_score_is_softmax_probability_of_class_one(loaded, body):
    ce = loaded(body, 2)
    reranker = Reranker(ce, precision="fp32")
    assert reranker.num_labels == 2
    z = raw_logits(ce).astype(np.float64)
    softmax1 = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
    np.testing.assert_allclose(reranker.score(QUERY, PASSAGES), softmax1, atol=2e-6)


@pytest.mark.parametrize("body,labels", ALL)
def test_order_equals_the_models_own_predict_order(loaded, body, labels):
    ce = loaded(body, labels)
    own = ce.predict([(QUERY, p) for p in PASSAGES], show_progress_bar=False)  # default activation
    own = np.asarray(own, dtype=np.float32)
    own = own[:, 1] - own[:, 0] if own.ndim == 2 else own  # 2 logits: order of softmax[:, 1]
    ours = Reranker(ce, precision="fp32", batch_size=3).score(QUERY, PASSAGES)
    np.testing.assert_array_equal(rank_order(ours), rank_order(own))


def test_scores_do_not_depend_on_batch_size_or_passage_order(loaded):
    ce = loaded("tiny-bert", 1)
    ref = Reranker(ce, precision="fp32", batch_size=32).score(QUERY, PASSAGES)
    np.testing.assert_allclose(Reranker(ce, precision="fp32", batch_size=1).score(QUERY, PASSAGES), ref, atol=1e-6)
    perm = np.random.default_rng(0).permutation(len(PASSAGES))
    shuffled = Reranker(ce, precision="fp32").score(QUERY, [PASSAGES[i] for i in perm])
    np.testing.assert_allclose(shuffled, ref[perm], atol=1e-6)


def test_empty_passage_list_gives_empty_scores(loaded):
    scores = Reranker(loaded("tiny-bert", 1)).score(QUERY, [])
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_rank_order_is_score_descending_then_original_index_ascending():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.2, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(rank_order(scores), [1, 3, 2, 0, 4, 5])
    assert rank_order([]).shape == (0,)


def test_logits_to_scores_is_stable_for_extreme_logits():
    s = logits_to_scores(np.array([[-1000.0], [0.0], [1000.0]]))
    np.testing.assert_allclose(s, [0.0, 0.5, 1.0])
    s2 = logits_to_scores(np.array([[1000.0, -1000.0], [0.0, 0.0], [-5.0, 5.0]]))
    np.testing.assert_allclose(s2, [0.0, 0.5, 1.0 / (1.0 + np.exp(-10.0))], rtol=1e-6)


def test_missing_local_directory_raises_fast_with_the_fix(tmp_path):
    missing = tmp_path / "no-such-model"
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_cross_encoder(str(missing))
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert str(missing) in msg and FIX_HINT in msg and "CORPUS_SEARCH_CROSS_ENCODER" in msg


def test_uncached_hub_name_raises_fast_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_cross_encoder("corpus-search-tests/no-such-cross-encoder")
    assert time.perf_counter() - t0 < 2.0
    assert "HF_HUB_OFFLINE" in err.value.reason and FIX_HINT in str(err.value)
    assert err.value.model == "corpus-search-tests/no-such-cross-encoder"


def test_uncached_hub_name_without_network_fails_fast_instead_of_retrying(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # A real hub endpoint that refuses connections: a port just bound and closed again on loopback.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_cross_encoder("corpus-search-tests/no-such-cross-encoder")
    assert time.perf_counter() - t0 < 2.0
    assert "unreachable" in err.value.reason and FIX_HINT in str(err.value)


def test_bi_encoder_directory_is_rejected_because_its_head_would_be_random():
    with pytest.raises(ModelUnavailableError) as err:
        load_cross_encoder(str(minilm_dir()))
    assert "classification head" in err.value.reason


def test_a_pytorch_bin_checkpoint_without_a_head_is_rejected_by_its_own_keys(tmp_path):
    from safetensors.torch import load_file

    path = build_cross_encoder(tmp_path / "bin-no-head", 1, body="tiny-bert")
    tensors = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    torch.save({k: v for k, v in tensors.items() if not k.startswith("classifier.")}, path / "pytorch_model.bin")
    assert checkpoint_keys(str(path)) == {k for k in tensors if not k.startswith("classifier.")}
    with pytest.raises(ModelUnavailableError) as err:
        load_cross_encoder(str(path))
    assert "classification head" in err.value.reason and "classifier.weight" in err.value.reason


def test_trust_remote_code_is_off_unless_asked(model_dirs, monkeypatch):
    seen = {}
    real = models._construct_cross_encoder

    def spy(name, **kwargs):
        seen.update(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(models, "_construct_cross_encoder", spy)
    ce = load_cross_encoder(str(model_dirs["tiny-bert", 1]))
    assert seen["trust_remote_code"] is False
    assert getattr(ce, "trust_remote_code", False) is False


def test_max_length_is_capped_by_the_models_position_embeddings(tmp_path):
    path = build_cross_encoder(tmp_path / "short", 1, body="tiny-bert", max_position_embeddings=64)
    ce = load_cross_encoder(str(path), max_length=512)
    assert ce.max_seq_length == 64
    scores = Reranker(ce).score(QUERY, ["word " * 1000, "short passage"])  # would overflow positions if not capped
    assert scores.shape == (2,)


def test_models_with_more_than_two_labels_are_rejected(tmp_path):
    path = build_cross_encoder(tmp_path / "three", 3, body="tiny-bert")
    with pytest.raises(ModelUnavailableError, match="3 output labels"):
        load_cross_encoder(str(path))


def test_a_checkpoint_without_the_heads_dense_layer_is_scored_with_its_bert_style_head(tmp_path):
    # Capreolus/electra-base-msmarco has this shape: a trained out_proj on [CLS], no dense layer before it.
    path = build_cross_encoder(tmp_path / "bert-style-head", 2, body="tiny-electra", head_without_dense=True)
    ce = load_cross_encoder(str(path))
    hf = ce.transformers_model
    out_proj = hf.classifier.out_proj
    enc = ce.tokenizer([QUERY] * 2, PASSAGES[:2], return_tensors="pt", padding=True)
    with torch.inference_mode():
        cls = hf.electra(**enc).last_hidden_state[:, 0]
        expected = out_proj(cls).numpy()
    got = Reranker(ce, precision="fp32").logits(QUERY, PASSAGES[:2])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_cascade_scores_in_plain_fp32_when_most_candidates_are_wanted(loaded):
    ce = loaded("minilm", 1)
    fp32 = Reranker(ce, precision="fp32").score(QUERY, PASSAGES)
    got = Reranker(ce, precision="bf16+fp32").score(QUERY, PASSAGES, top_k=len(PASSAGES))
    np.testing.assert_allclose(got, fp32, atol=1e-5)


def test_auto_precision_is_fp16_on_cuda_cascade_on_native_bf16_cpus_else_fp32(monkeypatch):
    assert resolve_precision("auto", "cuda:0") == "fp16"
    assert resolve_precision("auto", "mps") == "fp32"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16+fp32"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("int4", "cpu")  # type: ignore[arg-type]


def test_the_cascade_gives_the_top_passages_exact_fp32_scores_and_order(loaded):
    ce = loaded("minilm", 1)
    passages = [f"{p} (note {i})" for i in range(5) for p in PASSAGES]  # only part is re-scored in fp32
    fp32 = Reranker(ce, precision="fp32").score(QUERY, passages)
    cascade = Reranker(ce, precision="bf16+fp32")
    got = cascade.score(QUERY, passages, top_k=3)
    top = rank_order(got)[:3]
    assert top.tolist() == rank_order(fp32)[:3].tolist()
    np.testing.assert_allclose(got[top], fp32[top], atol=1e-5)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU has no native bf16 (AVX512-BF16/AMX)")
@pytest.mark.parametrize("labels", [1, 2])
def test_bf16_scores_agree_with_fp32_when_the_cpu_supports_bf16(loaded, labels):
    ce = loaded("minilm", labels)
    fp32 = Reranker(ce, precision="fp32").score(QUERY, PASSAGES)
    bf16 = Reranker(ce, precision="bf16")
    assert bf16.precision == "bf16"
    got = bf16.score(QUERY, PASSAGES)
    # random-head MiniLM: small logits, so bf16 stays close; a trained model drifts more (see CPU_AUTO_BF16)
    assert np.max(np.abs(got - fp32)) <= 0.01
    assert got.dtype == np.float32


def test_low_precision_does_not_modify_the_callers_model(loaded):
    ce = loaded("tiny-bert", 1)
    Reranker(ce, precision="bf16").score(QUERY, PASSAGES)
    Reranker(ce, precision="bf16+fp32").score(QUERY, PASSAGES)
    assert {p.dtype for p in ce.parameters()} == {torch.float32}


def test_a_model_asked_for_by_two_threads_at_once_is_loaded_once():
    import threading
    import time

    from query.models import once_per_process

    loads = []

    @once_per_process
    def load(name: str) -> object:
        loads.append(name)
        time.sleep(0.2)  # a load takes long enough for the other thread to ask meanwhile
        return object()

    got: list = []
    threads = [threading.Thread(target=lambda: got.append(load("m"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["m"] and got[0] is got[1] and load.cache_info().misses == 1


def test_a_cascade_that_rescores_most_candidates_turns_itself_off_and_scores_in_fp32(loaded):
    """A trained self-supervised re-ranker had every candidate re-scored in fp32 after its bf16 pass: the
    cascade ran at 0.64x of fp32 alone. After a few such queries, it scores in fp32 alone."""
    from query.rerank import CASCADE_MAX_RESCORED, CASCADE_PROBE_QUERIES

    ce = loaded("minilm", 1)
    passages = [f"{p} (note {i})" for i in range(5) for p in PASSAGES]
    fp32 = Reranker(ce, precision="fp32").score(QUERY, passages)
    cascade = Reranker(ce, precision="bf16+fp32")
    cascade.cascade_record = [0, 0, 0]
    for i in range(CASCADE_PROBE_QUERIES):
        got = cascade.score(f"{QUERY} {i}", passages, top_k=len(passages) // 2 - 1)
    queries, coarse, rescored = cascade.cascade_record
    assert queries == CASCADE_PROBE_QUERIES and coarse == CASCADE_PROBE_QUERIES * len(passages)
    if rescored > CASCADE_MAX_RESCORED * coarse:
        assert cascade.precision == "fp32" and cascade._coarse_model is None
        np.testing.assert_allclose(cascade.score(QUERY, passages, top_k=3), fp32, atol=1e-5)
    else:  # this tiny model's bf16 error is small enough: the cascade pays and stays
        assert cascade.precision == "bf16+fp32" and got.shape == fp32.shape
    # A cascade that re-scores few stays on.
    kept = Reranker(ce, precision="bf16+fp32")
    kept.cascade_record = [CASCADE_PROBE_QUERIES, 100, 10]
    kept._judge_cascade()
    assert kept.precision == "bf16+fp32"
    kept.cascade_record = [CASCADE_PROBE_QUERIES, 100, 90]
    kept._judge_cascade()
    assert kept.precision == "fp32"
