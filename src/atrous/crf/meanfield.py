"""Mean-field inference in the fully connected CRF (Krähenbühl & Koltun 2011, sec. 3-4).

The CRF has unary energies ``U_i(l)`` (here ``-log p_i(l)`` of the network's probabilities) and
pairwise energies ``mu(l, l') sum_m w_m k_m(f_i, f_j)`` with the Gaussian kernels of
:mod:`atrous.crf.kernels` (normalized ``K~_m``).  The update is

    Q_i(l)  ∝  exp(-U_i(l) - sum_l' mu(l, l') sum_m w_m (K~_m Q)_i(l'))

With the Potts model ``mu(l, l') = [l != l']`` this equals densecrf's ``-U + sum_m w_m K~_m Q``
(the two differ by a per-pixel constant that the softmax removes), which is what is computed.

:func:`mean_field` is the reference implementation: any kernels (lattice or exact), any
compatibility, differentiable in the unaries, the weights and the compatibility (CRF-as-RNN).
:func:`~atrous.crf.dense_crf` runs the same iterations through the fused sparse products of
:mod:`atrous.crf.fused` when it can.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .kernels import GaussianKernel

__all__ = ["mean_field"]


def mean_field(
    unary: Tensor,
    kernels: Sequence[tuple[GaussianKernel, float | Tensor]],
    iterations: int,
    compat: Tensor | None = None,
    return_logits: bool = False,
) -> Tensor:
    """Run ``iterations`` mean-field updates (Krähenbühl & Koltun 2011, alg. 1).

    Args:
        unary: ``(B, N, C)`` unary energies (``-log p``, or ``-logits``).
        kernels: ``(kernel, weight)`` pairs; a weight is a float or a tensor broadcast over C.
        iterations: number of updates.
        compat: ``(C, C)`` label compatibility ``mu`` in the energy sense (penalty for the pair of
            labels); ``None`` is Potts, ``mu = 1 - I``.
        return_logits: return the last update's logits (before the softmax) instead of Q.

    Returns:
        ``(B, N, C)`` marginals Q (or logits).  Differentiable in unary, weights and compat.
    """
    logits = -unary
    q = torch.softmax(logits, dim=-1)
    for _ in range(iterations):
        msg = None
        for kernel, w in kernels:
            m = kernel(q) * w
            msg = m if msg is None else msg + m
        if msg is None:
            break
        if compat is None:
            logits = msg - unary
        else:
            logits = -unary - msg @ compat.to(msg.dtype).T
        q = torch.softmax(logits, dim=-1)
    return logits if return_logits else q
