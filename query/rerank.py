"""Cross-encoder re-ranking: fast, faithful scoring in ``[0, 1]`` and the bf16 -> fp32 cascade.

Loading lives in :mod:`query.models`, device and precision rules in :mod:`query.devices`.

Scores: ``sigmoid(logit)`` for one-logit models (cross-encoder/ms-marco-*), ``softmax(logits)[:, 1]``
for two-logit models (nboost/pt-*, amberoad/bert-multilingual-*, Capreolus/electra-base-msmarco).
Logits are computed with no activation and mapped here in float32, whatever the compute precision
and whatever activation the checkpoint's config names (some ms-marco configs name ``Identity``).

Speed (CPU): passages are tokenized once, sorted by their exact token length so that each batch pads
as little as possible, and run in token-capped batches (~2k tokens) under ``torch.inference_mode``;
the precision rules (``auto`` and the cascade) are at :func:`resolve_precision`. See
``benchmarks/query_latency.py`` for measured speed-up and agreement with ``CrossEncoder.predict``.

Ranking is the caller's job; :func:`rank_order` is the documented deterministic order: score
descending, ties broken by the original (retrieval) position ascending.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

# cpu_has_native_bf16, ModelUnavailableError, FIX_HINT and load_cross_encoder are re-exported for one
# release from their homes since issue #9 (query.devices, query.errors, query.models): import them there.
from query import backends, devices
from query.backends import Backend, ScoreCache
from query.bi_encoder import count_tokens
from query.cross_encoder import sequence_classifier
from query.devices import autocast, cpu_has_native_bf16  # noqa: F401
from query.errors import ModelUnavailableError, PrecisionError  # noqa: F401 - ModelUnavailableError re-exported
from query.fusion import rank_order  # noqa: F401 - re-exported: the documented ranking order
from query.models import FIX_HINT, load_cross_encoder  # noqa: F401
from query.settings import RerankPrecision

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import CrossEncoder

log = logging.getLogger(__name__)

Precision = RerankPrecision  # the one definition lives in query.settings

#: The cascade assumes bf16 moves a relevance logit by at most this much (measured: <= 0.37 on the
#: MiniLM-L6 stand-in); it widens the margin by itself when the re-scored passages show a larger error.
CASCADE_LOGIT_ERROR = 0.5
#: The cascade pays only while it re-scores few candidates: its bf16 pass costs about 0.6 of an fp32 pass
#: on a CPU with native bf16 (1.35 s against 2.2 s for 30 SciFact abstracts, AMD EPYC with AVX-512 BF16), so
#: re-scoring more than about 0.4 of them costs more than fp32 alone. A self-supervised MiniLM-L6 re-ranker
#: trained here had every candidate re-scored (its top scores lie within the margin), and the cascade ran at
#: 0.64x of fp32 (benchmarks/RESULTS.md, stop 42). After ``CASCADE_PROBE_QUERIES`` queries, a re-ranker
#: whose cascade re-scored more than this share of their candidates scores in fp32 alone from then on.
CASCADE_MAX_RESCORED = 0.4
CASCADE_PROBE_QUERIES = 3

# Tokens per batch that keep a CPU batch in cache-friendly territory; see Reranker._batches.
_CPU_TOKENS_PER_BATCH = 2048


def resolve_precision(precision: Precision, device: str | Any) -> str:
    """The re-ranker's precision: :func:`query.devices.resolve_precision` with the cascade allowed.

    ``auto`` is fp16 on cuda, the ``bf16+fp32`` cascade on CPUs with native bf16, else fp32. Plain
    bf16 is ~2.9x faster than fp32 here but moves scores by up to ~0.06 and changes the top-10 order
    in about half the queries (benchmarks/query_latency.py), so ``auto`` never picks it alone:
    the cascade scores every passage in bf16, then re-scores in fp32 every passage whose bf16 logit is
    close enough to the k-th best to be in the top k, so the returned top-k carry fp32 scores in fp32 order.
    """
    return devices.resolve_precision(precision, device, cascade=True)



def _relevance(logits: np.ndarray) -> np.ndarray:
    """One relevance logit per pair: the logit itself, or z1 - z0 for two-logit models (same order as softmax[:, 1])."""
    z = np.asarray(logits, dtype=np.float32)
    return z[:, 0] if z.shape[1] == 1 else z[:, 1] - z[:, 0]


def logits_to_scores(logits: np.ndarray) -> np.ndarray:
    """Map ``[n, 1]`` logits with a sigmoid and ``[n, 2]`` logits with softmax class 1, in float32."""
    z = np.asarray(logits, dtype=np.float32)
    if z.ndim == 1:
        z = z[:, None]
    if z.shape[1] == 1:
        x = z[:, 0]
        # numerically stable sigmoid
        out = np.empty_like(x)
        pos = x >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
        ex = np.exp(x[~pos])
        out[~pos] = ex / (1.0 + ex)
        return out.astype(np.float32)
    if z.shape[1] == 2:
        # softmax(z)[:, 1] == sigmoid(z1 - z0)
        return logits_to_scores((z[:, 1] - z[:, 0])[:, None])
    raise ValueError(f"expected 1 or 2 logits per pair, got {z.shape[1]}")


class Reranker:
    """Scores (query, passage) pairs with a cross-encoder; scores are float32 in ``[0, 1]``.

    Args:
        model: a ``CrossEncoder`` (see :func:`query.models.load_cross_encoder`).
        batch_size: the most pairs per forward pass. On CPU batches are additionally capped at about
            2k tokens (long passages -> smaller batches), which is faster there than large batches.
        precision: ``auto`` (fp16 on cuda, the ``bf16+fp32`` cascade on CPUs with native bf16, else
            fp32), or explicit; see :func:`resolve_precision`. fp16 on the CPU is refused (PrecisionError).

    bf16/fp16 run the forward pass under ``torch.autocast`` (matmuls in the low precision, norms,
    softmax and the residual stream in float32; the caller's model is not modified); the logits are
    cast to float32 and mapped to scores in float32.
    """

    def __init__(self, model: CrossEncoder, *, batch_size: int = 32, precision: Precision = "auto",
                 backend: Backend = "torch", cache_size: int = 0):
        import torch

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model
        # One process-wide model serves every thread: its fast tokenizer (truncation, padding) and the score
        # cache are not thread-safe, so scorings take turns (a model's forward passes use every core anyway).
        self._lock = threading.RLock()
        self.batch_size = int(batch_size)
        self.device = torch.device(model.device)
        self.num_labels: int = int(model.num_labels)
        if self.num_labels not in (1, 2):
            raise ValueError(f"only 1- and 2-logit cross-encoders are supported, this one has {self.num_labels}")
        self.max_length: int = int(model.max_seq_length or 512)
        self._compute_model = sequence_classifier(model)  # None: the generic CrossEncoder.predict path
        self._tokenizer = model.tokenizer if self._compute_model is not None else None
        #: where the forward passes run: "torch", "onnx" or "openvino" (see :mod:`query.backends`)
        self.backend: str = "torch"
        self._engine = None  # padded numpy batch -> logits, for the onnx/openvino backends
        self.backend_report: dict = {}
        self.cache = ScoreCache(0)  # off while the backend is measured
        self.precision: str = "int8" if precision == "int8" else resolve_precision(precision, self.device)
        self._set_coarse_model()
        if backend != "torch" or precision == "int8":
            self.backend, self.precision, self._engine, self.backend_report = backends.choose(self, backend, precision)
            self._set_coarse_model()
        self.cache = ScoreCache(cache_size)
        #: The cascade's record so far: queries, candidates scored in bf16, and of them re-scored in fp32.
        self.cascade_record = [0, 0, 0]

    def _set_coarse_model(self) -> None:
        # The cascade's coarse pass only has to find the best passages, so it runs a bf16 copy of the
        # weights (no per-op autocast casts); the fp32 model re-scores the best ones exactly.
        import torch

        self._coarse_model = None
        if self._compute_model is not None and self.precision == "bf16+fp32":
            self._coarse_model = copy.deepcopy(self._compute_model).to(torch.bfloat16).eval()

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, special tokens left out (thread-safe: under the scorings' lock)."""
        with self._lock:
            return count_tokens(self.model.tokenizer, texts)

    # -- scoring ------------------------------------------------------------------------------------

    def score(self, query: str, passages: Sequence[str], *, top_k: int | None = None) -> np.ndarray:
        """Relevance of each passage to ``query`` in ``[0, 1]`` (float32), in the passages' order.

        With the ``bf16+fp32`` cascade, every passage that could be in the top ``top_k`` (default 10) is
        re-scored in fp32; the others keep their bf16 score (they rank below the re-scored ones).
        Pairs scored before (same query, same passage text, this model) come from the score cache.
        """
        with self._lock:
            return self._score(query, list(passages), top_k)

    def _score(self, query: str, passages: list[str], top_k: int | None) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        k = top_k or 10
        keys = self.cache.keys(query, passages)
        rel, exact = self.cache.lookup(keys)
        todo = np.flatnonzero(~exact)
        # When most candidates are wanted, the fp32 re-score would cover nearly all of them anyway:
        # a single fp32 pass is then cheaper than bf16 for all plus fp32 for most.
        if self.precision != "bf16+fp32" or 2 * k >= todo.size:
            if todo.size:
                precision = "fp32" if self.precision == "bf16+fp32" else None
                rel[todo] = _relevance(self.logits(query, [passages[i] for i in todo], precision=precision))
                self.cache.store([keys[i] for i in todo], rel[todo])
        else:
            rel = self._cascade_logits(query, passages, k, rel, exact, keys)
            self._judge_cascade()
        return logits_to_scores(rel[:, None])

    def _judge_cascade(self) -> None:
        """Turn the cascade off for this re-ranker once it has shown that it re-scores most candidates
        (:data:`CASCADE_MAX_RESCORED`): fp32 alone is then faster, and gives the same scores."""
        queries, coarse, rescored = self.cascade_record
        if queries >= CASCADE_PROBE_QUERIES and coarse and rescored > CASCADE_MAX_RESCORED * coarse:
            log.info("the bf16+fp32 cascade re-scored %d of %d candidates in fp32 over %d queries: this re-ranker "
                     "scores in fp32 alone from now on (faster, the same scores)", rescored, coarse, queries)
            self.precision = "fp32"
            self._coarse_model = None

    def _cascade_logits(self, query: str, passages: list[str], k: int, est: np.ndarray, exact: np.ndarray,
                        keys: list) -> np.ndarray:
        """Relevance logits: bf16 for all, exact fp32 for every passage that could be in the top ``k``.

        A passage outside the fp32 top-k can only enter it if its bf16 logit is within twice the bf16
        error of the k-th best; all those are re-scored in fp32. If the re-scored passages show a larger
        error than assumed, the margin grows and more are re-scored, so the top-k order is fp32's.
        ``est``/``exact``: logits already known exactly (from the cache); only fp32 logits are cached.
        """
        est, exact = est.copy(), exact.copy()
        todo = np.flatnonzero(~exact)
        est[todo] = _relevance(self.logits(query, [passages[i] for i in todo], precision="bf16"))
        coarse = est.copy()
        measured = np.zeros(len(passages), dtype=bool)  # re-scored here: their bf16 error is known
        k = min(k, len(passages))
        eps = CASCADE_LOGIT_ERROR
        while True:
            kth = np.partition(est, len(est) - k)[len(est) - k]
            new = np.flatnonzero((est >= kth - 2 * eps) & ~exact)
            if new.size == 0:
                record = self.cascade_record
                record[0], record[1], record[2] = record[0] + 1, record[1] + todo.size, record[2] + int(measured.sum())
                return est
            est[new] = _relevance(self.logits(query, [passages[i] for i in new], precision="fp32"))
            self.cache.store([keys[i] for i in new], est[new])
            exact[new] = measured[new] = True
            eps = max(eps, float(np.max(np.abs(est[measured] - coarse[measured]))))

    def logits(self, query: str, passages: Sequence[str], *, precision: str | None = None) -> np.ndarray:
        """Raw float32 logits, shape ``[len(passages), num_labels]``, in the passages' order."""
        with self._lock:
            return self._logits(query, list(passages), precision)

    def _logits(self, query: str, passages: list[str], precision: str | None) -> np.ndarray:
        import torch

        if precision is None:
            precision = "bf16" if self.precision == "bf16+fp32" else self.precision
        if not passages:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        if self._compute_model is None:
            return self._logits_via_predict(query, passages, precision)
        tok = self._tokenizer
        enc = tok(
            [query] * len(passages),
            passages,
            truncation="longest_first",
            max_length=self.max_length,
            padding=False,
        )
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
        lengths = np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64, count=len(passages))
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(passages), self.num_labels), dtype=np.float32)
        if self._engine is not None and precision == self.precision:
            for idx in self._batches(order, lengths):
                batch = tok.pad({k: [enc[k][i] for i in idx] for k in keys}, padding=True, return_tensors="np")
                out[idx] = self._engine(batch).reshape(len(idx), -1)
            return out
        if precision == "int8":
            raise PrecisionError("int8 runs on the onnx or openvino backend only (rerank_backend)")
        model = self._compute_model
        if precision == "bf16" and self._coarse_model is not None:
            model, precision = self._coarse_model, "fp32"  # already bf16 weights: no autocast needed
        with torch.inference_mode(), autocast(self.device, precision):
            for idx in self._batches(order, lengths):
                batch = tok.pad({k: [enc[k][i] for i in idx] for k in keys}, padding=True, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = model(**batch).logits
                out[idx] = logits.float().reshape(len(idx), -1).cpu().numpy()
        return out

    def _batches(self, order: np.ndarray, lengths: np.ndarray) -> Iterator[np.ndarray]:
        """Consecutive slices of the length-sorted order, each at most batch_size pairs (and ~2k tokens on CPU)."""
        start = 0
        n = len(order)
        while start < n:
            size = self.batch_size
            if self.device.type == "cpu":
                longest = int(lengths[order[start]])
                size = max(1, min(size, _CPU_TOKENS_PER_BATCH // max(1, longest)))
            yield order[start : start + size]
            start += size

    def _logits_via_predict(self, query: str, passages: list[str], precision: str) -> np.ndarray:
        """Generic path (ONNX/OpenVINO backends, multi-module models): CrossEncoder.predict without activation."""
        import torch

        ctx = autocast(self.device, precision) if getattr(self.model, "backend", "torch") == "torch" else contextlib.nullcontext()
        with ctx:
            raw = self.model.predict(
                [(query, p) for p in passages],
                batch_size=self.batch_size,
                activation_fn=torch.nn.Identity(),
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        return raw.float().reshape(len(passages), -1).cpu().numpy()
