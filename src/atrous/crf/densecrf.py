"""The dense-CRF post-processing of DeepLab v1 (sec. 4.3) / v2 (sec. 3.3): :func:`dense_crf`.

Refines a network's probabilities with the fully connected CRF of Krähenbühl & Koltun (2011):
the smoothness and appearance kernels of :mod:`atrous.crf.kernels`, mean field as in
:mod:`atrous.crf.meanfield` (run through the fused products of :mod:`atrous.crf.fused` on the
lattice), with parity to pydensecrf's C++.  :class:`DenseCRF` is the same call with fixed
parameters (the ``crf`` hook of :class:`~atrous.inference.Segmenter`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import native
from .fused import FusedMeanField
from .heap import retained_heap, rss_bytes, trim_if_grown
from .kernels import GaussianKernel, bilateral_features, positional_kernel
from .meanfield import mean_field
from .params import CRFParams, ParamsSource
from .timing import StageTimes

__all__ = ["DenseCRF", "dense_crf"]


def _from_numpy(x: np.ndarray) -> Tensor:
    try:  # any positive-stride layout is read in place (the copies below handle it)
        return torch.from_numpy(x)
    except (ValueError, TypeError):
        return torch.from_numpy(np.ascontiguousarray(x))


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        with warnings.catch_warnings():  # a read-only array (np.asarray of a PIL image) is
            # read, never written, here: PyTorch's warning about it does not apply
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return _from_numpy(x)
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


def _no_stamp(stage: str) -> None:
    """The stage stamp of a call without ``profile``."""


@retained_heap()  # (a contextmanager is also a decorator, entered on every call)
def dense_crf(
    image: Any,
    probs: Any,
    iterations: int = CRFParams.iterations,
    pos_w: float = CRFParams.pos_w,
    pos_xy_std: float = CRFParams.pos_xy_std,
    bi_w: float = CRFParams.bi_w,
    bi_xy_std: float = CRFParams.bi_xy_std,
    bi_rgb_std: float = CRFParams.bi_rgb_std,
    compat: Any = None,
    method: str = "lattice",
    profile: StageTimes | None = None,
) -> Any:
    """Refine per-pixel class probabilities with a fully connected CRF (mean field).

    Args:
        image: uint8 RGB, ``(H, W, 3)`` or ``(N, 3, H, W)``, numpy or torch.
        probs: probabilities ``(C, H, W)`` or ``(N, C, H, W)`` summing to 1 over C.
        iterations: mean-field iterations (DeepLab uses 10).
        pos_w, pos_xy_std: weight and spatial std of the smoothness kernel.
        bi_w, bi_xy_std, bi_rgb_std: weight, spatial std and colour std of the appearance kernel.
            Defaults and validation (ValueError naming the parameter): :class:`CRFParams`.
        compat: optional ``(C, C)`` label compatibility in the energy sense (``None``: Potts).
        method: ``"lattice"`` (permutohedral, default) or ``"exact"`` (O(N^2), tiny images).
        profile: a :class:`~atrous.crf.timing.StageTimes` to record the end time of each stage.

    Returns:
        Refined probabilities with the same container type, layout and dtype as ``probs``.

    CPU memory freed during the call stays in the process heap for the next call (up to 1 GiB
    by default; see :mod:`atrous.memory`, ``set_heap_retention(0)`` turns it off).
    """
    prm = CRFParams(iterations, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std)
    stamp = _no_stamp if profile is None else profile.stamp
    stamp("start")
    img, p, batched = _check_inputs(image, probs)
    rss_start = rss_bytes() if p.device.type == "cpu" else None
    stamp("checked")
    mu = None if compat is None else _compat_matrix(compat, p.shape[-1], p.device)
    q0 = _label_major_probs(p)
    stamp("unary")
    kernels = _kernels(img, p.shape[:3], prm, method, stamp)
    # a build that grew the process left its temporaries as fragmented free memory: returned
    # now, the mean-field buffers reuse the pages instead of landing above them (first call,
    # 500x375 textured frame: peak RSS growth 277 -> 221 MB, benchmarks/results/crf.md)
    trim_if_grown(rss_start)
    q = _mean_field(q0, kernels, prm.iterations, mu, method, p.shape, p.dtype, stamp)
    if not batched:
        q = q[0]
    out = q.numpy() if isinstance(probs, np.ndarray) else q
    stamp("end")
    return out


def _compat_matrix(compat: Any, c: int, device: torch.device) -> Tensor:
    """The ``(C, C)`` label compatibility as float32 on ``device``."""
    mu = _as_tensor(compat, "compat").to(device=device, dtype=torch.float32)
    if mu.shape != (c, c):
        raise ValueError(f"compat must have shape ({c}, {c}), got {tuple(mu.shape)}")
    return mu


def _label_major_probs(p: Tensor) -> Tensor:
    """``p`` ``(B, H, W, C)`` (a view of the caller's layout) as a float32 ``(B*H*W, C)``
    buffer, labels contiguous, clamped to the smallest normal float32 (-U = log p): one
    transposing copy."""
    b, h, w, c = p.shape
    q0 = torch.empty((b * h * w, c), dtype=torch.float32, device=p.device)
    tiny = torch.finfo(torch.float32).tiny
    if p.dtype == torch.float32:  # a clamp reading the transposed layout is a fast copy
        torch.clamp_min(p, tiny, out=q0.view(b, h, w, c))
    else:  # (the clamp must happen in float32: tiny is 0 in float16)
        q0.view(b, h, w, c).copy_(p)
        q0.clamp_min_(tiny)
    return q0


def _kernels(
    img: Tensor,
    bhw: tuple[int, int, int],
    prm: CRFParams,
    method: str,
    stamp: Callable[[str], None],
) -> list[tuple[GaussianKernel, float]]:
    """The smoothness and appearance kernels with their weights (a zero weight leaves its
    kernel out).

    On a CPU with the compiled lattice and more than one thread, the appearance kernel is built
    on a second thread while this one builds (or takes from the cache) the smoothness kernel:
    most of a lattice build is serial (the vertex numbering), so the two overlap.  Its stage
    stamp then marks when it was ready, after the smoothness kernel's."""
    b, h, w = bhw
    bilateral = None
    if prm.bi_w != 0 and prm.pos_w != 0 and _overlap_builds(img, b * h * w, method):
        bilateral = _Build(img, prm, method)
    kernels = []
    if prm.pos_w != 0:
        try:
            kern = positional_kernel(b, h, w, prm.pos_xy_std, img.device, method)
        finally:
            if bilateral is not None:
                bilateral.join()
        kernels.append((kern, prm.pos_w))
        stamp("positional")
    if prm.bi_w != 0:
        if bilateral is None:
            kern = GaussianKernel(bilateral_features(img, prm.bi_xy_std, prm.bi_rgb_std), method)
        else:
            kern = bilateral.result()
        kernels.append((kern, prm.bi_w))
        stamp("bilateral")
    return kernels


def _overlap_builds(img: Tensor, pixels: int, method: str) -> bool:
    """Whether the two kernels' lattices are built at once (see :func:`_kernels`)."""
    return (
        method == "lattice"
        and img.device.type == "cpu"
        and pixels >= 50_000  # (below, a thread costs more than the overlap saves)
        and torch.get_num_threads() > 1
        and native.available()
    )


class _Build(threading.Thread):
    """The appearance kernel, built on its own thread (the lattice build releases the GIL)."""

    def __init__(self, img: Tensor, prm: CRFParams, method: str) -> None:
        super().__init__(name="atrous-crf-lattice", daemon=True)
        self._args = (img, prm.bi_xy_std, prm.bi_rgb_std, method)
        self._kernel: GaussianKernel | None = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        img, xy_std, rgb_std, method = self._args
        try:
            self._kernel = GaussianKernel(bilateral_features(img, xy_std, rgb_std), method)
        except BaseException as e:  # re-raised on the calling thread by result()
            self._error = e

    def result(self) -> GaussianKernel:
        """The kernel (after :meth:`join`), or the build's exception raised here."""
        self.join()
        if self._error is not None:
            raise self._error
        assert self._kernel is not None
        return self._kernel


def _mean_field(
    q0: Tensor,
    kernels: list[tuple[GaussianKernel, float]],
    iterations: int,
    mu: Tensor | None,
    method: str,
    shape: torch.Size,
    dtype: torch.dtype,
    stamp: Callable[[str], None],
) -> Tensor:
    """Q ``(B, C, H, W)`` in ``dtype`` from ``q0`` ``(B*H*W, C)`` (used as a work buffer):
    the fused sparse products on the lattice, or the reference :func:`mean_field`."""
    b, h, w, c = shape
    if method == "lattice" and kernels and mu is None and native.usable(kernels, q0):
        stamp("built")
        q = torch.empty((b, c, h, w), dtype=dtype, device=q0.device)
        if dtype == torch.float32:  # Q written label-major by the last pass
            native.mean_field(q0, kernels, iterations, planes=q.view(b, c, h * w))
        else:
            qn = native.mean_field(q0, kernels, iterations)  # (in q0's buffer)
            q.view(b, c, h * w).copy_(qn.view(b, h * w, c).transpose(1, 2))
        return q
    if method == "lattice" and kernels:
        fused = FusedMeanField(kernels, torch.float32, with_unary=mu is None, labels=c)
        stamp("built")
        q = torch.empty((b, c, h, w), dtype=dtype, device=q0.device)
        fused.run(q0, iterations, mu, out=q.view(b, c, h * w))
        return q
    stamp("built")
    q = mean_field(q0.log_().neg_().view(b, h * w, c), kernels, iterations, mu)
    return q.reshape(b, h, w, c).permute(0, 3, 1, 2).to(dtype).contiguous()


@dataclass(frozen=True, init=False)
class DenseCRF:
    """:func:`dense_crf` with fixed :class:`CRFParams` (the ``crf`` hook of a Segmenter).

    ``DenseCRF(iterations=5, bi_w=6)`` overrides the defaults (DeepLab v2, PASCAL VOC);
    ``DenseCRF(params)`` takes a :class:`CRFParams`; :meth:`from_params` also reads a dict or a
    JSON file.  ``crf(image, probs, **kwargs)`` calls :func:`dense_crf` with these parameters
    (``kwargs`` win).
    """

    params: CRFParams

    def __init__(self, params: CRFParams | None = None, **overrides: Any) -> None:
        if params is not None and not isinstance(params, CRFParams):
            raise TypeError(
                f"DenseCRF(params) takes a CRFParams, got {type(params).__name__}; pass "
                "parameters by name (DenseCRF(iterations=5)) or use DenseCRF.from_params"
            )
        base = CRFParams() if params is None else params
        object.__setattr__(self, "params", base.replace(**overrides))

    @classmethod
    def from_params(
        cls,
        source: ParamsSource = None,
        where: str | None = None,
        **overrides: Any,
    ) -> DenseCRF:
        """The CRF of ``source`` (a :class:`CRFParams`, a dict, a JSON file such as
        crf-search's ``best_crf.json``, or None for the defaults) with ``overrides`` on top
        (``None`` values are ignored: the defaults < the source < explicit values).

        ValueError for invalid contents (``where``, default the path, starts the message),
        TypeError for an override that is not a parameter.
        """
        return cls(CRFParams.from_source(source, where), **overrides)

    def __getattr__(self, name: str) -> Any:
        # the parameters read as attributes, as when DenseCRF was the parameters' dataclass
        if name in CRFParams.names():
            return getattr(self.params, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, image: Any, probs: Any, **kwargs: Any) -> Any:
        return dense_crf(image, probs, **{**self.params.to_dict(), **kwargs})

    def config(self) -> dict[str, Any]:
        """The parameters, for results' metadata (``Segmenter.config()`` records them)."""
        return {"method": "dense_crf", **self.params.to_dict()}
