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

Distinct vertices are found without hashing: every coordinate of vertex r is = r (mod d+1), so
keys compress (d+1)-fold per coordinate.  When the compressed range is small (the positional
kernel) a direct-address table dedups them (first use by ``scatter_reduce`` amin, neighbours by
plain gathers); otherwise (the bilateral kernel) the points are grouped by simplex with one sort
of N keys and only the distinct simplices are expanded to vertices.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import native

__all__ = ["PermutohedralLattice", "csr_matrix"]

# The direct-address table is used while it has at most this many slots per (point, vertex).
_DENSE_TABLE_FACTOR = 4

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


def _sort(x: Tensor, bound: int) -> tuple[Tensor, Tensor]:
    """Sorted values and a stable sorting permutation of a 1-D int64 tensor, values in
    ``[0, bound)``.

    On CPU, where the values leave room, each value is packed with its index into one int64
    (value above, index below) and NumPy sorts the packed values: its SIMD sort of values is
    3-4x faster than any argsort, and the index in the low bits makes the order stable.
    """
    # (600k keys: 7 ms against 23 ms for NumPy's quicksort argsort and 79 ms stable:
    # benchmarks/results/crf.md, item 5 of issue 14's log)
    n = x.numel()
    if x.device.type != "cpu":
        return torch.sort(x, stable=True)
    bits = max(1, (n - 1).bit_length())
    if bound <= 1 << (63 - bits):
        packed = np.left_shift(x.numpy(), bits)
        packed |= np.arange(n, dtype=np.int64)
        packed.sort()
        perm = torch.from_numpy(packed & ((1 << bits) - 1))
        return torch.from_numpy(np.right_shift(packed, bits, out=packed)), perm
    perm = torch.from_numpy(np.argsort(x.numpy(), kind="stable"))
    return x.index_select(0, perm), perm


def _index_dtype(n: int) -> torch.dtype:
    """int32 for indices below ``n`` where they fit (the sparse matrices are int32 anyway)."""
    return torch.int32 if n < 2**31 - 1 else torch.int64


def _searchsorted(sorted_keys: Tensor, queries: Tensor) -> Tensor:
    """``torch.searchsorted`` (left) of 1-D int64 tensors. NumPy's on CPU: it starts each
    binary search from the previous answer when the queries ascend (they come in sorted
    runs here), which makes it faster."""
    # (1.2M queries into 210k keys: 36 ms against 58 ms for torch's; benchmarks/results/crf.md,
    # item 2 of issue 14's log)
    if queries.device.type == "cpu":
        return torch.from_numpy(np.searchsorted(sorted_keys.numpy(), queries.numpy()))
    return torch.searchsorted(sorted_keys, queries)


def _scale_factors(d: int) -> Tensor:
    """Diagonal of the elevation matrix E scaled to unit-std blur (Adams et al. 2010, p. 5-6).

    Computed like the C++ original: float32(inv_std) times a double, rounded to float32.
    """
    inv_std = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    return torch.tensor(
        [1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std for i in range(d)], dtype=torch.float32
    )


def _elevate(f: Tensor, d: int) -> Tensor:
    """``(d+1, N)``: the points ``f`` ``(N, d)`` elevated onto the hyperplane sum(x) = 0 in
    R^{d+1} (y = E p), coordinate by coordinate as in the original so that every float32
    rounding is the same. Coordinates are rows here: every step is a contiguous elementwise
    op."""
    dev, n_total = f.device, f.shape[0]
    scale = _scale_factors(d).to(dev)
    ft = f.t()
    elevated = torch.empty(d + 1, n_total, dtype=torch.float32, device=dev)
    sm = torch.zeros(n_total, dtype=torch.float32, device=dev)
    for j in range(d, 0, -1):
        cf = ft[j - 1] * scale[j - 1]
        torch.sub(sm, cf * float(j), out=elevated[j])
        sm += cf
    elevated[0] = sm
    return elevated


def _inv_d1(d: int) -> float:
    """float32(1 / (d+1)), as the original computes it."""
    return torch.tensor(1.0 / (d + 1), dtype=torch.float32).item()


