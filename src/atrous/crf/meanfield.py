"""Mean-field inference in the fully connected CRF (Krähenbühl & Koltun 2011, sec. 3-4).

The CRF has unary energies ``U_i(l)`` (here ``-log p_i(l)`` of the network's probabilities) and
pairwise energies ``mu(l, l') sum_m w_m k_m(f_i, f_j)`` with two Gaussian kernels over all pixel
pairs: a *smoothness* kernel on positions (std ``pos_xy_std``, weight ``pos_w``) and an
*appearance* (bilateral) kernel on positions and RGB (stds ``bi_xy_std``, ``bi_rgb_std``, weight
``bi_w``).  DeepLab v1 (sec. 4.3) / v2 (sec. 3.3) post-process their score maps this way; the
defaults are DeepLab v2's PASCAL VOC setting.

Each kernel is normalized as densecrf's ``NORMALIZE_SYMMETRIC`` (the default of pydensecrf's
``DenseCRF2D.addPairwise*``): ``K~ = D^-1/2 K D^-1/2`` with ``D = diag(K 1)``.  The update is

    Q_i(l)  ∝  exp(-U_i(l) - sum_l' mu(l, l') sum_m w_m (K~_m Q)_i(l'))

With the Potts model ``mu(l, l') = [l != l']`` this equals densecrf's ``-U + sum_m w_m K~_m Q``
(the two differ by a per-pixel constant that the softmax removes), which is what is computed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .exact import exact_filter
from .heap import retained_heap
from .lattice import PermutohedralLattice, csr_matrix

__all__ = [
    "DenseCRF",
    "GaussianKernel",
    "bilateral_features",
    "clear_kernel_cache",
    "dense_crf",
    "mean_field",
    "positional_features",
    "positional_kernel",
]


# When a dict, dense_crf records perf_counter() stamps of its stages in it (benchmarks/bench_crf.py).
_STAGE_TIMES: dict[str, float] | None = None
_CLOCK = time.perf_counter


def _stamp(name: str) -> None:
    if _STAGE_TIMES is not None:
        _STAGE_TIMES[name] = _CLOCK()


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
        if dtype not in self._norm:
            self._norm[dtype] = self._norm32.to(dtype)
        return self._norm[dtype]

    def normalized_splat(self, dtype: torch.dtype) -> Tensor:
        """The lattice's splat matrix with ``D^-1/2`` folded in (cached per dtype)."""
        if dtype not in self._splat:
            lat = self.lattice
            assert lat is not None
            w = lat._bary.to(dtype) * self.norm(dtype).reshape(-1, 1)
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


