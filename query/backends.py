"""Which engine runs the cross-encoder on a CPU, chosen by measurement; and the re-ranker's score cache.

``rerank_backend``:

* ``torch``: the model as loaded (fp32, or the precision rules of :mod:`query.devices`).
* ``onnx``: ONNX Runtime over an export of the same weights (:mod:`query.onnx_backend`), fp32 or int8.
* ``openvino``: OpenVINO's runtime over the same ONNX files (``pip install openvino``), only when asked.
* ``auto`` (the default): on a CPU, torch and ONNX Runtime (fp32, int8), as the precision setting allows,
  are timed once on probe pairs on this machine and the fastest is used; int8 is a candidate only when its scores agree
  with fp32 on those probes (at most :data:`INT8_MAX_SCORE_DIFF` apart, the bi-encoder's bf16 check in
  spirit). On cuda and mps it is torch. The measurements are kept beside the ONNX files, per CPU, so a
  later process only loads the winner. ``Reranker.backend_report`` says what was measured and chosen.

``rerank_precision`` ``int8`` asks for the int8 model without the agreement check; ``fp32`` with
``onnx`` or ``auto`` keeps full precision (auto then compares torch and ONNX Runtime in fp32).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from query import onnx_backend
from query.errors import ModelUnavailableError, PrecisionError
from query.settings import RerankBackend

if TYPE_CHECKING:  # pragma: no cover
    from query.rerank import Reranker

Backend = RerankBackend

#: int8 is used only if no probe pair's 0..1 score moves by more than this (measured on the SciFact
#: re-ranker: per-channel int8 moved logits by <= 0.015, scores by <= 0.004).
INT8_MAX_SCORE_DIFF = 0.01

_TEXT = (
    "Glaciers form where the accumulation of snow and ice exceeds ablation over many years, often "
    "centuries. The snow compacts into firn and then into dense glacial ice, which begins to flow under "
    "its own weight. Sea ice, by contrast, forms when ocean water freezes at the surface. Insulin is a "
    "peptide hormone produced by beta cells of the pancreatic islets; it regulates the metabolism of "
    "carbohydrates, fats and protein by promoting the absorption of glucose from the blood into liver, "
    "fat and skeletal muscle cells. The Treaty of Westphalia ended the Thirty Years' War in 1648 and "
    "laid foundations of state sovereignty in Europe. "
)
_PROBE_QUERIES = ("how do glaciers form", "what does insulin do in the body", "when did the thirty years war end",
                  "sea ice formation")
# 16 pairs of 20 to 160 words: the spread of lengths real paragraphs have.
PROBE_PAIRS = [(q, " ".join(_TEXT.split()[i * 3 : i * 3 + 20 + 35 * j]))
               for j in range(4) for i, q in enumerate(_PROBE_QUERIES)]


def cpu_key() -> str:
    """What a timing is valid for: the CPU model, its architecture and torch's thread count."""
    import torch

    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{platform.machine()} {name} x{torch.get_num_threads()}"


def _candidates(backend: str, precision: str) -> list[tuple[str, str]]:
    """(engine, precision) pairs to consider for a CPU, in order of preference on a tie."""
    if backend == "torch":
        return [("torch", precision)]
    # auto compares torch with ONNX Runtime only: OpenVINO is an optional install, and on the 2-core AVX2
    # CPU measured here its fp32 was within noise of torch and its int8 (same dynamic-quantised file) slower.
    engines = ("onnx",) if backend == "auto" else (backend,)
    if precision in ("bf16", "fp16", "bf16+fp32"):
        if backend != "auto":
            raise PrecisionError(f"rerank_precision {precision!r} is a torch precision; the {backend} backend runs "
                                 "'fp32' or 'int8' (or 'auto': int8 where it agrees with fp32)")
        return [("torch", precision)]
    out = [("torch", "auto" if precision == "int8" else precision)] if backend == "auto" and precision != "int8" else []
    for e in engines:
        if precision in ("auto", "int8"):
            out.append((e, "int8"))
        if precision in ("auto", "fp32"):
            out.append((e, "fp32"))
    return out


