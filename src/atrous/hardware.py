"""What this machine's processor can do, for choices that depend on it (the bottom layer:
nothing here imports atrous): :func:`bf16_supported`, whether bfloat16 convolutions run
natively on the CPU. Inference refuses ``precision="bf16"`` where they do not, and training
with ``amp="bf16"`` on the CPU warns that the step may be slower than float32."""

from __future__ import annotations

__all__ = ["bf16_supported"]


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN: AVX512-BF16 or AMX)."""
    import torch  # here, so that importing this module (and the CLI's parsers) stays light

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