def _enclosing_simplex(elevated: Tensor, d: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The simplex of each elevated point ``(d+1, N)``: the closest remainder-0 lattice point
    ``v`` (coordinates / (d+1)), the ``wrap`` of points off the plane, ``rem0`` (that point,
    wrapped) and the rank of each coordinate's residual (int64), all ``(d+1, N)``."""
    d1, dev, n_total = d + 1, elevated.device, elevated.shape[1]
    # Closest remainder-0 lattice point: round each coordinate to a multiple of d+1
    # (round half to even, as the SSE rounding mode does).
    v = torch.round(elevated * _inv_d1(d))
    rem0 = v * float(d1)
    coord_sum = v.sum(dim=0)  # integers, exact in float32

    # Rank of each residual (its position in the sorted order), ties broken by index.
    resid = elevated - rem0
    # For i < j: resid_i < resid_j ranks i up, else j (as in the original loop).
    count = torch.zeros(d1, n_total, dtype=torch.uint8, device=dev)
    less = torch.empty(n_total, dtype=torch.bool, device=dev)
    for i in range(d):
        for j in range(i + 1, d1):
            torch.lt(resid[i], resid[j], out=less)
            count[i] += less
            count[j] += ~less
    # Points off the plane sum(x) = 0: move along the cyclic ranks and fix rem0.
    rank = count + coord_sum  # float32
    wrap = (rank < 0).to(torch.float32) - (rank >= d1).to(torch.float32)
    rank += wrap * d1
    rem0 += wrap * d1
    return v, wrap, rem0, rank.to(torch.int64)


def _barycentric(elevated: Tensor, rem0: Tensor, rank_i: Tensor, d: int) -> Tensor:
    """``(N, d+1)`` barycentric coordinates of each point in its simplex (Adams et al. 2010,
    p. 10).  The original accumulates, for every coordinate i, +resid_i at d - rank_i and
    -resid_i at d - rank_i + 1; each slot gets exactly two terms, so with s_k the residual of
    rank k this is bary[j] = s_{d-j} - s_{d+1-j} (bit-identical: a + (-b) and (-b) + a round
    the same)."""
    resid = (elevated - rem0) * _inv_d1(d)
    s_rev = torch.empty_like(resid)
    s_rev.scatter_(0, d - rank_i, resid)  # s_rev[j] = s_{d-j}
    bary = torch.empty(elevated.shape[1], d + 1, dtype=torch.float32, device=elevated.device)
    bary_t = bary.t()
    torch.sub(s_rev[1:], s_rev[:-1], out=bary_t[1:])
    torch.add(s_rev[0], 1.0 - s_rev[d], out=bary_t[0])
    return bary


@dataclass
class _VertexKeys:
    """How vertices are packed into int64 keys, and what each point needs to list its
    simplex's vertices.

    Vertex r of a simplex is rem0 + r in the coordinates ranked <= d - r, else
    rem0 + r - (d+1).  Every coordinate of vertex r is = r (mod d+1), so a vertex is the pair
    (r, k) with k = (coordinate - r) / (d+1): keys compressed (d+1)-fold per coordinate.
    k_i = K_i - [rank_i > d - r] with K = rem0 / (d+1); only the first d coordinates are free
    (they sum to zero).  A key is ``sum_i (k_i - k_lo_i) radix_i + r * r_radix`` (+ the image
    index times ``(d+1) r_radix`` in a batch).
    """

    big_k: Tensor  # (N, d) K of each point (int64, a transposed view)
    rank_i: Tensor  # (N, d+1) rank of each coordinate (int64, a transposed view)
    k_lo: Tensor  # (d,) the smallest k minus 2
    radix_t: Tensor  # (d,) the radix of each coordinate
    r_radix: int  # the radix of r
    n_keys: int  # the key range over the batch
    # Key offsets of each direction's blur neighbours: ((minus, r >= 1), (minus, r == 0)),
    # ((plus, r <= d-1), (plus, r == d)); and per direction, whether "minus" is the neighbour
    # with the larger key in the original's uncompressed packing.
    deltas: list[tuple[tuple[int, int], tuple[int, int]]]
    minus_is_upper: list[bool]

    @classmethod
    def of(cls, big_k: Tensor, rank_i: Tensor, batch: int) -> _VertexKeys:
        d = big_k.shape[1]
        d1 = d + 1
        k_lo = big_k.amin(dim=0) - 2  # blur neighbours move k by one, a vertex by one more
        k_span = (big_k.amax(dim=0) + 2 - k_lo).tolist()
        radix = [1]
        for sp in k_span:
            radix.append(radix[-1] * int(sp))
        n_keys = radix[d] * d1 * batch
        if n_keys >= _MAX_PACKED:
            raise ValueError(
                "features span too large a range for the permutohedral lattice keys "
                f"({n_keys} keys); use larger standard deviations"
            )
        radix_t = torch.tensor(radix[:d], dtype=torch.int64, device=big_k.device)
        return cls(
            big_k,
            rank_i,
            k_lo,
            radix_t,
            radix[d],
            n_keys,
            _neighbour_deltas(radix, d),
            _minus_is_upper(k_span, d),
        )


def _minus_is_upper(k_span: list[int], d: int) -> list[bool]:
    """Per direction, which neighbour of a pair has the smaller key in the uncompressed
    packing of the original (it decides the column order in the blur rows, hence the float
    rounding)."""
    d1 = d + 1
    full_span = [d1 * sp + 1 for sp in k_span]
    full_radix = [1]
    for sp in full_span:
        full_radix.append(full_radix[-1] * sp)
    minus_is_upper = [d1 * full_radix[j] - sum(full_radix[:d]) > 0 for j in range(d)]
    minus_is_upper.append(False)
    return minus_is_upper


def _neighbour_deltas(radix: list[int], d: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Key offsets of the blur neighbours of each direction j: "minus" moves every
    coordinate by -1 except coordinate j by +d (j < d).  In (r, k): r -> r - 1 and k_j + 1, or
    from r = 0 to r = d with k_i - 1 for i != j.  "plus" is the inverse map."""
    r_radix = radix[d]
    rk_sum = sum(radix[:d])
    deltas = []
    for j in range(d + 1):
        rj = radix[j] if j < d else 0
        minus = (-r_radix + rj, d * r_radix - (rk_sum - rj))  # (r >= 1, r == 0)
        plus = (r_radix - rj, -d * r_radix + (rk_sum - rj))  # (r <= d - 1, r == d)
        deltas.append((minus, plus))
    return deltas


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

    Read-only structure, for operators built outside (the fused mean field): ``num_points``,
    ``num_vertices``, ``d``, ``alpha``, :attr:`barycentric`, :attr:`vertex_ids`,
    :meth:`splat_matrix`, :meth:`blur_matrices` and :meth:`degree`.
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
        self._blur_cache: dict[torch.dtype, list[Tensor]] = {}
        self._composite: dict[torch.dtype, Tensor] = {}

    # ------------------------------------------------------------------ structure
    @property
    def num_points(self) -> int:
        """Points over the whole batch, ``batch * num_pixels`` (rows of the slice matrix)."""
        return self.batch * self.num_pixels

    @property
    def num_rows(self) -> int:
        """Rows of the vertex values the operators act on: the ``num_vertices`` vertices and a
        last row that stays zero, which every absent blur neighbour reads."""
        return self.num_vertices + 1

    @property
    def barycentric(self) -> Tensor:
        """``(num_points, d+1)`` float32 barycentric weight of each point on each vertex of
        its simplex (not to be modified)."""
        return self._bary

    @property
    def vertex_ids(self) -> Tensor:
        """``(num_points, d+1)`` id (0 .. num_vertices - 1) of each point's simplex vertices,
        in the column order of :attr:`barycentric` (not to be modified). The direct-address
        build (small key ranges: the positional kernel) numbers vertices by first use in point
        order, as the C++ hash table does; the sorting build (the bilateral kernel) in key
        order. Ids enter no arithmetic: both give the same filter results."""
        return self._offsets

    # ------------------------------------------------------------------ construction
    def _build(self, f: Tensor) -> None:
        """The lattice of the points ``f`` ``(N, d)`` (float32): each point's simplex and
        barycentric weights, then the distinct vertices, the splat order and the blur
        neighbours (compiled, :mod:`atrous.crf.native`, on CPU where it was built; else
        :meth:`_build_dense` or :meth:`_build_sorted`)."""
        d = self.d
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))
        if (
            native.available()
            and f.device.type == "cpu"
            and d < 64
            and f.shape[0] * (d + 1) < 2**31 - 1
        ):
            self._build_native(f)
            return
        elevated = _elevate(f, d)
        v, wrap, rem0, rank_i = _enclosing_simplex(elevated, d)
        bary = _barycentric(elevated, rem0, rank_i, d)
        del elevated, rem0
        keys = _VertexKeys.of((v[:d] + wrap[:d]).to(torch.int64).t(), rank_i.t(), self.batch)
        del v, wrap
        self.num_keys = keys.n_keys
        if keys.n_keys <= _DENSE_TABLE_FACTOR * (f.shape[0] * (d + 1) + 1024):
            self._build_dense(keys)
        else:
            self._build_sorted(keys)
        self._bary = bary

    def _build_native(self, f: Tensor) -> None:
        """The compiled build: the same simplices, weights and vertices, numbered by first use
        in point order (as the C++ hash table does), with a hash table where the key range is
        large; the splat rows are made when a sparse splat matrix is asked for."""
        d = self.d
        vid, bary, minus, plus, kmin, kmax = native.lattice_build(
            f, self.num_pixels, _scale_factors(d), _inv_d1(d)
        )
        self.num_vertices = minus.shape[1]
        self._offsets, self._bary = vid, bary
        k_span = [hi + 4 - lo for lo, hi in zip(kmin, kmax)]
        # lower / upper (the order of the torch path's sums) are made if a sparse filter asks
        # for them; the compiled code reads minus / plus as they are
        self._minus_is_upper = _minus_is_upper(k_span, d)
        self.minus_plus = (minus, plus)

    def _splat_rows(self) -> tuple[Tensor, Tensor]:
        """The splat matrix's row pointer and entry order (entries grouped by vertex, in entry
        order within a row), made from the vertex ids where the build did not."""
        if not hasattr(self, "_splat_crow"):
            m = self.num_vertices
            vid = self._offsets.reshape(-1).to(torch.int64)
            counts = torch.bincount(vid, minlength=m + 1)  # (the zero row m: no entries)
            crow = torch.zeros(m + 2, dtype=torch.int64, device=vid.device)
            torch.cumsum(counts, 0, out=crow[1:])
            self._splat_crow = crow
            self._splat_order = _sort(vid, m)[1].to(_index_dtype(vid.numel()))
        return self._splat_crow, self._splat_order

    def _vertex_keys(self, keys: _VertexKeys, big_k: Tensor, rank_i: Tensor) -> Tensor:
        """Packed keys ``(n, d+1)`` of the d+1 vertices of each row's simplex (``big_k``,
        ``rank_i``: rows of ``keys.big_k`` and ``keys.rank_i``)."""
        d, d1 = self.d, self.d + 1
        n = big_k.shape[0]
        base = ((big_k - keys.k_lo) * keys.radix_t).sum(dim=1)
        # k_i drops by one in the vertices r >= d + 1 - rank_i: a cumulative sum over r
        drop = torch.zeros(n, d + 2, dtype=torch.int64, device=big_k.device)
        drop.scatter_add_(1, d1 - rank_i[:, :d], keys.radix_t.expand(n, d))
        drop = drop.cumsum_(dim=1)[:, :d1]
        r = torch.arange(d1, device=big_k.device, dtype=torch.int64) * keys.r_radix
        return torch.sub(base[:, None] + r, drop)

    def _neighbour_keys(self, keys: Tensor, r: Tensor, deltas: list, plus: bool) -> Tensor:
        """``(d+1, M)`` keys of every vertex's "minus" (or "plus") blur neighbour in each
        lattice direction (direction-major: each direction's queries are one contiguous run);
        the key offset depends only on the vertex's remainder r."""
        d = self.d
        tab = []
        for (m_hi, m_lo), (p_lo, p_hi) in deltas:
            tab.append([p_lo] * d + [p_hi] if plus else [m_lo] + [m_hi] * d)
        # (direction, r) layout: a column gather of the small table per vertex
        tab_t = torch.tensor(tab, dtype=keys.dtype, device=keys.device)
        return tab_t.index_select(1, r).add_(keys)

    minus_plus: tuple[Tensor, Tensor] | None = None
    """The compiled build's ``(d+1, M)`` int32 "minus" and "plus" blur neighbours per direction
    (M where absent), or None."""

    @property
    def _lower(self) -> Tensor:
        if "_lower_t" not in self.__dict__:
            assert self.minus_plus is not None
            self._set_neighbours(*self.minus_plus, self._minus_is_upper)
        return self._lower_t

    @property
    def _upper(self) -> Tensor:
        self._lower  # noqa: B018 (made together)
        return self._upper_t

    def _set_neighbours(self, minus: Tensor, plus: Tensor, minus_is_upper: list[bool]) -> None:
        """Store ``(d+1, M)`` lower / upper neighbour ids (M: absent, the zero row) per
        direction, from the ``(d+1, M)`` minus / plus ids (which of the two is "lower" follows
        the C++ key order)."""
        self._minus_is_upper = list(minus_is_upper)
        swap = torch.tensor(minus_is_upper, device=minus.device)[:, None]
        dt = _index_dtype(self.num_vertices)  # int32 halves what the lattice keeps
        self._lower_t = torch.where(swap, plus, minus).to(dt)
        self._upper_t = torch.where(swap, minus, plus).to(dt)

    def _build_dense(self, vk: _VertexKeys) -> None:
        """Distinct vertices by a direct-address table over the compressed key range.

        Used when that range is small (the positional kernel: about one key per point).  The
        table holds the first (point, vertex) entry using each key, so vertex ids come in order
        of first use by a raster-order point, as the C++ hash table assigns them.
        """
        dev, d1 = self.device, self.d + 1
        n_total = vk.big_k.shape[0]
        n_ent = n_total * d1
        keys = self._vertex_keys(vk, vk.big_k, vk.rank_i)
        if self.batch > 1:
            img = torch.arange(self.batch, device=dev).repeat_interleave(self.num_pixels)
            keys += (img * (vk.r_radix * d1))[:, None]
        keys = keys.reshape(-1)
        # int32 ids and entries (they index the sparse matrices, which are int32 anyway)
        idx_dt = torch.int32 if n_ent < 2**31 - 1 else torch.int64
        ent = torch.arange(n_ent, dtype=idx_dt, device=dev)
        table = torch.full((self.num_keys + 1,), n_ent, dtype=idx_dt, device=dev)
        table.scatter_reduce_(0, keys, ent, "amin")
        first = table.index_select(0, keys)  # first entry using each entry's key
        is_first = first == ent
        # vertex id of each first entry, with one spare slot for "absent" (n_ent) -> -1
        vid_of_first = torch.empty(n_ent + 1, dtype=torch.int64, device=dev)
        torch.cumsum(is_first, 0, out=vid_of_first[:n_ent])
        vid_of_first[:n_ent] -= 1
        vid_of_first[n_ent] = -1
        vid = vid_of_first.index_select(0, first)
        del first
        first_ent = torch.nonzero(is_first).reshape(-1)
        m = first_ent.numel()
        self.num_vertices = m
        self._offsets = vid.view(n_total, d1).to(_index_dtype(m))
        # splat rows: entries grouped by vertex id, in entry order within a row
        counts = torch.bincount(vid, minlength=m + 1)  # (the zero row m: no entries)
        self._splat_crow = torch.zeros(m + 2, dtype=torch.int64, device=dev)
        torch.cumsum(counts, 0, out=self._splat_crow[1:])
        self._splat_order = _sort(vid, m)[1].to(idx_dt)
        # neighbours of every vertex, by direct look-up in a table of vertex ids
        vkeys = keys.index_select(0, first_ent)
        del keys
        table.fill_(m).index_copy_(0, vkeys, torch.arange(m, dtype=idx_dt, device=dev))
        vr = first_ent % d1
        m_ids = table.index_select(0, self._neighbour_keys(vkeys, vr, vk.deltas, False).view(-1))
        p_ids = table.index_select(0, self._neighbour_keys(vkeys, vr, vk.deltas, True).view(-1))
        self._set_neighbours(m_ids.view(d1, m), p_ids.view(d1, m), vk.minus_is_upper)

    def _build_sorted(self, vk: _VertexKeys) -> None:
        """Distinct vertices by sorting, for a large key range (the bilateral kernel).

        Many points share a simplex there, so the points are grouped by simplex first (one
        sort of N keys) and only the distinct simplices are expanded to vertices.
        """
        perm, sid, s_start, rep = self._group_by_simplex(vk)
        # (big_k and rank_i are transposed views of (d, N) data: gathering columns of the
        # contiguous originals is 3x faster than rows of the views)
        rep_k = vk.big_k.t().index_select(1, rep).t()
        rep_rank = vk.rank_i.t().index_select(1, rep).t()
        vkeys = self._vertex_keys(vk, rep_k, rep_rank)
        if self.batch > 1:
            vkeys += ((rep // self.num_pixels) * (vk.r_radix * (self.d + 1)))[:, None]
        del rep_k, rep_rank, rep
        uniq, u_perm, pv_sorted = self._number_vertices(vkeys, sid)
        del vkeys
        self._place_splat_entries(u_perm, pv_sorted, perm, sid, s_start)
        del u_perm, pv_sorted, perm, sid, s_start
        self._find_neighbours(uniq, vk)

    def _group_by_simplex(self, vk: _VertexKeys) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The points grouped by simplex: the sorting permutation (points in simplex order),
        each point's simplex id, where each simplex starts in that order, and each simplex's
        representative (first) point."""
        dev, d, d1 = self.device, self.d, self.d + 1
        big_k, rank_i, r_radix = vk.big_k, vk.rank_i, vk.r_radix
        n_total = big_k.shape[0]
        # simplex key: (image, K, rank of the first d coordinates)
        if r_radix * d1**d * self.batch >= _MAX_PACKED:
            raise ValueError(
                "features span too large a range for the permutohedral lattice keys "
                f"({r_radix * d1**d * self.batch} simplex keys); use larger standard deviations"
            )
        skey = ((big_k - vk.k_lo) * vk.radix_t).sum(dim=1)
        code = torch.zeros_like(skey)
        for i in range(d):
            code *= d1
            code += rank_i[:, i]
        skey *= d1**d
        skey += code
        if self.batch > 1:
            img = torch.arange(self.batch, device=dev).repeat_interleave(self.num_pixels)
            skey += img * (r_radix * d1**d)
        s_sorted, perm = _sort(skey, r_radix * d1**d * self.batch)
        new = torch.ones_like(s_sorted, dtype=torch.bool)
        torch.ne(s_sorted[1:], s_sorted[:-1], out=new[1:])
        s_start = torch.nonzero(new).reshape(-1)
        sid = torch.empty_like(perm)
        sid.index_copy_(0, perm, torch.cumsum(new, 0) - 1)
        rep = torch.full((s_start.numel(),), n_total, dtype=torch.int64, device=dev)
        rep.scatter_reduce_(0, sid, torch.arange(n_total, device=dev), "amin")
        return perm, sid, s_start, rep

    def _number_vertices(self, vkeys: Tensor, sid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Number the distinct vertices among the simplices' ``vkeys`` ``(S, d+1)``, in key
        order: ids enter no arithmetic (a vertex's blur reads its neighbours by key, the splat
        sums a row's entries, the slice reads by r), and key order needs no second sort, keeps
        every blur direction's neighbour ids monotone within a remainder class (streaming
        reads), and is the order searchsorted wants.  Sets :attr:`num_vertices` and the
        points' vertex ids; returns the distinct keys, the pairs (simplex, r) in key order and
        each of those pairs' vertex id."""
        u_sorted, u_perm = _sort(vkeys.reshape(-1), self.num_keys)
        new = torch.ones_like(u_sorted, dtype=torch.bool)
        torch.ne(u_sorted[1:], u_sorted[:-1], out=new[1:])
        uniq = u_sorted[new]
        m = uniq.numel()
        self.num_vertices = m
        pv_sorted = torch.cumsum(new, 0).sub_(1)  # id of each pair (simplex, r), key order
        del new, u_sorted
        pair_vid = torch.empty_like(u_perm).index_copy_(0, u_perm, pv_sorted)
        self._offsets = pair_vid.view(vkeys.shape).to(_index_dtype(m)).index_select(0, sid)
        return uniq, u_perm, pv_sorted

    def _place_splat_entries(
        self, p_order: Tensor, pv_sorted: Tensor, perm: Tensor, sid: Tensor, s_start: Tensor
    ) -> None:
        """The splat rows: for each vertex, the points of each simplex using it.  Pairs
        (simplex, r) are grouped by vertex (``p_order``, their vertex ids ``pv_sorted``); a
        pair's points follow each other in ``perm`` order, so entry (point i, r) goes to
        (offset of pair (simplex of i, r)) + (rank of i in its simplex)."""
        dev, d1, m = self.device, self.d + 1, self.num_vertices
        n_total, n_simp = perm.numel(), s_start.numel()
        s_count = torch.diff(s_start, append=s_start.new_tensor([n_total]))
        p_len = s_count.index_select(0, torch.div(p_order, d1, rounding_mode="floor"))
        counts = torch.zeros(m + 1, dtype=torch.int64, device=dev)  # (the zero row m: none)
        counts.index_add_(0, pv_sorted, p_len)
        self._splat_crow = torch.zeros(m + 2, dtype=torch.int64, device=dev)
        torch.cumsum(counts, 0, out=self._splat_crow[1:])
        p_off = torch.cumsum(p_len, 0).sub_(p_len)
        o_tab = torch.empty_like(p_off).index_copy_(0, p_order, p_off).view(n_simp, d1)
        pos_in_perm = torch.empty_like(perm).index_copy_(0, perm, torch.arange(n_total, device=dev))
        rank_in_simplex = pos_in_perm.sub_(s_start.index_select(0, sid))
        dest = o_tab.index_select(0, sid).add_(rank_in_simplex[:, None])
        o_dt = _index_dtype(n_total * d1)
        self._splat_order = torch.empty(n_total * d1, dtype=o_dt, device=dev)
        self._splat_order.index_copy_(
            0, dest.view(-1), torch.arange(n_total * d1, dtype=o_dt, device=dev)
        )

    def _find_neighbours(self, uniq: Tensor, vk: _VertexKeys) -> None:
        """Every vertex's blur neighbours among the distinct keys ``uniq`` (sorted):
        direction-major queries (sorted runs within each remainder class)."""
        dev, d1, m = self.device, self.d + 1, self.num_vertices
        vr = (uniq // vk.r_radix) % d1
        minus_k = self._neighbour_keys(uniq, vr, vk.deltas, False).view(-1)
        idx = _searchsorted(uniq, minus_k).clamp_(max=m - 1)
        found = uniq.index_select(0, idx) == minus_k
        minus_t = idx.masked_fill_(~found, m).view(d1, m)  # (d+1, m): ids are key order
        # "plus" is the inverse map of "minus" (u = minus(v) exactly when v = plus(u)); the
        # absent ones land in the spare slot m
        plus = torch.full((d1, m + 1), m, dtype=minus_t.dtype, device=dev)
        plus.scatter_(1, minus_t, torch.arange(m, dtype=minus_t.dtype, device=dev).expand(d1, m))
        self._set_neighbours(minus_t, plus[:, :m], vk.minus_is_upper)

    # ------------------------------------------------------------------ sparse operators
    def _operators(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Splat (R, N), slice (N, R) and per-direction blur (R, R) CSR matrices, with
        R = :attr:`num_rows`."""
        if dtype in self._cache:
            return self._cache[dtype]
        dev, d1 = self.device, self.d + 1
        n_total, m = self._offsets.shape[0], self.num_rows
        idx_dt = torch.int32 if max(n_total * d1, m * 3) < 2**31 - 1 else torch.int64
        bary = self._bary.to(dtype).reshape(-1)
        # slice: row i holds its d+1 vertices (the sparse kernels accept unsorted columns)
        crow = torch.arange(0, n_total * d1 + 1, d1, dtype=idx_dt, device=dev)
        slice_m = csr_matrix(
            crow, self._offsets.reshape(-1).to(idx_dt), bary * self.alpha, size=(n_total, m)
        )
        ops = (self.splat_matrix(bary), slice_m, self.blur_matrices(dtype))
        self._cache[dtype] = ops
        return ops

    def splat_matrix(self, weights: Tensor) -> Tensor:
        """The (R, N) splat matrix (R = :attr:`num_rows`, the last row empty) with ``weights``
        ``(N * (d+1),)`` (point-major) as values: the barycentric weights, or those times a
        per-point factor (folded normalization)."""
        d1 = self.d + 1
        crow, order = self._splat_rows()
        n_total, m = self._offsets.shape[0], self.num_rows
        idx_dt = torch.int32 if n_total * d1 < 2**31 - 1 else torch.int64
        return csr_matrix(
            crow.to(idx_dt),
            torch.div(order, d1, rounding_mode="floor").to(idx_dt),
            weights.index_select(0, order),
            size=(m, n_total),
        )

    def blur_matrices(self, dtype: torch.dtype) -> list[Tensor]:
        """The d+1 blur matrices (R, R), R = :attr:`num_rows`, one per lattice direction: rows
        [lower, self, upper] with weights [1/2, 1, 1/2].  An absent neighbour is the zero row
        (the C++ adds a zero for it: the same sum), so every row has three entries and the
        matrices share one row pointer and one value array.  (Leaving absent entries out, as
        an earlier version did, saved no time in the products, where they read a row that stays
        in cache, and its compaction cost time.)"""
        # (the compaction: 30-40 ms per 500x375 image; benchmarks/results/crf.md, item 3 of
        # issue 14's log)
        if dtype in self._blur_cache:
            return self._blur_cache[dtype]
        dev, r = self.device, self.num_rows
        m = r - 1
        idx_dt = torch.int32 if r * 3 < 2**31 - 1 else torch.int64
        d1 = self.d + 1
        c = torch.empty(d1, r, 3, dtype=idx_dt, device=dev)
        c[:, :m, 0] = self._lower
        c[:, :, 1] = torch.arange(r, dtype=idx_dt, device=dev)
        c[:, :m, 2] = self._upper
        c[:, m, 0::2] = m  # the zero row's own row reads only itself
        crow = torch.arange(0, 3 * r + 1, 3, dtype=idx_dt, device=dev)
        val = torch.tensor([0.5, 1.0, 0.5], dtype=dtype, device=dev).repeat(r)
        blurs = [csr_matrix(crow, c[j].view(-1), val, size=(r, r)) for j in range(d1)]
        self._blur_cache[dtype] = blurs
        return blurs

    def blur_composite(self, dtype: torch.dtype) -> Tensor:
        """All d+1 blur passes as one (R, R) matrix ``B_d ... B_0`` (cached per dtype).

        Entry (v, u) sums the weights of the paths from v to u with one step (lower, none or
        upper: weight 1/2, 1, 1/2) per direction, d first, that meet no absent vertex, as
        the d+1 passes do.  Paths with the same total displacement end at the same vertex
        (one "minus" move along every direction is no move: the directions sum to zero), so a
        row has one entry per distinct displacement, 19 for d = 2, the zero row where no path
        arrives.  For the positional kernel with many labels: one streaming pass over the
        vertex values instead of d+1; with few labels the d+1 thin passes are cheaper.  The
        sums differ from the passes' only in float rounding.
        """
        # (500x375, 150 labels: 22 against 41 ms; 21 labels: 6.6 against 5.1 ms.
        # benchmarks/results/crf.md, item 6 of issue 14's log)
        if dtype in self._composite:
            return self._composite[dtype]
        if self.d > 3:
            raise ValueError(f"a composite blur has 3^{self.d + 1} paths per row; d = {self.d}")
        dev, r, d1 = self.device, self.num_rows, self.d + 1
        zero = r - 1
        pad = torch.full((d1, 1), zero, dtype=self._lower.dtype, device=dev)
        lower = torch.cat([self._lower, pad], 1)  # the zero row's neighbours: itself
        upper = torch.cat([self._upper, pad], 1)
        # every path: a step in {-1, 0, +1} per direction, applied d = 0 first (the first pass)
        # to the values, i.e. read from v along direction d first
        ends = {(): torch.arange(r, dtype=lower.dtype, device=dev)}
        for j in reversed(range(d1)):
            nxt = {}
            for steps, at in ends.items():
                nxt[(0, *steps)] = at
                nxt[(-1, *steps)] = lower[j].index_select(0, at)
                nxt[(1, *steps)] = upper[j].index_select(0, at)
            ends = nxt
        # displacement in "minus" moves (lower is the minus neighbour unless swapped), up to
        # one move along every direction
        sign = [-1 if up else 1 for up in self._minus_is_upper]
        groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for steps in ends:
            moves = [-a * sg for a, sg in zip(steps, sign)]
            low = min(moves)
            groups.setdefault(tuple(a - low for a in moves), []).append(steps)
        cols = torch.empty(r, len(groups), dtype=lower.dtype, device=dev)
        vals = torch.zeros(r, len(groups), dtype=dtype, device=dev)
        for g, members in enumerate(groups.values()):
            col = torch.full((r,), -1, dtype=lower.dtype, device=dev)
            for steps in members:
                at = ends[steps]
                present = at != zero
                torch.maximum(col, torch.where(present, at, -1), out=col)
                vals[:, g] += present.to(dtype) * (0.5 ** sum(map(abs, steps)))
            cols[:, g] = col.masked_fill_(col < 0, zero)
        width = len(groups)
        idx_dt = torch.int32 if r * width < 2**31 - 1 else torch.int64
        crow = torch.arange(0, width * r + 1, width, dtype=idx_dt, device=dev)
        comp = csr_matrix(crow, cols.view(-1).to(idx_dt), vals.view(-1), size=(r, r))
        self._composite[dtype] = comp
        return comp

    def degree(self) -> Tensor:
        """``filter(ones)`` as ``(B, N, 1)`` float32 (the row sums of the kernel), without
        building the splat and slice matrices: splat by ``index_add_`` (which sums in point
        order, as the C++ splat does), blur, slice by a gather."""
        if self.minus_plus is not None:  # the compiled build: the compiled filter
            deg = native.lattice_degree(self._offsets, self._bary, *self.minus_plus, self.alpha)
            return deg.view(self.batch, self.num_pixels, 1)
        n_total, d1 = self._offsets.shape[0], self.d + 1
        idx = self._offsets.reshape(-1)
        x = torch.zeros(self.num_rows, 1, dtype=torch.float32, device=self.device)
        x.view(-1).index_add_(0, idx, self._bary.reshape(-1))
        for bm in self.blur_matrices(torch.float32):
            x = bm @ x
        g = x.view(-1).index_select(0, idx).view(n_total, d1).mul_(self._bary)
        return g.sum(dim=1).mul_(self.alpha).view(self.batch, self.num_pixels, 1)

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