def choose(reranker: Reranker, backend: str, precision: str) -> tuple[str, str, Any, dict]:
    """(backend, precision, engine or None, report) for ``reranker``; see the module docstring."""
    from query.devices import resolve_precision

    cpu_plain = reranker.device.type == "cpu" and reranker._compute_model is not None
    if not cpu_plain:
        if backend in ("onnx", "openvino") or precision == "int8":
            raise PrecisionError(f"rerank_backend {backend!r} / precision {precision!r} run a plain transformers "
                                 f"cross-encoder on the CPU; this one runs on {reranker.device.type}: use 'torch' or 'auto'")
        return "torch", precision, None, {}
    if not onnx_backend.available():
        if backend == "auto" and precision != "int8":
            return "torch", precision, None, {"chosen": "torch", "why": "onnxruntime/onnx not installed"}
        raise ModelUnavailableError("rerank_backend 'onnx'/'openvino' and precision 'int8' need ONNX Runtime: "
                                    "pip install onnxruntime onnx (or set CORPUS_SEARCH_RERANK_BACKEND=torch)")
    cands = _candidates(backend, precision)
    cands = [(e, resolve_precision(p, reranker.device) if e == "torch" else p) for e, p in cands]
    if len(cands) == 1 and cands[0][0] == "torch":
        return "torch", cands[0][1], None, {"chosen": "torch"}
    hf, tok = reranker._compute_model, reranker._tokenizer
    engines: dict[tuple[str, str], Any] = {}

    def engine(e: str, p: str) -> Any:
        """The engine of a candidate, made on first need: a process that finds the timings cached makes only
        the winner's (each ONNX Runtime session holds its own copy of the weights)."""
        if e == "torch":
            return None
        if (e, p) not in engines:
            make = onnx_backend.ort_engine if e == "onnx" else onnx_backend.openvino_engine
            engines[(e, p)] = make(onnx_backend.ensure_exported(hf, tok, int8=p == "int8")[0], _threads())
        return engines[(e, p)]

    meta: dict = {}
    for e, p in cands:  # exported (and quantised) up front: the metadata below belongs to these files
        if e != "torch":
            meta = onnx_backend.ensure_exported(hf, tok, int8=p == "int8")[1]
    folder = onnx_backend.cache_dir(hf)
    key = cpu_key()
    known = meta.setdefault("timings", {}).setdefault(key, {})
    agreement = meta.setdefault("int8_max_score_diff", {})
    reference = None
    measured = False  # anything new to keep beside the ONNX files
    report: dict = {"cpu": key, "candidates": {}}
    for e, p in cands:
        name = f"{e}:{p}"
        if p == "int8" and precision != "int8":  # auto: int8 only where it agrees with fp32
            if name not in agreement:
                if reference is None:
                    reference = _probe(reranker, None, "fp32")
                agreement[name] = float(np.max(np.abs(_probe(reranker, engine(e, p), p) - reference)))
                measured = True
            if agreement[name] > INT8_MAX_SCORE_DIFF:
                report["candidates"][name] = {"refused": f"max score diff {agreement[name]:.4f} > {INT8_MAX_SCORE_DIFF}"}
                continue
        if name not in known and len(cands) > 1:  # one candidate: nothing to compare
            known[name] = _time(reranker, engine(e, p), p)
            measured = True
        report["candidates"][name] = {"seconds": known.get(name),
                                      **({"max_score_diff": agreement[name]} if name in agreement else {})}
    timed = [(report["candidates"][f"{e}:{p}"]["seconds"] or 0.0, i, e, p) for i, (e, p) in enumerate(cands)
             if "seconds" in report["candidates"][f"{e}:{p}"]]
    # Never empty: int8 is refused only under precision "auto", where an fp32 candidate always stands too.
    _, _, e, p = min(timed)
    if measured:
        onnx_backend.write_meta(folder, meta)
    report["chosen"] = f"{e}:{p}"
    logging.getLogger(__name__).info("cross-encoder backend %s (%s)", report["chosen"], report)
    return e, p, engine(e, p), report


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _probe(reranker: Reranker, engine: Any, precision: str) -> np.ndarray:
    """0..1 scores of the probe pairs with ``engine`` (None: torch) at ``precision``."""
    from query.rerank import _relevance, logits_to_scores

    saved = reranker._engine, reranker.precision
    reranker._engine, reranker.precision = engine, precision
    try:
        scores = []
        for q in _PROBE_QUERIES:
            ps = [p for qq, p in PROBE_PAIRS if qq == q]
            scores.append(logits_to_scores(_relevance(reranker.logits(q, ps, precision=precision))[:, None]))
        return np.concatenate(scores)
    finally:
        reranker._engine, reranker.precision = saved


def _time(reranker: Reranker, engine: Any, precision: str) -> float:
    """Best of three timings of the probe pairs (after one warm-up): the least disturbed by other work."""
    runs = []
    for i in range(4):
        t = time.perf_counter()
        if precision == "bf16+fp32":  # the cascade: score() decides what to re-score
            saved = reranker.precision
            reranker.precision = precision
            try:
                for q in _PROBE_QUERIES:
                    reranker.score(q, [p for qq, p in PROBE_PAIRS if qq == q], top_k=1)
            finally:
                reranker.precision = saved
        else:
            _probe(reranker, engine, precision)
        if i:
            runs.append(time.perf_counter() - t)
    return min(runs)


class ScoreCache:
    """Relevance logits of (query, passage content hash) pairs for one re-ranker, least recently used out.

    One cache belongs to one ``Reranker``, that is one model at one backend and precision, so the key
    needs no model name. ``size`` 0 disables it. Thread-safe (the query service shares re-rankers).
    """

    def __init__(self, size: int):
        self.size = max(0, int(size))
        self._data: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def keys(self, query: str, passages: list[str]) -> list[tuple[str, bytes]]:
        """The cache keys of ``passages`` for ``query`` (a 16-byte BLAKE2 digest of each passage's text)."""
        if not self.size:
            return [("", b"")] * len(passages)
        return [(query, hashlib.blake2b(p.encode("utf-8", "surrogatepass"), digest_size=16).digest()) for p in passages]

    def lookup(self, keys: list[tuple[str, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        """(logits, found): cached logits (NaN where absent) and which were found."""
        out = np.full(len(keys), np.nan, dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        if self.size:
            with self._lock:
                for i, key in enumerate(keys):
                    value = self._data.get(key)
                    if value is not None:
                        self._data.move_to_end(key)
                        out[i], found[i] = value, True
                self.hits += int(found.sum())
                self.misses += len(keys) - int(found.sum())
        return out, found

    def store(self, keys: list[tuple[str, bytes]], logits: np.ndarray) -> None:
        """Remember ``logits`` for ``keys``; the least recently used entries go beyond ``size``."""
        if not self.size:
            return
        with self._lock:
            for key, value in zip(keys, np.asarray(logits, dtype=np.float32).tolist(), strict=True):
                self._data[key] = value
                self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