class _KernelFilter(torch.autograd.Function):
    """``y = N K N x``; its vector-Jacobian product is ``N K^T N g`` (the reversed blur)."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, kernel: GaussianKernel, reverse: bool) -> Tensor:
        ctx.kernel, ctx.reverse = kernel, reverse
        return kernel._apply(values, reverse)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return ctx.kernel(grad.contiguous(), reverse=not ctx.reverse), None, None


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


class _FusedMeanField:
    """Mean field with all lattice kernels fused into a few sparse products per iteration.

    The hot path of :func:`dense_crf` (no autograd).  With ``A_k`` each kernel's splat matrix
    (normalization folded in), ``B_k`` its blur chain and ``Z`` the side-by-side slice matrices
    (normalization, alpha and kernel weight folded in), an iteration is

        G_k = A_k q;  blur each G_k in place (ping-pong);  logits = -U + Z G

    so the logits are written once, and the labels ride along as the contiguous
    inner dim of every product.  Buffers are allocated once per call and reused.
    """

    def __init__(
        self,
        kernels: Sequence[tuple[GaussianKernel, float]],
        dtype: torch.dtype,
        with_unary: bool = True,
    ) -> None:
        lats = [(k.lattice, k.norm(dtype).reshape(-1), float(w)) for k, w in kernels]
        assert all(lat is not None for lat, _, _ in lats)
        n = lats[0][0]._offsets.shape[0]
        dev = lats[0][0].device
        self.n = n
        self.sizes = [lat.num_vertices for lat, _, _ in lats]
        self.m_total = sum(self.sizes)
        starts = [0]
        for m in self.sizes[:-1]:
            starts.append(starts[-1] + m)
        self.starts = starts
        # With with_unary, the slice matrix gets a first column of ones that reads -U from
        # rows 2M.. of G (written once per run), so the slice product writes the logits
        # directly instead of copying -U into them every iteration.
        self.with_unary = with_unary
        width = int(with_unary) + sum(lat.d + 1 for lat, _, _ in lats)
        n_cols = 2 * self.m_total + (n if with_unary else 0)
        nnz_splat = sum(lat._splat_order.numel() for lat, _, _ in lats)
        idx_dt = torch.int32 if max(n_cols, n * width, nnz_splat) < 2**31 - 1 else torch.int64
        self.splats: list[Tensor] = []
        sl_cols = torch.empty(n, width, dtype=idx_dt, device=dev)
        sl_vals = torch.empty(n, width, dtype=dtype, device=dev)
        if with_unary:
            torch.arange(2 * self.m_total, n_cols, out=sl_cols[:, 0])
            sl_vals[:, 0] = 1.0
        self.blurs = []
        k = int(with_unary)
        for (kern, _), (lat, norm, w), start in zip(kernels, lats, starts):
            blurs = lat._blur_ops(dtype)
            self.splats.append(kern.normalized_splat(dtype))  # bary * norm of the point
            self.blurs.append(blurs)
            # after an odd number of blur passes the result sits in the second half of G
            half = self.m_total if len(blurs) % 2 else 0
            d1 = lat.d + 1
            torch.add(lat._offsets, start + half, out=sl_cols[:, k : k + d1])
            torch.mul(lat._bary, norm[:, None], out=sl_vals[:, k : k + d1])
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
        dev, dt = probs.device, probs.dtype
        if compat is not None and self.with_unary:
            raise ValueError("a compat matrix needs _FusedMeanField(with_unary=False)")
        m = self.m_total
        g = torch.empty(2 * m + (bn if self.with_unary else 0), c, dtype=dt, device=dev)
        # -U = log p, written once (with_unary: into the rows of G that the slice reads)
        neg_u = torch.log(probs, out=g[2 * m :]) if self.with_unary else torch.log(probs)
        q = probs
        sums = torch.empty(bn, dtype=dt, device=dev)
        ones = torch.ones(c, dtype=dt, device=dev)
        # Q0 = softmax(-U) = p / sum(p).  The softmax below is exp + row sums by a
        # matrix-vector product + multiply: a row-wise max over a few labels is slow (the label
        # dim is tiny).  No max is subtracted: -U = log p, so max_l exp(-U) >= 1/C, and with
        # non-negative messages the largest exp only grows (no underflow).  An iteration whose
        # sums are not in a safe range (huge or negative kernel weights, a compat matrix)
        # falls back to the exact softmax.
        torch.mv(q, ones, out=sums)
        inv = sums.reciprocal_()
        msg = torch.empty_like(q) if compat is not None else None
        mu_t = None if compat is None else -compat.to(dt).T.contiguous()

        def logits_into(dst: Tensor) -> None:
            if compat is None:
                if self.with_unary:
                    torch.addmm(dst, self.slice, g, beta=0, out=dst)
                else:
                    torch.addmm(neg_u, self.slice, g, out=dst)
            else:
                torch.addmm(neg_u, self.slice, g, beta=0, out=msg)
                torch.addmm(neg_u, msg, mu_t, out=dst)

        for _ in range(iterations):
            q.mul_(inv.unsqueeze(1))
            for start, size, splat, blurs in zip(self.starts, self.sizes, self.splats, self.blurs):
                src, dst = g[start : start + size], g[m + start : m + start + size]
                # one splat product per kernel: the sparse kernel splits rows evenly between
                # threads, and stacked (many short positional rows, few long bilateral ones)
                # they were split unevenly (1000x750: 34 ms stacked vs 25 ms apart)
                torch.addmm(src, splat, q, beta=0, out=src)
                for bm in blurs:
                    torch.addmm(dst, bm, src, beta=0, out=dst)
                    src, dst = dst, src
            # Q has been splatted: the logits overwrite it (no separate logits buffer) and
            # are exponentiated in place
            logits_into(q)
            q.exp_()
            torch.mv(q, ones, out=sums)
            lo, hi = sums.amin(), sums.amax()
            if bool((lo >= 1e-20) & (hi <= 1e30)):
                inv = sums.reciprocal_()
            else:  # recompute the logits (G is intact) for the exact softmax
                logits_into(q)
                q.copy_(torch.softmax(q, dim=-1))
                inv.fill_(1.0)
        if out is None:
            return q.mul_(inv.unsqueeze(1))
        _scale_transposed(q, inv, out)
        return out


def _scale_transposed(q: Tensor, inv: Tensor, out: Tensor, block: int = 8192) -> None:
    """``out[b, :, i] = q[b*N + i, :] * inv[b*N + i]`` for ``out`` of shape ``(B, C, N)``.

    In row blocks that fit the L2 cache: a whole-array transposing write re-reads every cache
    line of q once per label (1000x750, 21 labels: 25 ms blocked to 16 ms).
    """
    b, c, n = out.shape
    qv, iv = q.view(b, n, c), inv.view(b, n)
    for i in range(b):
        for a in range(0, n, block):
            e = min(a + block, n)
            torch.mul(qv[i, a:e].t(), iv[i, a:e], out=out[i, :, a:e])


@dataclass(frozen=True)
class DenseCRF:
    """Dense-CRF parameters (defaults: DeepLab v2, PASCAL VOC); call it like :func:`dense_crf`."""

    iterations: int = 10
    pos_w: float = 3.0
    pos_xy_std: float = 1.0
    bi_w: float = 4.0
    bi_xy_std: float = 67.0
    bi_rgb_std: float = 3.0

    def __call__(self, image: Any, probs: Any, **kwargs: Any) -> Any:
        return dense_crf(image, probs, **{**asdict(self), **kwargs})

    def config(self) -> dict[str, Any]:
        """The parameters, for results' metadata (``Segmenter.config()`` records them)."""
        return {"method": "dense_crf", **asdict(self)}


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        try:  # any positive-stride layout is read in place (the copies below handle it)
            return torch.from_numpy(x)
        except (ValueError, TypeError):
            return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _check_inputs(image: Any, probs: Any) -> tuple[Tensor, Tensor, bool]:
    """Validate and return image (B, H, W, 3) uint8, probs (B, H, W, C) float, batched flag."""
    img, p = _as_tensor(image, "image"), _as_tensor(probs, "probs")
    if img.dtype != torch.uint8:
        raise TypeError(f"image must be uint8 (0-255 RGB), got dtype {img.dtype}")
    if not p.is_floating_point():
        raise TypeError(f"probs must be a floating-point array of probabilities, got {p.dtype}")
    if img.dim() == 3 and p.dim() == 3:
        if img.shape[2] != 3:
            raise ValueError(
                f"an unbatched image must have shape (H, W, 3), got {tuple(img.shape)}"
            )
        img, p, batched = img.unsqueeze(0), p.permute(1, 2, 0).unsqueeze(0), False
    elif img.dim() == 4 and p.dim() == 4:
        if img.shape[1] != 3:
            raise ValueError(
                f"a batched image must have shape (N, 3, H, W), got {tuple(img.shape)}"
            )
        if img.shape[0] != p.shape[0]:
            raise ValueError(f"image batch {img.shape[0]} does not match probs batch {p.shape[0]}")
        img, p, batched = img.permute(0, 2, 3, 1), p.permute(0, 2, 3, 1), True
    else:
        raise ValueError(
            "expected image (H, W, 3) with probs (C, H, W), or image (N, 3, H, W) with probs "
            f"(N, C, H, W); got image {tuple(img.shape)} and probs {tuple(p.shape)}"
        )
    if img.shape[1:3] != p.shape[1:3]:
        raise ValueError(
            f"image size (H, W) = {tuple(img.shape[1:3])} does not match probs size "
            f"{tuple(p.shape[1:3])}"
        )
    if p.shape[-1] < 1 or p.shape[1] * p.shape[2] == 0:
        raise ValueError(
            f"probs must have at least one label and one pixel, got {tuple(probs.shape)}"
        )
    if img.device != p.device:
        raise ValueError(f"image is on {img.device} but probs are on {p.device}")
    # Checked on the caller's (C, H, W) layout, where the label sum is a contiguous reduction.
    # NaN fails p >= 0; an infinite value makes its pixel's sum infinite.
    raw = _as_tensor(probs, "probs")
    sums = raw.sum(dim=0 if raw.dim() == 3 else 1, dtype=torch.float32)
    # (amin/amax propagate NaN and are much faster than min()/aminmax() on CPU)
    lo, hi = sums.amin(), sums.amax()
    if not bool(raw.amin() >= 0) or not bool(torch.isfinite(hi)):
        raise ValueError("probs must be finite and non-negative (probabilities, not logits)")
    if bool((lo < 1.0 - 1e-3) | (hi > 1.0 + 1e-3)):
        raise ValueError(
            "probs must sum to 1 over the label dim (got sums in "
            f"[{lo.item():.4g}, {hi.item():.4g}]); apply softmax to logits first"
        )
    return img, p, batched


