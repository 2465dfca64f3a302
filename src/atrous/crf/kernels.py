"""The Gaussian kernels of the fully connected CRF and their features (Krähenbühl & Koltun 2011).

The pairwise energy has two kernels over all pixel pairs (sec. 3; DeepLab v1 sec. 4.3, v2 sec.
3.3): a *smoothness* kernel on positions, features ``(x, y) / pos_xy_std``
(:func:`positional_features`), and an *appearance* (bilateral) kernel on positions and colours,
features ``(x, y) / bi_xy_std, (r, g, b) / bi_rgb_std`` (:func:`bilateral_features`).  With
features divided by their stds the kernel is ``k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)``.

:class:`GaussianKernel` filters with one such kernel, normalized as densecrf's
``NORMALIZE_SYMMETRIC`` (the default of pydensecrf's ``DenseCRF2D.addPairwise*``):
``K~ = D^-1/2 K D^-1/2`` with ``D = diag(K 1)``.  The positional kernel depends only on the image
size, so :func:`positional_kernel` keeps the last few (:func:`clear_kernel_cache` drops them).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .exact import exact_filter
from .lattice import PermutohedralLattice

__all__ = [
    "GaussianKernel",
    "bilateral_features",
    "clear_kernel_cache",
    "positional_features",
    "positional_kernel",
]


def _div(x: Tensor, s: float) -> Tensor:
    # Divide by a full tensor, not a Python scalar: torch turns scalar division into
    # multiplication by the reciprocal, which rounds differently from the C++ original.
    return x / torch.full_like(x, float(np.float32(s)))


def positional_features(
    batch: int, height: int, width: int, xy_std: float, device: torch.device | str = "cpu"
) -> Tensor:
    """``(batch, H*W, 2)`` features ``(x / xy_std, y / xy_std)`` in row-major pixel order."""
    if xy_std <= 0:
        raise ValueError(f"xy_std must be positive, got {xy_std}")
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    f = torch.stack([_div(xs, xy_std), _div(ys, xy_std)], dim=-1).reshape(1, height * width, 2)
    return f.expand(batch, -1, -1)


def bilateral_features(image_bhwc: Tensor, xy_std: float, rgb_std: float) -> Tensor:
    """``(B, H*W, 5)`` features ``(x, y) / xy_std`` and ``(r, g, b) / rgb_std``."""
    if rgb_std <= 0:
        raise ValueError(f"rgb_std must be positive, got {rgb_std}")
    b, h, w, c = image_bhwc.shape
    pos = positional_features(b, h, w, xy_std, image_bhwc.device)
    rgb = _div(image_bhwc.to(torch.float32), rgb_std).reshape(b, h * w, c)
    return torch.cat([pos, rgb], dim=-1)


class GaussianKernel:
    """A symmetric-normalized Gaussian kernel ``D^-1/2 K D^-1/2`` over fixed features.

    ``method="lattice"`` filters with the permutohedral lattice (Adams et al. 2010),
    ``"exact"`` with the O(N^2) sum (small images only).
    """

    def __init__(self, features: Tensor, method: str = "lattice") -> None:
        if method not in ("lattice", "exact"):
            raise ValueError(f"method must be 'lattice' or 'exact', got {method!r}")
        self.method = method
        self.features = features
        self.lattice = PermutohedralLattice(features) if method == "lattice" else None
        if self.lattice is not None:
            deg = self.lattice.degree()
        else:
            deg = self.raw(
                torch.ones(*features.shape[:2], 1, dtype=torch.float32, device=features.device)
            )
        self._norm32 = torch.rsqrt(deg + 1e-20)
        self._norm: dict[torch.dtype, Tensor] = {torch.float32: self._norm32}
        self._splat: dict[torch.dtype, Tensor] = {}

    def raw(self, values: Tensor, reverse: bool = False) -> Tensor:
        """Un-normalized filter ``K values`` (``K^T values`` with ``reverse``)."""
        if self.lattice is not None:
            return self.lattice.filter(values, reverse=reverse)
        return exact_filter(self.features, values)

    def norm(self, dtype: torch.dtype) -> Tensor:
        """``D^-1/2`` as ``(B, N, 1)`` in ``dtype`` (cached per dtype)."""
        if dtype not in self._norm:
            self._norm[dtype] = self._norm32.to(dtype)
        return self._norm[dtype]

    def normalized_splat(self, dtype: torch.dtype) -> Tensor:
        """The lattice's splat matrix with ``D^-1/2`` folded in (cached per dtype)."""
        if dtype not in self._splat:
            lat = self.lattice
            assert lat is not None
            w = lat.barycentric.to(dtype) * self.norm(dtype).reshape(-1, 1)
            self._splat[dtype] = lat.splat_matrix(w.view(-1))
        return self._splat[dtype]

    def __call__(self, values: Tensor, reverse: bool = False) -> Tensor:
        """Normalized filter; differentiable in ``values`` (backward = the transposed filter)."""
        if values.requires_grad and torch.is_grad_enabled():
            return _KernelFilter.apply(values, self, reverse)
        return self._apply(values, reverse)

    def _apply(self, values: Tensor, reverse: bool) -> Tensor:
        n = self.norm(values.dtype)
        return n * self.raw(n * values, reverse=reverse)


class _KernelFilter(torch.autograd.Function):
    """``y = N K N x``; its vector-Jacobian product is ``N K^T N g`` (the reversed blur)."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, kernel: GaussianKernel, reverse: bool) -> Tensor:
        ctx.kernel, ctx.reverse = kernel, reverse
        return kernel._apply(values, reverse)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return ctx.kernel(grad.contiguous(), reverse=not ctx.reverse), None, None


# Positional kernels depend only on (batch, H, W, std, device): the last few are kept, so that
# calls on same-size images (a dataset of 500x375 photos) skip their construction.
_POS_CACHE: OrderedDict[tuple, GaussianKernel] = OrderedDict()
_POS_CACHE_ENTRIES = 2
_POS_CACHE_MAX_PIXELS = 4_000_000  # ~0.5 GB of lattice at this size; larger ones are not kept


def positional_kernel(
    batch: int,
    height: int,
    width: int,
    xy_std: float,
    device: torch.device | str = "cpu",
    method: str = "lattice",
) -> GaussianKernel:
    """The smoothness kernel for a ``(batch, height, width)`` grid, from a small cache.

    :func:`clear_kernel_cache` empties it.
    """
    key = (batch, height, width, float(np.float32(xy_std)), str(torch.device(device)), method)
    kern = _POS_CACHE.get(key)
    if kern is not None:
        _POS_CACHE.move_to_end(key)
        return kern
    kern = GaussianKernel(positional_features(batch, height, width, xy_std, device), method)
    if batch * height * width <= _POS_CACHE_MAX_PIXELS and _POS_CACHE_ENTRIES > 0:
        _POS_CACHE[key] = kern
        while len(_POS_CACHE) > _POS_CACHE_ENTRIES:
            _POS_CACHE.popitem(last=False)
    return kern


def clear_kernel_cache() -> None:
    """Drop the cached positional kernels of :func:`positional_kernel`."""
    _POS_CACHE.clear()
