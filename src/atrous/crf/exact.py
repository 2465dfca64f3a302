"""Exact O(N^2) Gaussian filtering, the ground truth the permutohedral lattice approximates.

Krähenbühl & Koltun (2011, sec. 3) write the mean-field message of a fully connected CRF as
``sum_j k(f_i, f_j) Q_j(l)`` with Gaussian kernels ``k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)`` on
features already divided by their standard deviations.  This module computes that sum directly,
in row blocks to bound memory; it is only meant for small images (tests, approximation bounds).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["exact_filter"]


def exact_filter(
    features: Tensor, values: Tensor, include_self: bool = True, block: int = 2048
) -> Tensor:
    """Return ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) values_j`` exactly.

    Args:
        features: ``(N, d)`` or ``(B, N, d)`` scaled features.
        values: ``(N, C)`` or ``(B, N, C)`` values to filter (same leading dims as features).
        include_self: keep the ``j = i`` term (the lattice includes it; the paper's energy does
            not, which only changes the result by ``values_i``).
        block: rows per block (memory is ``block * N`` floats).
    """
    if features.dim() != values.dim() or features.shape[:-1] != values.shape[:-1]:
        raise ValueError(
            f"features {tuple(features.shape)} and values {tuple(values.shape)} must share "
            "their leading (batch, N) dims"
        )
    squeeze = features.dim() == 2
    if squeeze:
        features, values = features.unsqueeze(0), values.unsqueeze(0)
    f = features.to(values.dtype)
    out = torch.empty_like(values)
    n = f.shape[1]
    sq = (f * f).sum(-1)
    for s in range(0, n, block):
        e = min(n, s + block)
        # |a-b|^2 = |a|^2 + |b|^2 - 2ab, clamped against tiny negative round-off
        dist = sq[:, s:e, None] + sq[:, None, :] - 2.0 * f[:, s:e] @ f.transpose(1, 2)
        k = torch.exp(-0.5 * dist.clamp_min(0.0))
        if not include_self:
            idx = torch.arange(s, e, device=f.device)
            k[:, idx - s, idx] = 0.0
        out[:, s:e] = k @ values
    return out.squeeze(0) if squeeze else out
