"""Mixed precision: ``"32"``, ``"bf16-mixed"`` or ``"auto"`` (bf16 where the hardware has fast bf16).

``bf16-mixed`` runs the model's forward pass under ``torch.autocast`` with bfloat16 (CPU or CUDA):
matrix products and convolutions in bf16, reductions and normalisations in fp32 as autocast decides.
Everything around it stays fp32: the weights and the optimiser (Adam keeps fp32 master weights,
since the parameters never change dtype), the losses (the outputs are cast to fp32 before any loss
is computed), metrics, scalers and checkpoints. bf16 has fp32's exponent range, so no loss scaling.

Fast bf16 is detected, not assumed: on CPU, AMX tiles or AVX-512 BF16 (``lscpu | grep amx``) make a
bf16 matmul ~4x faster than fp32 per core; without them autocast emulates bf16 and is slower, so
``auto`` means fp32 there. On CUDA, ``torch.cuda.is_bf16_supported()`` (Ampere and newer).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["32", "bf16-mixed", "auto"]
PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed", "auto")


@functools.lru_cache(maxsize=None)
def _cpu_fast_bf16() -> bool:
    cpu = torch.cpu
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if callable(fn):
            try:
                if fn():
                    return True
            except Exception:  # a torch build without the probe's backend
                continue
    try:  # an older torch: the kernel's CPU flags
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` runs bf16 matrix products faster than fp32."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        return _cpu_fast_bf16()
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> Literal["32", "bf16-mixed"]:
    """``"auto"`` -> ``"bf16-mixed"`` where :func:`fast_bf16`, else ``"32"``; the others as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "auto":
        return "bf16-mixed" if fast_bf16(device) else "32"
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device = "cpu") -> Iterator[None]:
    """The forward pass's context: bf16 autocast on ``device`` for ``bf16-mixed`` (``auto`` resolved
    here), a no-op for ``32``."""
    if resolve_precision(precision, device) != "bf16-mixed":
        yield
        return
    dev = torch.device(device)
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
        yield


__all__ = ["PRECISIONS", "Precision", "autocast", "fast_bf16", "resolve_precision"]
