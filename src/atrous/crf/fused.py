"""The fast path of :func:`~atrous.crf.dense_crf`: mean field as a few fused sparse products.

The iterations of :func:`~atrous.crf.meanfield.mean_field` (Krähenbühl & Koltun 2011, alg. 1)
with lattice kernels and no autograd: every kernel's splat, blur and slice matrices (Adams et
al. 2010) are built once per call with the normalization, the lattice's alpha and the kernel
weight folded in, so that an iteration is one splat product per kernel, the blur chains and one
slice product that writes the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .kernels import GaussianKernel
from .lattice import csr_matrix

__all__ = ["FusedMeanField"]

# From this many labels, a kernel with d <= 2 (the positional one) blurs in one composite pass
# and the softmax is torch's row kernel: both measured at 500x375 (blur: 64 labels 12 against
# 15 ms, 21 labels 6.6 against 5.1; exp + sums + scale against softmax: 150 labels 21 against
# 15 ms, 64 labels 3.8 against 6.3; benchmarks/results/crf.md, item 6 of issue 14's log).
COMPOSITE_BLUR_MIN_LABELS = 64
ROW_SOFTMAX_MIN_LABELS = 128


class FusedMeanField:
    """Mean field with all lattice kernels fused into a few sparse products per iteration.

    The hot path of :func:`~atrous.crf.dense_crf` (no autograd).  With ``A_k`` each kernel's
    splat matrix (normalization folded in), ``B_k`` its blur chain and ``Z`` the side-by-side
    slice matrices (normalization, alpha and kernel weight folded in), an iteration is

        G_k = A_k q;  blur each G_k (ping-pong with a shared scratch);  logits = -U + Z G

    so the logits are written once, and the labels ride along as the contiguous
    inner dim of every product.  Buffers are allocated once per call and reused.  ``labels``
    (the label count it will run with) picks, for many labels, the composite blur of a
    low-dimensional kernel and torch's row softmax (``COMPOSITE_BLUR_MIN_LABELS``,
    ``ROW_SOFTMAX_MIN_LABELS``).
    """

    def __init__(
        self,
        kernels: Sequence[tuple[GaussianKernel, float]],
        dtype: torch.dtype,
        with_unary: bool = True,
        labels: int = 0,
    ) -> None:
        lats = [(k.lattice, k.norm(dtype).reshape(-1), float(w)) for k, w in kernels]
        assert all(lat is not None for lat, _, _ in lats)
        n = lats[0][0].num_points
        dev = lats[0][0].device
        self.sizes = [lat.num_rows for lat, _, _ in lats]
        self.m_total = sum(self.sizes)
        starts = [0]
        for m in self.sizes[:-1]:
            starts.append(starts[-1] + m)
        self.starts = starts
        # G: every kernel's vertex values (rows 0..M), one scratch block as large as the
        # largest kernel for the blur's ping-pong (a kernel with an odd number of blur passes
        # splats into the scratch, so that its result always ends in its own rows), then -U.
        self.scratch = max(self.sizes)
        # With with_unary, the slice matrix gets a first column of ones that reads -U from
        # the last rows of G (written once per run), so the slice product writes the logits
        # directly instead of copying -U into them every iteration.
        self.with_unary = with_unary
        width = int(with_unary) + sum(lat.d + 1 for lat, _, _ in lats)
        n_cols = self.m_total + self.scratch + (n if with_unary else 0)
        # one splat entry per (point, vertex of its simplex)
        nnz_splat = sum(lat.barycentric.numel() for lat, _, _ in lats)
        idx_dt = torch.int32 if max(n_cols, n * width, nnz_splat) < 2**31 - 1 else torch.int64
        self.splats: list[Tensor] = []
        sl_cols = torch.empty(n, width, dtype=idx_dt, device=dev)
        sl_vals = torch.empty(n, width, dtype=dtype, device=dev)
        if with_unary:
            torch.arange(self.m_total + self.scratch, n_cols, out=sl_cols[:, 0])
            sl_vals[:, 0] = 1.0
        self.blurs = []
        k = int(with_unary)
        self.row_softmax = labels >= ROW_SOFTMAX_MIN_LABELS
        for (kern, _), (lat, norm, w), start in zip(kernels, lats, starts):
            if labels >= COMPOSITE_BLUR_MIN_LABELS and lat.d <= 2:
                blurs = [lat.blur_composite(dtype)]
            else:
                blurs = lat.blur_matrices(dtype)
            self.splats.append(kern.normalized_splat(dtype))  # bary * norm of the point
            self.blurs.append(blurs)
            d1 = lat.d + 1
            torch.add(lat.vertex_ids, start, out=sl_cols[:, k : k + d1])
            torch.mul(lat.barycentric, norm[:, None], out=sl_vals[:, k : k + d1])
            sl_vals[:, k : k + d1] *= lat.alpha * w
            k += d1
        crow = torch.arange(0, n * width + 1, width, dtype=idx_dt, device=dev)
        self.slice = csr_matrix(crow, sl_cols.view(-1), sl_vals.view(-1), size=(n, n_cols))

    def run(
        self, probs: Tensor, iterations: int, compat: Tensor | None, out: Tensor | None = None
    ) -> Tensor:
        """Mean field from ``probs`` ``(B*N, C)`` (entries > 0, rows summing to ~1; -U = log p).

        ``probs`` is used as the work buffer.  Returns Q as ``(B*N, C)``, or writes it to
        ``out`` ``(B, C, N)`` (any float dtype), transposed in cache-sized blocks together with
        the last normalization, and returns ``out``.
        """
        bn, c = probs.shape
        if compat is not None and self.with_unary:
            raise ValueError("a compat matrix needs FusedMeanField(with_unary=False)")
        g, neg_u = self._vertex_values(probs)
        logits_into = self._logits_writer(g, neg_u, compat)
        q = probs
        ones = torch.ones(c, dtype=q.dtype, device=q.device)
        # Q0 = softmax(-U) = p / sum(p).  The softmax below is exp + row sums by a
        # matrix-vector product + multiply: a row-wise max over a few labels is slow (the label
        # dim is tiny).  No max is subtracted: -U = log p, so max_l exp(-U) >= 1/C, and with
        # non-negative messages the largest exp only grows (no underflow).  An iteration whose
        # sums are not in a safe range (huge or negative kernel weights, a compat matrix)
        # falls back to the exact softmax.  ``inv`` (1 / the row sums) is always ``sums``'s
        # buffer.
        sums = torch.empty(bn, dtype=q.dtype, device=q.device)
        torch.mv(q, ones, out=sums)
        inv = sums.reciprocal_()
        normalized = False
        for _ in range(iterations):
            if not normalized:
                q.mul_(inv.unsqueeze(1))
            self._splat_and_blur(q, g)
            # Q has been splatted: the logits overwrite it (no separate logits buffer) and
            # are exponentiated in place
            logits_into(q)
            if self.row_softmax and compat is None:  # wide rows: one fused row kernel
                torch.softmax(q, -1, out=q)
                if not normalized:
                    inv.fill_(1.0)
                normalized = True
                continue
            inv = _exp_and_row_scales(q, ones, sums, logits_into)
        if out is None:
            return q.mul_(inv.unsqueeze(1))
        _scale_transposed(q, inv, out)
        return out

    def _vertex_values(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        """G, the buffer of every kernel's vertex values (rows 0..M), the blur's scratch
        rows, then (with_unary) -U; and -U = log p, written once (with_unary: into the rows of
        G that the slice reads)."""
        bn, c = probs.shape
        top = self.m_total + self.scratch
        g = torch.empty(
            top + (bn if self.with_unary else 0), c, dtype=probs.dtype, device=probs.device
        )
        neg_u = torch.log(probs, out=g[top:]) if self.with_unary else torch.log(probs)
        return g, neg_u

    def _logits_writer(
        self, g: Tensor, neg_u: Tensor, compat: Tensor | None
    ) -> Callable[[Tensor], None]:
        """``logits_into(dst)``: the slice product of the blurred vertex values ``g``, plus
        -U, through the compatibility when there is one, written into ``dst``."""
        if compat is None:
            if self.with_unary:  # the slice matrix's first column reads -U from G
                return lambda dst: torch.addmm(dst, self.slice, g, beta=0, out=dst)
            return lambda dst: torch.addmm(neg_u, self.slice, g, out=dst)
        msg = torch.empty_like(neg_u)
        mu_t = -compat.to(neg_u.dtype).T.contiguous()

        def logits_into(dst: Tensor) -> None:
            torch.addmm(neg_u, self.slice, g, beta=0, out=msg)
            torch.addmm(neg_u, msg, mu_t, out=dst)

        return logits_into

    def _splat_and_blur(self, q: Tensor, g: Tensor) -> None:
        """Each kernel's splat of ``q`` into its rows of ``g``, then its blur passes."""
        m = self.m_total
        for start, size, splat, blurs in zip(self.starts, self.sizes, self.splats, self.blurs):
            src, dst = g[start : start + size], g[m : m + size]
            if len(blurs) % 2:  # an odd number of passes: start in the scratch
                src, dst = dst, src
            # one splat product per kernel: the sparse kernel splits rows evenly between
            # threads, and stacked (many short positional rows, few long bilateral ones)
            # they were split unevenly (1000x750: 34 ms stacked vs 25 ms apart)
            torch.addmm(src, splat, q, beta=0, out=src)
            for bm in blurs:
                torch.addmm(dst, bm, src, beta=0, out=dst)
                src, dst = dst, src


