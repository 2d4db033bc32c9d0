"""ONNX Runtime and OpenVINO engines for the cross-encoder: export once, cache beside the model, int8 by measurement.

Why not ``CrossEncoder(..., backend="onnx")``: sentence-transformers reaches ONNX Runtime and OpenVINO
through optimum (``optimum-onnx``, ``optimum-intel``), and every release of those on PyPI pins
``transformers<4.58`` or imports names transformers 5 removed (checked 2026-11-28: optimum-onnx 0.1.0
fails with ``cannot import name 'get_parameter_dtype'``; ``sentence-transformers[openvino]`` would pull
a CUDA torch 2.14 and transformers 4). So the export is torch's own ONNX exporter, the int8 model is ONNX
Runtime's own dynamic quantiser (per-channel int8 weights, int8 activations quantised per batch), and
inference is a plain ``onnxruntime.InferenceSession`` -- or OpenVINO's runtime reading the same file when
the ``openvino`` package is installed. Nothing here is a model of its own: same weights, same tokenizer,
same batches as the torch path (``query.rerank.Reranker`` pads and orders them).

Cache: ``<model dir>/onnx/`` for a local model directory that can be written (a trained re-ranker under
``<db>/_rerankers/...``), else ``$XDG_CACHE_HOME/corpus-search/onnx/<name>-<fingerprint>/``. A model whose
weights change (size or mtime) is exported again. Files are written to a temporary name and renamed, so a
concurrent process never reads half a file.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from query.cross_encoder import WEIGHT_FILES
from query.errors import ModelUnavailableError

log = logging.getLogger(__name__)

#: ONNX files, beside the model: fp32 export and its int8 dynamic quantisation.
FP32_FILE, INT8_FILE, META_FILE = "model.onnx", "model_int8.onnx", "export.json"
_OPSET = 17

Engine = Callable[[dict[str, np.ndarray]], np.ndarray]


def available() -> bool:
    """True when ONNX Runtime and the ``onnx`` package (exporter and quantiser) import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _fingerprint(location: Path) -> str:
    """Identifies the weights on disk: the first weights file's size and mtime (a retrained model differs)."""
    for name in WEIGHT_FILES:
        f = location / name
        if f.is_file():
            st = f.stat()
            return f"{st.st_size:x}-{st.st_mtime_ns:x}"
    return "unknown"


def cache_dir(hf_model: Any) -> Path:
    """Where the ONNX files of ``hf_model`` live (see the module docstring)."""
    location = Path(str(getattr(hf_model, "name_or_path", "") or ""))
    if location.is_dir() and os.access(location, os.W_OK):
        return location / "onnx"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "corpus-search" / "onnx"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", str(location)).strip("-") or "model"
    return base / f"{slug[-80:]}-{_fingerprint(location) if location.is_dir() else 'hub'}"


def _read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_meta(folder: Path, meta: dict) -> None:
    """Record what was exported (and what was measured) beside the ONNX files, atomically."""
    _atomic_write(folder / META_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1), encoding="utf-8"))


def _atomic_write(target: Path, write: Callable[[str], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def input_names(tokenizer: Any) -> list[str]:
    """The inputs the model is exported with and fed: the tokenizer's own (BERT: ids, mask, token types)."""
    names = list(getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def ensure_exported(hf_model: Any, tokenizer: Any, *, int8: bool) -> tuple[Path, dict]:
    """The ONNX file of ``hf_model`` (int8 or fp32), exported and quantised on first use; and its metadata."""
    import torch

    folder = cache_dir(hf_model)
    location = Path(str(getattr(hf_model, "name_or_path", "") or ""))
    fingerprint = _fingerprint(location) if location.is_dir() else "hub"
    meta = _read_meta(folder)
    names = input_names(tokenizer)
    if meta.get("fingerprint") != fingerprint or meta.get("inputs") != names or not (folder / FP32_FILE).is_file():
        log.info("exporting the cross-encoder to ONNX in %s (once)", folder)
        sample = tokenizer(["a question"], ["a passage"], return_tensors="pt")
        args = tuple(sample[n] for n in names)

        class Logits(torch.nn.Module):  # positional inputs in a fixed order, the logits out
            def __init__(self, inner: Any):
                super().__init__()
                self.inner = inner

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                return self.inner(**dict(zip(names, tensors, strict=True))).logits

        axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"logits": {0: "batch"}}
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's tracer warnings say nothing to a user
            # A copy: tracing changes state of the traced model (its later torch scores moved by up to 0.12).
            _atomic_write(folder / FP32_FILE, lambda tmp: torch.onnx.export(
                Logits(copy.deepcopy(hf_model).eval()), args, tmp, input_names=names, output_names=["logits"],
                dynamic_axes=axes, opset_version=_OPSET, dynamo=False))
        (folder / INT8_FILE).unlink(missing_ok=True)
        meta = {"fingerprint": fingerprint, "inputs": names, "torch": torch.__version__}
        write_meta(folder, meta)
    if int8 and not (folder / INT8_FILE).is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per-channel int8 weights kept the top-10 of 100 SciFact pairs (9/10 to 10/10) where per-tensor
        # and reduce_range lost more; DefaultTensorType lets the quantiser pass ops shape inference cannot type.
        # The quantiser logs "consider pre-processing" advice on the root logger, on every call: quiet it for
        # the call only (the root level is the process's, e.g. the query service's own log).
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            _atomic_write(folder / INT8_FILE, lambda tmp: quantize_dynamic(
                folder / FP32_FILE, tmp, weight_type=QuantType.QInt8, per_channel=True,
                extra_options={"DefaultTensorType": 1}))
        finally:
            root.setLevel(level)
    return folder / (INT8_FILE if int8 else FP32_FILE), meta


def ort_engine(path: Path, threads: int | None = None) -> Engine:
    """An ONNX Runtime CPU session over ``path``: padded int64 inputs in, float32 logits out."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {n: np.asarray(batch[n], dtype=np.int64) for n in wanted})[0].astype(np.float32)

    return run


def openvino_engine(path: Path, threads: int | None = None) -> Engine:
    """OpenVINO's CPU runtime over the same ONNX file (``pip install openvino``; not a default dependency)."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise ModelUnavailableError(
            "rerank_backend 'openvino' needs the openvino package: pip install openvino "
            "(or use CORPUS_SEARCH_RERANK_BACKEND=onnx or auto)") from exc
    # LATENCY, measured: THROUGHPUT took 1.8x longer per 100 pairs here. f32: on a CPU with native bf16
    # OpenVINO computes in bf16 unless told otherwise, and this engine is asked for fp32 (or int8) scores:
    # seen on an avx512_bf16 EPYC, scores off fp32 by up to 0.016.
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {p.get_any_name(): np.asarray(batch[p.get_any_name()], dtype=np.int64) for p in compiled.inputs}
        return np.asarray(compiled(inputs)[0], dtype=np.float32)

    return run
