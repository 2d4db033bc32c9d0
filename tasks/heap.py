"""glibc's heap: give freed memory back to the operating system, and keep tensor-sized blocks in the heap
(glibc only; elsewhere both are no-ops)."""

from __future__ import annotations

import ctypes
import functools
import os
import sys


@functools.cache
def _libc_function(name: str):
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc (musl, for one): nothing to call
        return None


#: ``mallopt`` parameter number of glibc's mmap threshold (malloc.h).
_M_MMAP_THRESHOLD = -3
#: glibc's own ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD_BYTES = 32 << 20


@functools.cache
def keep_large_blocks() -> bool:
    """Serve blocks up to 32 MiB from the heap, as glibc's dynamic mmap threshold would; once per process.

    Setting ``MALLOC_TRIM_THRESHOLD_`` switches that dynamic threshold off, and Dask's nanny sets it
    (64 KiB) for every worker: every block over 128 KiB -- each activation tensor of an encode -- then is a
    fresh mmap, faulted in page by page and unmapped when freed. Measured (``benchmarks/malloc_encode.py``):
    MiniLM on one bf16 thread encoded 26.6 texts/s so, 39.0 without the variable, 38.6 with it and this
    call; a 1-8 MiB threshold does not help (``benchmarks/RESULTS.md``, "Dask (2 workers)").
    A user's own ``MALLOC_MMAP_THRESHOLD_`` is left alone; without either variable glibc's dynamic
    threshold already does this. Returns whether it changed it.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    fn = _libc_function("mallopt")
    return bool(fn is not None and fn(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim() -> None:
    """Return freed heap pages to the OS now.

    glibc keeps memory that was freed at the top of its heaps until a heuristic threshold says otherwise,
    and an index run frees a batch's worth of paragraphs, vectors and LanceDB buffers every few seconds:
    measured on a 40,000-paragraph dump, the flow process's RSS rose 876 -> 948 MB over 78 batches without
    a trim after each batch, and stayed at 840-864 MB with one (Python's own objects grew 4.5 MB).
    Dask's nanny already sets ``MALLOC_TRIM_THRESHOLD_`` for its workers.
    """
    fn = _libc_function("malloc_trim")
    if fn is not None:
        fn(0)
