"""Paragraphs → float32 vectors, in bounded chunks so memory does not grow with the batch."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from query.models import BiEncoder


def encode_in_chunks(encoder: BiEncoder, texts: Sequence[str], chunk_size: int) -> tuple[np.ndarray, float]:
    """Encode ``texts`` ``chunk_size`` at a time; returns L2-normalised float32 vectors and encoding seconds.

    The output array is allocated once, so peak memory is the output plus one chunk's activations.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    started = time.perf_counter()
    for i in range(0, len(texts), chunk_size):
        out[i : i + chunk_size] = encoder.encode(texts[i : i + chunk_size])
    return out, time.perf_counter() - started
