"""Mixed precision for training (``amp``: ``none``, ``bf16`` or ``fp16``): the autocast
dtype, the fp16 gradient scaler, and the warning for bf16 on a CPU without native bfloat16."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from atrous.hardware import bf16_supported

__all__ = ["autocast", "autocast_dtype", "mixed_precision"]


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The dtype the forward runs in under ``amp``, None for fp32. fp16 becomes bf16 off
    CUDA (CPU autocast has no fp16 loss scaling)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if amp == "fp16" and device.type != "cuda":
        dtype = torch.bfloat16
    return dtype


def mixed_precision(
    amp: str, device: torch.device, log: Callable[[str], None] = print
) -> tuple[torch.amp.GradScaler, torch.dtype | None]:
    """``(grad scaler, autocast dtype)`` for ``amp`` on ``device``: the scaler is enabled for
    fp16 on CUDA only. bf16 on a CPU without native bfloat16 is reported through ``log``."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")
    dtype = autocast_dtype(amp, device)
    if dtype is torch.bfloat16 and device.type == "cpu" and not bf16_supported():
        log(
            f"amp={amp}: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so the "
            "bf16 step may be slower than fp32 here; measure, or set amp=none"
        )
    return scaler, dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op for None (fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