def _exp_and_row_scales(
    q: Tensor, ones: Tensor, sums: Tensor, logits_into: Callable[[Tensor], None]
) -> Tensor:
    """Exponentiate the logits ``q`` in place and return 1 / their row sums (in ``sums``'s
    buffer); where the sums leave the safe range, recompute the logits (G is intact) and
    take the exact softmax instead, with scales of 1."""
    q.exp_()
    torch.mv(q, ones, out=sums)
    lo, hi = sums.amin(), sums.amax()
    if bool((lo >= 1e-20) & (hi <= 1e30)):
        return sums.reciprocal_()
    logits_into(q)
    q.copy_(torch.softmax(q, dim=-1))
    return sums.fill_(1.0)


def _scale_transposed(q: Tensor, inv: Tensor, out: Tensor, block: int = 8192) -> None:
    """``out[b, :, i] = q[b*N + i, :] * inv[b*N + i]`` for ``out`` of shape ``(B, C, N)``.

    In row blocks that fit the L2 cache: a whole-array transposing write re-reads every cache
    line of q once per label.
    """
    # (1000x750, 21 labels: 25 ms whole, 16 ms blocked; measured with benchmarks/bench_crf.py)
    b, c, n = out.shape
    qv, iv = q.view(b, n, c), inv.view(b, n)
    for i in range(b):
        for a in range(0, n, block):
            e = min(a + block, n)
            torch.mul(qv[i, a:e].t(), iv[i, a:e], out=out[i, :, a:e])
