"""Device and precision choice: cuda > mps > cpu; fp16 on cuda, bf16 on CPUs with native bf16."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed through to torch."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU executes bf16 matrix maths natively (AVX-512 BF16 or AMX).

    Without it, bf16 autocast is emulated and slower than fp32, so ``auto`` must not pick it.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be conservative
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """Turn ``auto`` into a concrete precision for ``device``; refuse combinations that cannot work."""
    if precision == "auto":
        if device.startswith("cuda"):
            return "fp16"
        if device == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device == "cpu":
        raise ValueError("precision 'fp16' is not supported on the CPU: use 'bf16', 'fp32' or 'auto'")
    return precision


@contextlib.contextmanager
def autocast(device: str, precision: str) -> Iterator[None]:
    """Autocast for bf16/fp16 inference; a no-op for fp32. Weights stay fp32, so agreement is easy to check."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    device_type = device.split(":")[0]
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield
