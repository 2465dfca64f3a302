"""Frozen batch normalization for fine-tuning with small batches (DeepLab v2 sec. 4, v3
sec. 4 second stage: BN statistics and affine parameters fixed after the first stage)."""

from __future__ import annotations

from torch import nn

__all__ = ["freeze_batchnorm"]


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm in eval mode with frozen affine parameters; returns how many were
    frozen. Call again after each ``model.train()``."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            n += 1
    return n
