"""The compiled mean field of the dense CRF (``_native.c``), where it was built.

:func:`~atrous.crf.dense_crf` runs its iterations here on CPU: each iteration splats Q onto
every kernel's lattice, blurs (Adams et al. 2010) and slices back fused with the unary, the
exponential and the normalization (Krähenbühl & Koltun 2011, alg. 1), in loops over the
contiguous label dim, on ``threads`` threads.  The extension is built on install where a C
compiler is present (``setup.py``); without it, or on another device, or with a label
compatibility matrix, the torch sparse products of :mod:`atrous.crf.fused` run instead.
``ATROUS_CRF_NATIVE=0`` turns it off (for comparisons).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

# The interface version of _native.c this module calls (its ABI constant): a build left over
# from an older source is not used (reinstall to rebuild it: `make` does when _native.c changes).
ABI = 5

try:
    from . import _native
except ImportError:  # not built (no compiler at install): the torch path
    _native = None
if _native is not None and getattr(_native, "ABI", None) != ABI:
    warnings.warn(
        f"atrous.crf._native is a stale build (ABI {getattr(_native, 'ABI', None)}, expected "
        f"{ABI}); the dense CRF runs its slower torch path until the package is reinstalled",
        RuntimeWarning,
        stacklevel=1,
    )
    _native = None

__all__ = ["available", "mean_field"]

_LANES = 8  # the C code's vector width in labels (its W)
MAX_THREADS = 8  # threads one mean-field call uses at most


def available() -> bool:
    """Whether the compiled mean field is built and not turned off (``ATROUS_CRF_NATIVE=0``)."""
    return _native is not None and os.environ.get("ATROUS_CRF_NATIVE", "1") != "0"


def lattice_build(
    features: Tensor, per_image: int, scale: Tensor, inv_d1: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int], list[int]]:
    """The compiled lattice of ``features`` ``(N, d)`` float32 (``per_image`` points to an
    image of a batch): vertex ids ``(N, d+1)`` int32 (first use in point order), barycentric
    weights ``(N, d+1)``, "minus" and "plus" blur neighbours ``(d+1, M)`` int32 (M where
    absent), and the range of the remainder-0 coordinates K (min, max per coordinate)."""
    assert _native is not None
    n, d = features.shape
    f = features.contiguous()
    vid = torch.empty(n, d + 1, dtype=torch.int32)
    bary = torch.empty(n, d + 1, dtype=torch.float32)
    sc = scale.to(torch.float32).contiguous()
    m, nbr, kmin, kmax = _native.lattice_build(
        n,
        per_image,
        d,
        f.data_ptr(),
        sc.data_ptr(),
        inv_d1,
        vid.data_ptr(),
        bary.data_ptr(),
        torch.get_num_threads(),
    )
    neighbours = torch.frombuffer(nbr, dtype=torch.int32).view(2, d + 1, m)
    return vid, bary, neighbours[0], neighbours[1], kmin, kmax


def usable(kernels: Sequence[tuple[Any, float]], probs: Tensor) -> bool:
    """Whether :func:`mean_field` can run these ``(GaussianKernel, weight)`` pairs on these
    probabilities."""
    return (
        available()
        and probs.device.type == "cpu"
        and 0 < len(kernels) <= 8
        and all(k.lattice is not None for k, _ in kernels)
        and probs.shape[0] < 2**31 - 1
        and all(k.lattice.num_rows * probs.shape[1] < 2**62 for k, _ in kernels)  # type: ignore[union-attr]
    )


def lattice_degree(vid: Tensor, bary: Tensor, minus: Tensor, plus: Tensor, alpha: float) -> Tensor:
    """``(N,)`` float32 row sums of the lattice filter (the filter of ones: splat, blur, slice
    times ``alpha``) of a compiled build."""
    assert _native is not None
    n, d1 = vid.shape
    deg = torch.empty(n, dtype=torch.float32)
    _native.lattice_degree(
        n,
        d1,
        minus.shape[1],
        vid.data_ptr(),
        bary.data_ptr(),
        minus.data_ptr(),
        plus.data_ptr(),
        float(alpha),
        deg.data_ptr(),
    )
    return deg


def mean_field(
    probs: Tensor,
    kernels: Sequence[tuple[Any, float]],
    iterations: int,
    threads: int | None = None,
    planes: Tensor | None = None,
) -> Tensor:
    """Q ``(N, C)`` after ``iterations`` Potts mean-field updates from ``probs`` ``(N, C)``
    float32 (entries > 0; the unary is -log p), written into ``probs`` (contiguous), which
    holds -U during the iterations (no other buffer of its size).

    With ``planes``, a contiguous float32 ``(B, C, N / B)``, Q is written there instead,
    label-major image by image (the layout ``dense_crf`` returns: no transposing copy after),
    and returned; ``probs`` is left holding -U.

    ``threads`` defaults to ``torch.get_num_threads()``; the result is the same bits on any
    number of threads (the splat is a gather, and every block of work is computed the same way
    whichever thread takes it).
    """
    if _native is None:
        raise RuntimeError("atrous.crf._native was not built (no C compiler at install)")
    if not probs.is_contiguous():
        raise ValueError("probs must be contiguous (it receives Q)")
    n, c = probs.shape
    hw = 0
    if planes is not None:
        if (
            planes.dtype != torch.float32
            or not planes.is_contiguous()
            or planes.dim() != 3
            or planes.shape[1] != c
            or planes.shape[0] * planes.shape[2] != n
        ):
            raise ValueError(
                f"planes must be a contiguous float32 (B, {c}, N / B) for N = {n}, got "
                f"{planes.dtype} {tuple(planes.shape)}"
            )
        hw = planes.shape[2]
    cp = -(-c // _LANES) * _LANES  # labels padded to whole vectors inside
    torch.log(probs, out=probs)  # -U, in place: each pixel's row becomes its Q at the end
    keep: list[Tensor] = []  # the arrays the C code reads, alive until it returns
    specs = []
    for kern, w in kernels:
        lat = kern.lattice
        assert lat is not None
        norm = kern.norm(torch.float32).reshape(-1).contiguous()
        vid = lat.vertex_ids.to(torch.int32).contiguous()
        bary = lat.barycentric.contiguous()
        minus, plus = lat.minus_plus if lat.minus_plus is not None else (lat._lower, lat._upper)
        minus, plus = minus.to(torch.int32).contiguous(), plus.to(torch.int32).contiguous()
        keep += [norm, vid, bary, minus, plus]
        specs.append(
            (
                lat.d + 1,
                lat.num_vertices,
                vid.data_ptr(),
                bary.data_ptr(),
                norm.data_ptr(),
                float(lat.alpha * w),
                minus.data_ptr(),
                plus.data_ptr(),
            )
        )
    nt = torch.get_num_threads() if threads is None else int(threads)
    # a thread per ~20k pixels at most: below that the barriers cost more than they save; and
    # at most MAX_THREADS (each helper thread keeps its own copy of the bilateral splat, and
    # the pixel pass is bound by memory: more threads than that were not measured to help)
    nt = max(1, min(nt, n // 20_000 or 1, MAX_THREADS))
    out = (planes.data_ptr(), hw) if planes is not None else ()
    _native.mean_field(
        n, c, cp, int(iterations), nt, probs.data_ptr(), probs.data_ptr(), specs, *out
    )
    del keep
    return probs if planes is None else planes
