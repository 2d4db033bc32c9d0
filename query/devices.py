"""Device and precision choice: cuda > mps > cpu; fp16 on cuda, bf16 on CPUs with native bf16."""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator


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
    import torch  # lazy, like resolve_device

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    device_type = device.split(":")[0]
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield
