"""Permutohedral lattice for fast high-dimensional Gaussian filtering (Adams et al. 2010).

The lattice turns the O(N^2) sum ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` into three linear
maps that cost O(N d^2 + M d C): *splat* each point onto the d+1 vertices of the enclosing simplex
with barycentric weights, *blur* the vertex values with a [1/2, 1, 1/2] stencil along each of the
d+1 lattice directions, and *slice* back with the same barycentric weights.  Krähenbühl & Koltun
(2011, sec. 4) use it for the message passing of fully connected CRFs.

The construction follows the arithmetic of the C++ lattice that ships with densecrf / pydensecrf
(float32 elevation, round-half-even to the nearest remainder-0 point, rank by sorting the
residuals, the alpha = 1 / (1 + 2^-d) factor), so that a CRF built on it reproduces that code's
labels.  All three maps are stored once per image as sparse CSR matrices; the filter is then a
chain of sparse x dense products over all labels at once (labels are the contiguous dim), which
runs on any device torch supports.  Several images form one block-diagonal lattice (the image
index is part of each vertex key), so a batch costs one chain of products.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["PermutohedralLattice", "csr_matrix"]

# Packed vertex keys must fit an int64 with room for the neighbour offsets.
_MAX_PACKED = 2**62


def csr_matrix(crow: Tensor, col: Tensor, val: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR matrix built from trusted indices (no invariant checks, no beta warning).

    Indices are int32 when they fit: the sparse kernels (MKL, cuSPARSE) use 32-bit indices
    natively, and half the index bytes is a large part of the memory traffic here.
    """
    if max(size) < 2**31 - 1 and col.numel() < 2**31 - 1:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=size, check_invariants=False)


def _scale_factors(d: int) -> Tensor:
    """Diagonal of the elevation matrix E scaled to unit-std blur (Adams et al. 2010, p. 5-6).

    Computed like the C++ original: float32(inv_std) times a double, rounded to float32.
    """
    inv_std = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    return torch.tensor(
        [1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std for i in range(d)], dtype=torch.float32
    )


class PermutohedralLattice:
    """A permutohedral lattice built once from per-pixel features and reused for many filters.

    Args:
        features: ``(N, d)`` or ``(B, N, d)`` float tensor of feature vectors already divided by
            their standard deviations (e.g. ``(x / sxy, y / sxy, r / srgb, g / srgb, b / srgb)``).
            The lattice is built in float32 whatever the input dtype (it is a discrete structure);
            filtering follows the dtype of the values.

    ``filter(values)`` returns ``alpha * S^T B_d ... B_0 S values`` — an approximation of
    ``sum_j exp(-|f_i - f_j|^2 / 2) values_j`` (self term included) up to a near-constant factor.
    ``filter(values, reverse=True)`` applies the exact transpose (the blur in reverse order), which
    is the backward pass of the filter.
    """

    def __init__(self, features: Tensor) -> None:
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.dim() == 2:
            features = features.unsqueeze(0)
        if features.dim() != 3:
            raise ValueError(
                f"features must have shape (N, d) or (B, N, d), got {tuple(features.shape)}"
            )
        if not features.is_floating_point():
            raise TypeError(f"features must be floating point, got {features.dtype}")
        b, n, d = features.shape
        if d < 1 or n < 1:
            raise ValueError(f"features must have N >= 1 points and d >= 1 dims, got {(n, d)}")
        self.batch, self.num_pixels, self.d = b, n, d
        self.device = features.device
        self._build(features.reshape(b * n, d).to(torch.float32))
        self._cache: dict[torch.dtype, tuple[Tensor, Tensor, list[Tensor]]] = {}

    # ------------------------------------------------------------------ construction
    def _build(self, f: Tensor) -> None:
        d, dev = self.d, self.device
        n_total = f.shape[0]
        d1 = d + 1
        scale = _scale_factors(d).to(dev)
        inv_d1 = torch.tensor(1.0 / d1, dtype=torch.float32).item()  # float32(1/(d+1))

        # Elevate onto the hyperplane sum(x) = 0 in R^{d+1} (y = E p), column by column as in
        # the original so that every float32 rounding is the same.
        elevated = torch.empty(n_total, d1, dtype=torch.float32, device=dev)
        sm = torch.zeros(n_total, dtype=torch.float32, device=dev)
        for j in range(d, 0, -1):
            cf = f[:, j - 1] * scale[j - 1]
            elevated[:, j] = sm - cf * float(j)
            sm = sm + cf
        elevated[:, 0] = sm

        # Closest remainder-0 lattice point: round each coordinate to a multiple of d+1
        # (round half to even, as the SSE rounding mode does).
        v = torch.round(elevated * inv_d1)
        rem0 = v * float(d1)
        coord_sum = v.sum(dim=1)  # integers, exact in float32

        # Rank of each residual (its position in the sorted order), ties broken by index.
        resid = elevated - rem0
        rank = torch.zeros(n_total, d1, dtype=torch.float32, device=dev)
        for i in range(d):
            less = (resid[:, i : i + 1] < resid[:, i + 1 :]).to(torch.float32)
            rank[:, i] += less.sum(dim=1)
            rank[:, i + 1 :] += 1.0 - less
        # Points off the plane sum(x) = 0: move along the cyclic ranks and fix rem0.
        rank += coord_sum[:, None]
        wrap = (rank < 0).to(torch.float32) - (rank >= d1).to(torch.float32)
        rank += wrap * d1
        rem0 += wrap * d1
        rank_i = rank.to(torch.int64)

        # Barycentric coordinates (Adams et al. 2010, p. 10), accumulated in the same order.
        bary = torch.zeros(n_total, d + 2, dtype=torch.float32, device=dev)
        resid = (elevated - rem0) * inv_d1
        pos = d - rank_i
        for i in range(d1):
            bary.scatter_add_(1, pos[:, i : i + 1], resid[:, i : i + 1])
            bary.scatter_add_(1, pos[:, i : i + 1] + 1, -resid[:, i : i + 1])
        bary[:, 0] += 1.0 + bary[:, d + 1]
        bary = bary[:, :d1].contiguous()

        # Integer keys (first d coordinates) of the d+1 simplex vertices: vertex r of the simplex
        # is rem0 + r for coordinates ranked <= d - r, else rem0 + r - (d+1).  Keys are packed
        # into int64 with a mixed radix padded by 2(d+1) around rem0's range, so that every
        # vertex and its blur neighbours (coordinates moved by at most d+1) pack injectively and
        # a neighbour is a constant offset away.
        rem0_i = rem0[:, :d].to(torch.int64)
        lo = rem0_i.amin(dim=0) - 2 * d1
        span = rem0_i.amax(dim=0) + 2 * d1 - lo + 1
        radix = [1]
        for s in span.tolist():
            radix.append(radix[-1] * int(s))
        if radix[-1] * self.batch >= _MAX_PACKED:
            raise ValueError(
                "features span too large a range for the permutohedral lattice keys "
                f"(radix product {radix[-1] * self.batch}); use larger standard deviations"
            )
        radix_t = torch.tensor(radix[:d], dtype=torch.int64, device=dev)
        img = torch.arange(self.batch, device=dev).repeat_interleave(self.num_pixels)
        base = ((rem0_i - lo) * radix_t).sum(dim=1) + img * radix[d]
        # coordinate i drops by d+1 in the vertices r >= d + 1 - rank_i: a cumulative sum
        drop = torch.zeros(n_total, d + 2, dtype=torch.int64, device=dev)
        drop.scatter_add_(1, d1 - rank_i[:, :d], radix_t.expand(n_total, d))
        drop = drop.cumsum_(dim=1)[:, :d1]
        r = torch.arange(d1, device=dev, dtype=torch.int64)
        packed = base[:, None] + r * sum(radix[:d]) - d1 * drop  # (N, d+1)

        # Distinct vertices by a sort of the packed keys.  Vertex ids are then assigned in order
        # of first use by a point (as the C++ hash table does): points are in raster order, so
        # the splat, blur and slice products read memory in near-sequential streams; key order
        # would sweep the image diagonally and thrash the cache on large images.
        flat = packed.reshape(-1)
        flat_sorted, order = torch.sort(flat, stable=True)
        new = torch.ones_like(flat_sorted, dtype=torch.bool)
        new[1:] = flat_sorted[1:] != flat_sorted[:-1]
        starts = torch.nonzero(new).reshape(-1)
        uniq = flat_sorted[starts]
        m = uniq.numel()
        self.num_vertices = m
        key_id = torch.empty_like(order)
        key_id[order] = torch.cumsum(new, 0) - 1  # id in key order, per (point, vertex)
        by_use = torch.argsort(order[starts])  # key-order ids sorted by first use
        use_id = torch.empty_like(by_use)
        use_id[by_use] = torch.arange(m, device=dev)
        offsets = use_id[key_id].view(n_total, d1)
        # splat rows: the key-sorted groups moved to their first-use rows, without another sort
        ends = torch.cat([starts[1:], starts.new_tensor([flat.numel()])])
        counts = torch.empty_like(starts)
        counts[use_id] = ends - starts
        self._splat_crow = torch.zeros(m + 1, dtype=torch.int64, device=dev)
        torch.cumsum(counts, 0, out=self._splat_crow[1:])
        group = key_id[order]
        dest = self._splat_crow[use_id[group]] + torch.arange(flat.numel(), device=dev)
        dest -= starts[group]
        self._splat_order = torch.empty_like(order)
        self._splat_order[dest] = order

        # Neighbours along direction j: all first-d coordinates -1 except coordinate j +d
        # (j < d); j = d is all -1.  n2 is the opposite.  Stored as (lower, upper) vertex ids
        # (ids by first use; -1 = absent), rows in id order.  Looked up in key order, where the
        # queries are sorted and the binary searches stream through memory.
        all_minus = -sum(radix[:d])
        neighbours = []
        for j in range(d1):
            delta = abs(all_minus + (d1 * radix[j] if j < d else 0))
            pair = []
            for sign in (-1, 1):
                target = uniq + sign * delta
                idx = torch.searchsorted(uniq, target).clamp_(max=m - 1)
                nb = torch.empty_like(idx)
                nb[use_id] = torch.where(uniq[idx] == target, use_id[idx], -1)
                pair.append(nb)
            neighbours.append(pair)
        self._offsets = offsets
        self._bary = bary
        self._neighbours = neighbours
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))

    # ------------------------------------------------------------------ sparse operators
    def _operators(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Splat (M, N), slice (N, M) and per-direction blur (M, M) CSR matrices."""
        if dtype in self._cache:
            return self._cache[dtype]
        dev, d1 = self.device, self.d + 1
        n_total, m = self._offsets.shape[0], self.num_vertices
        bary = self._bary.to(dtype)
        # slice: row i holds its d+1 vertices (the sparse kernels accept unsorted columns)
        crow = torch.arange(0, n_total * d1 + 1, d1, device=dev)
        slice_m = csr_matrix(
            crow, self._offsets.reshape(-1), bary.reshape(-1) * self.alpha, size=(n_total, m)
        )
        order = self._splat_order
        splat_m = csr_matrix(
            self._splat_crow, order // d1, bary.reshape(-1)[order], size=(m, n_total)
        )
        blurs = []
        ar = torch.arange(m, device=dev)
        w = torch.tensor([0.5, 1.0, 0.5], dtype=dtype, device=dev).expand(m, 3)
        for lower, upper in self._neighbours:
            c = torch.stack([lower, ar, upper], dim=1)  # sorted columns, -1 = absent
            keep = c >= 0
            crow_b = torch.zeros(m + 1, dtype=torch.int64, device=dev)
            torch.cumsum(keep.sum(dim=1), 0, out=crow_b[1:])
            blurs.append(csr_matrix(crow_b, c[keep], w[keep], size=(m, m)))
        ops = (splat_m, slice_m, blurs)
        self._cache[dtype] = ops
        return ops

    def filter(self, values: Tensor, reverse: bool = False) -> Tensor:
        """Filter ``values`` of shape (N, C) or (B, N, C) through the lattice (splat-blur-slice)."""
        shape = values.shape
        if values.dim() == 2:
            values = values.unsqueeze(0)
        if values.dim() != 3 or values.shape[:2] != (self.batch, self.num_pixels):
            raise ValueError(
                f"values must have shape ({self.batch}, {self.num_pixels}, C), got {tuple(shape)}"
            )
        splat_m, slice_m, blurs = self._operators(values.dtype)
        x = values.reshape(self.batch * self.num_pixels, -1)
        x = splat_m @ x
        for bm in reversed(blurs) if reverse else blurs:
            x = bm @ x
        x = slice_m @ x
        return x.view(shape)
