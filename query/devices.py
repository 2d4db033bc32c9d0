"""Device and precision rules, in one place: cuda > mps > cpu; fp16 on cuda, bf16 on CPUs with native bf16.

Both encoders use :func:`resolve_precision` and :func:`autocast`. torch is imported only inside the
functions that need it, so a lexical search never loads it.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from collections.abc import Iterator
from typing import Any, get_args

from query.errors import PrecisionError
from query.settings import Precision, RerankPrecision

#: The bf16 -> exact fp32 re-score cascade: a re-ranker precision, meaningless for the bi-encoder.
CASCADE = "bf16+fp32"


def device_type(device: Any) -> str:
    """``cuda`` for ``"cuda:1"`` or ``torch.device("cuda", 1)``: the kind of device, without its index."""
    return str(getattr(device, "type", device)).split(":")[0]


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed through to torch."""
    if device != "auto":
        return device
    import torch  # lazy: a lexical search never needs torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (x86 AVX512-BF16 / AMX-BF16, Arm BF16), so bf16 is fast."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if not flags and platform.system() == "Darwin":  # Apple silicon M2+ has BF16; M1 does not
        with contextlib.suppress(Exception):
            import subprocess

            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=2
            ).stdout.strip()
            return out == "1"
    if not ({"avx512_bf16", "amx_bf16", "bf16"} & flags):
        return False
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - older torch
        return True


def resolve_precision(precision: str, device: Any, *, cascade: bool = False) -> str:
    """Turn ``auto`` into a concrete precision for ``device``; refuse combinations that cannot work.

    ``auto`` is fp16 on cuda; on CPUs with native bf16 it is bf16, or the ``bf16+fp32`` cascade when
    ``cascade`` is true (the re-ranker: plain bf16 moved its top-10 order in about half the queries,
    see query/rerank.py); fp32 elsewhere. ``cascade`` also decides whether ``bf16+fp32`` may be asked for.

    Raises:
        PrecisionError: an unknown precision, the cascade without ``cascade``, or fp16 on the CPU
            (CPU fp16 kernels are slow and imprecise; bf16 is the CPU's reduced precision).
    """
    allowed = get_args(RerankPrecision) if cascade else get_args(Precision)
    if precision == CASCADE and not cascade:
        raise PrecisionError("the 'bf16+fp32' cascade is a re-ranker precision (rerank_precision): use 'bf16' here")
    if precision not in allowed:
        raise PrecisionError(f"precision {precision!r} is not one of {', '.join(allowed)}: choose one of those")
    kind = device_type(device)
    if precision == "auto":
        if kind == "cuda":
            return "fp16"
        if kind == "cpu" and cpu_has_native_bf16():
            return CASCADE if cascade else "bf16"
        return "fp32"
    if kind == "cpu" and precision == "fp16":
        raise PrecisionError(
            "precision 'fp16' is not supported on the CPU: use 'bf16', 'fp32' or 'auto'"
            + (" (or the 'bf16+fp32' cascade)" if cascade else "")
        )
    if kind == "cpu" and precision in ("bf16", CASCADE) and not cpu_has_native_bf16():
        warnings.warn("this CPU has no native bf16: bf16 will be emulated (slow)", stacklevel=2)
    return precision


@contextlib.contextmanager
def autocast(device: Any, precision: str) -> Iterator[None]:
    """Autocast for bf16/fp16 inference; a no-op for fp32. Weights stay fp32, so agreement is easy to check."""
    if precision == "fp32":
        yield
        return
    import torch  # lazy, like resolve_device

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"autocast needs a resolved precision (fp32, bf16 or fp16), not {precision!r}")
    with torch.autocast(device_type=device_type(device), dtype=dtypes[precision]):
        yield