@retained_heap()  # (a contextmanager is also a decorator, entered on every call)
def dense_crf(
    image: Any,
    probs: Any,
    iterations: int = 10,
    pos_w: float = 3.0,
    pos_xy_std: float = 1.0,
    bi_w: float = 4.0,
    bi_xy_std: float = 67.0,
    bi_rgb_std: float = 3.0,
    compat: Any = None,
    method: str = "lattice",
) -> Any:
    """Refine per-pixel class probabilities with a fully connected CRF (mean field).

    Args:
        image: uint8 RGB, ``(H, W, 3)`` or ``(N, 3, H, W)``, numpy or torch.
        probs: probabilities ``(C, H, W)`` or ``(N, C, H, W)`` summing to 1 over C.
        iterations: mean-field iterations (DeepLab uses 10).
        pos_w, pos_xy_std: weight and spatial std of the smoothness kernel.
        bi_w, bi_xy_std, bi_rgb_std: weight, spatial std and colour std of the appearance kernel.
        compat: optional ``(C, C)`` label compatibility in the energy sense (``None``: Potts).
        method: ``"lattice"`` (permutohedral, default) or ``"exact"`` (O(N^2), tiny images).

    Returns:
        Refined probabilities with the same container type, layout and dtype as ``probs``.

    CPU memory freed during the call stays in the process heap for the next call (up to 1 GiB
    by default; see :mod:`atrous.crf.heap`, ``set_heap_retention(0)`` turns it off).
    """
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    for name, val in (
        ("pos_xy_std", pos_xy_std),
        ("bi_xy_std", bi_xy_std),
        ("bi_rgb_std", bi_rgb_std),
    ):
        if not val > 0:
            raise ValueError(f"{name} must be positive, got {val}")
    _stamp("start")
    img, p, batched = _check_inputs(image, probs)
    _stamp("checked")
    b, h, w, c = p.shape
    mu = None
    if compat is not None:
        mu = _as_tensor(compat, "compat").to(device=p.device, dtype=torch.float32)
        if mu.shape != (c, c):
            raise ValueError(f"compat must have shape ({c}, {c}), got {tuple(mu.shape)}")
    # one transposing copy to (B*H*W, C), labels contiguous; -U = log p
    q0 = torch.empty((b * h * w, c), dtype=torch.float32, device=p.device)
    tiny = torch.finfo(torch.float32).tiny
    if p.dtype == torch.float32:  # a clamp reading the transposed layout is a fast copy
        torch.clamp_min(p, tiny, out=q0.view(b, h, w, c))
    else:  # (the clamp must happen in float32: tiny is 0 in float16)
        q0.view(b, h, w, c).copy_(p)
        q0.clamp_min_(tiny)
    _stamp("unary")
    kernels = []
    if pos_w != 0:
        kernels.append((positional_kernel(b, h, w, pos_xy_std, p.device, method), pos_w))
        _stamp("positional")
    if bi_w != 0:
        kernels.append(
            (GaussianKernel(bilateral_features(img, bi_xy_std, bi_rgb_std), method), bi_w)
        )
        _stamp("bilateral")
    if method == "lattice" and kernels:
        fused = _FusedMeanField(kernels, torch.float32, with_unary=mu is None)
        _stamp("built")
        q = torch.empty((b, c, h, w), dtype=p.dtype, device=p.device)
        fused.run(q0, iterations, mu, out=q.view(b, c, h * w))
    else:
        _stamp("built")
        q = mean_field(q0.log_().neg_().view(b, h * w, c), kernels, iterations, mu)
        q = q.reshape(b, h, w, c).permute(0, 3, 1, 2).to(p.dtype).contiguous()
    if not batched:
        q = q[0]
    out = q.numpy() if isinstance(probs, np.ndarray) else q
    _stamp("end")
    return out
