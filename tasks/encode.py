"""Paragraphs → float32 vectors, in bounded chunks so memory does not grow with the batch.

Progress: ``encode_in_chunks`` tells an :class:`EncodeProgress` how many texts it is about to encode
and then how many each chunk encoded. The reporter is passed explicitly, or set for a whole run with
:func:`reporting_to` / :func:`start_reporting`, as the index flow does: its encode step is a Prefect task whose parameters
Prefect records, so a progress bar is no task parameter (and the task shells stay free of UI).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from query.models import BiEncoder


class EncodeProgress(Protocol):
    """What ``encode_in_chunks`` reports to: texts planned for encoding, then texts encoded, chunk by chunk."""

    def planned(self, n: int) -> None: ...

    def encoded(self, n: int) -> None: ...


#: Texts per ``encode`` call (at least 4 encoder batches per call): progress is reported after each.
MIN_PROGRESS_STEP = 256


def encode_step(batch_size: int, chunk_size: int) -> int:
    """Texts per ``encode`` call of :func:`encode_in_chunks`. The same whether anyone watches or not, so that
    the encoder's length-sorted batches -- and so the vectors, bit for bit -- do not depend on who runs it:
    a Dask worker's slice starts on a step boundary and makes the same batches as one process does."""
    return min(chunk_size, max(MIN_PROGRESS_STEP, 4 * batch_size))


def slice_bounds(n: int, part: int, parts: int, step: int) -> tuple[int, int]:
    """``[lo, hi)`` of the ``part``-th of ``parts`` near-equal slices of ``n`` texts, cut on ``step``
    boundaries (so a batch of under two steps goes to one slice whole: identical vectors before balance)."""
    def cut(k: int) -> int:
        return n if k >= parts else min(n, round(n * k / parts / step) * step)

    return cut(part), cut(part + 1)


#: The reporter of the current run (see :func:`reporting_to`); None: nobody is watching.
_reporter: contextvars.ContextVar[EncodeProgress | None] = contextvars.ContextVar("encode_progress", default=None)


def start_reporting(progress: EncodeProgress | None) -> contextvars.Token:
    """From now on (in this context), ``encode_in_chunks`` calls without a reporter report to ``progress``.

    Returns the token that :func:`stop_reporting` takes to restore the previous reporter.
    """
    return _reporter.set(progress)


def stop_reporting(token: contextvars.Token) -> None:
    """Undo :func:`start_reporting`."""
    _reporter.reset(token)


@contextlib.contextmanager
def reporting_to(progress: EncodeProgress | None) -> Iterator[None]:
    """Within this block, every ``encode_in_chunks`` call without its own reporter reports to ``progress``."""
    token = start_reporting(progress)
    try:
        yield
    finally:
        stop_reporting(token)


def encode_in_chunks(
    encoder: BiEncoder, texts: Sequence[str], chunk_size: int, progress: EncodeProgress | None = None
) -> tuple[np.ndarray, float]:
    """Encode ``texts`` ``chunk_size`` at a time; returns L2-normalised float32 vectors and encoding seconds.

    The output array is allocated once, so peak memory is the output plus one chunk's activations.
    ``progress`` (default: the reporter set by :func:`reporting_to`) hears ``planned(len(texts))`` first,
    then ``encoded(n)`` after each step (a chunk, or :data:`MIN_PROGRESS_STEP` texts / 4 batches when that is
    smaller): a long encode shows its rate and ETA while it runs.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    progress = progress if progress is not None else _reporter.get()
    # A chunk of 2048 is minutes of CPU encoding: smaller steps report progress (measured: no slower per text).
    step = encode_step(encoder.batch_size, chunk_size)
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    if progress is not None and texts:
        progress.planned(len(texts))
    started = time.perf_counter()
    for i in range(0, len(texts), step):
        out[i : i + step] = encoder.encode(texts[i : i + step])
        if progress is not None:
            progress.encoded(min(step, len(texts) - i))
    return out, time.perf_counter() - started
