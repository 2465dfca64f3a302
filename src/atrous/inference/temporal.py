"""Temporal smoothing of video predictions: probability hooks for
:func:`~atrous.inference.video.predict_frames` and
:func:`~atrous.inference.video.segment_video` (``probs_hook``) that carry each pixel's class
probabilities from frame to frame, so labels flicker less.

Each smoother keeps a state ``s`` (C x H x W) and returns, for the frame's probabilities
``p``, ``s = w * p + (1 - w) * s_prev``; the argmax of ``s`` is the frame's label map.

- :class:`EMASmoother` (``ema``): an exponential moving average, ``w = alpha`` everywhere.
- :class:`GatedEMA` (``gated``): ``w`` rises from ``alpha`` to 1 where the image changed since
  the previous frame (``|Δ gray| >= tau``), so moving edges follow the new frame at once.
- :class:`FlowEMA` (``flow``): ``s_prev`` is first moved along the optical flow from the
  previous frame (pyramidal Lucas-Kanade on a half-size gray image, in torch), and gated as
  ``gated`` by what the warp failed to explain; pixels whose source left the frame take
  the new frame's probabilities.

Every smoother starts again from the frame's own probabilities on the first frame, when the
frame size or class count changes, and at a scene cut: a colour-histogram distance
(:func:`cut_score`) above ``cut``. One smoother serves one video, frames in order;
:meth:`SmoothingSpec.new` makes a fresh one (``atrous predict --smooth METHOD[:ALPHA]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from atrous.inference.video import Frame

__all__ = [
    "SMOOTHING_METHODS",
    "EMASmoother",
    "FlowEMA",
    "GatedEMA",
    "SmoothingSpec",
    "TemporalSmoother",
    "cut_score",
    "lucas_kanade",
    "parse_smoothing",
]

# Colour-histogram distance above which two frames are different shots (see cut_score).
DEFAULT_CUT = 0.3
# Gray-level change (0..1) at which the gated smoothers take the new frame whole: the best
# trade of flicker for mIoU of 0.1, 0.2, 0.3 and 0.5 on CamVid (docs/video.md).
DEFAULT_TAU = 0.2
_BINS = 8  # per colour channel, for cut_score


def cut_score(a: np.ndarray, b: np.ndarray) -> float:
    """How different two HxWx3 uint8 frames' colours are, in [0, 1]: half the L1 distance of
    their 8x8x8-bin RGB histograms (every other pixel). Consecutive CamVid frames score
    below 0.04, frames one second apart below 0.25, different streets above 0.35."""
    return _distance(_histogram(a), _histogram(b))


def _histogram(image: np.ndarray) -> np.ndarray:
    q = (np.asarray(image)[::2, ::2, :3] // (256 // _BINS)).astype(np.int64)
    idx = (q[..., 0] * _BINS + q[..., 1]) * _BINS + q[..., 2]
    h = np.bincount(idx.ravel(), minlength=_BINS**3).astype(np.float64)
    return h / max(h.sum(), 1.0)


def _distance(h1: np.ndarray, h2: np.ndarray) -> float:
    return 0.5 * float(np.abs(h1 - h2).sum())


class TemporalSmoother:
    """The shared frame loop: called as ``smoother(frame, probs) -> probs`` once per frame, in
    order (a :data:`~atrous.inference.video.ProbsHook`). Subclasses say what they keep of
    each frame (:meth:`_view`) and how the previous state meets the new probabilities
    (:meth:`_blend`). :attr:`resets` lists the frame numbers where it started again."""

    method: ClassVar[str] = ""
    # The new frame's weight when none is given (``--smooth METHOD``), from the benchmark.
    default_alpha: ClassVar[float] = 0.5

    def __init__(self, alpha: float | None = None, cut: float = DEFAULT_CUT) -> None:
        alpha = self.default_alpha if alpha is None else alpha
        _check_alpha(alpha)
        if not 0 < cut <= 1:
            raise ValueError(f"the scene-cut threshold must be in (0, 1], got {cut}")
        self.alpha, self.cut = float(alpha), float(cut)
        self.resets: list[int] = []
        self._state: np.ndarray | None = None
        self._hist: np.ndarray | None = None
        self._size: tuple[int, ...] = ()
        self._view_prev: Any = None

    def reset(self) -> None:
        """Forget the past: the next frame's probabilities are taken as they are."""
        self._state = self._hist = self._view_prev = None

    def __call__(self, frame: Frame, probs: np.ndarray) -> np.ndarray:
        p = np.asarray(probs, dtype=np.float32)
        if not p.flags.writeable:  # torch.from_numpy warns about read-only arrays
            p = p.copy()
        image = np.asarray(frame.image)
        hist = _histogram(image)
        prev = self._state
        view = self._view(image)
        if (
            prev is None
            or self._hist is None
            or prev.shape != p.shape
            or self._size != image.shape
            or _distance(self._hist, hist) > self.cut
        ):
            self.resets.append(frame.index)
            state = p.copy()
        else:
            state = self._blend(prev, p, self._view_prev, view)
        self._state, self._hist, self._size, self._view_prev = state, hist, image.shape, view
        return state

    def _view(self, image: np.ndarray) -> Any:
        """What the next frame needs of this one (nothing for the plain EMA)."""
        return None

    def _blend(self, prev: np.ndarray, p: np.ndarray, view_prev: Any, view: Any) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha:g}, cut={self.cut:g})"


class EMASmoother(TemporalSmoother):
    """``s = alpha * p + (1 - alpha) * s_prev``: ``alpha`` 1 is no smoothing; smaller values
    remember longer (a label needs about ``1 / alpha`` frames to change)."""

    method = "ema"

    def _blend(self, prev: np.ndarray, p: np.ndarray, view_prev: Any, view: Any) -> np.ndarray:
        return self.alpha * p + (1.0 - self.alpha) * prev


class GatedEMA(TemporalSmoother):
    """The EMA, with each pixel's weight raised from ``alpha`` towards 1 by the change of its
    (3x3-blurred, half-size) gray level since the previous frame: 1 at ``tau`` (0..1) and
    above. Static pixels are smoothed; moving edges take the new frame."""

    method = "gated"
    default_alpha = 0.2

    def __init__(
        self, alpha: float | None = None, cut: float = DEFAULT_CUT, tau: float = DEFAULT_TAU
    ) -> None:
        super().__init__(alpha, cut)
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def _view(self, image: np.ndarray) -> torch.Tensor:
        return _gray(image)

    def _weight(self, change: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Per-pixel weight of the new frame (H x W) from a half-size change map."""
        change = F.avg_pool2d(change[None, None], 3, stride=1, padding=1, count_include_pad=False)
        w = self.alpha + (1.0 - self.alpha) * (change / self.tau).clamp(max=1.0)
        return _resize(w, size)[0, 0]

    def _blend(
        self, prev: np.ndarray, p: np.ndarray, view_prev: torch.Tensor, view: torch.Tensor
    ) -> np.ndarray:
        w = self._weight((view - view_prev).abs(), p.shape[1:])
        return _mix(w, torch.from_numpy(p), torch.from_numpy(prev))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha:g}, cut={self.cut:g}, tau={self.tau:g})"


class FlowEMA(GatedEMA):
    """The gated EMA after moving the previous state along the optical flow
    (:func:`lucas_kanade` on half-size gray frames; the state moved to the nearest pixel, so
    it never blurs): the gate is the change the warp leaves (occlusions, flow errors), and
    pixels whose source is outside the previous frame take the new frame's probabilities."""

    method = "flow"
    default_alpha = 0.3

    def _blend(
        self, prev: np.ndarray, p: np.ndarray, view_prev: torch.Tensor, view: torch.Tensor
    ) -> np.ndarray:
        flow = lucas_kanade(view_prev, view)  # half size, in half-size pixels
        warped, _ = _warp(view_prev[None, None], flow)
        w = self._weight((warped[0, 0] - view).abs(), p.shape[1:])
        h, wd = p.shape[1:]
        scale = torch.tensor([wd / view.shape[1], h / view.shape[0]]).view(2, 1, 1)
        full = _resize(flow[None], (h, wd))[0] * scale
        aligned, inside = _warp(torch.from_numpy(prev)[None], full, mode="nearest")
        return _mix(torch.where(inside, w, 1.0), torch.from_numpy(p), aligned[0])


def _mix(w: torch.Tensor, p: torch.Tensor, prev: torch.Tensor) -> np.ndarray:
    """``w * p + (1 - w) * prev`` with a per-pixel weight ``w`` (H x W), as numpy."""
    return (w * p + (1.0 - w) * prev).numpy()


def _gray(image: np.ndarray) -> torch.Tensor:
    """An HxWx3 uint8 frame as a half-size (2x2 means) gray image in [0, 1]."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    blocks = image[: 2 * h, : 2 * w, :3].reshape(h, 2, w, 2, 3).sum((1, 3), dtype=np.uint16)
    return torch.from_numpy(blocks.astype(np.float32) @ _LUMA)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32) / (4 * 255)  # Rec. 601, 2x2 sums


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an N x C x h x w tensor to ``size`` (H, W)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> torch.Tensor:
    """Every pixel's position in grid_sample's coordinates (align_corners): H x W x 2."""
    ys = torch.linspace(-1, 1, h) if h > 1 else torch.zeros(1)
    xs = torch.linspace(-1, 1, w) if w > 1 else torch.zeros(1)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


def _warp(
    x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (N x C x H x W) sampled at each pixel plus ``flow`` (2 x H x W: dx, dy in
    pixels), and where that point lies inside ``x`` (H x W, bool)."""
    h, w = x.shape[-2:]
    step = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)])
    grid = _grid(h, w) + flow.permute(1, 2, 0) * step
    inside = (grid.abs() <= 1.0 + 1e-6).all(dim=-1)
    out = F.grid_sample(
        x,
        grid[None].expand(x.shape[0], -1, -1, -1),
        mode=mode,
        align_corners=True,
        padding_mode="border",
    )
    return out, inside


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k x k neighbourhoods (separable; zeros beyond the edges)."""
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0))
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, k // 2))


def lucas_kanade(
    prev: torch.Tensor, cur: torch.Tensor, levels: int = 3, iters: int = 3, window: int = 9
) -> torch.Tensor:
    """Dense optical flow (2 x H x W: dx, dy in pixels) from ``cur`` back to ``prev`` (H x W
    gray images): ``cur(x) ≈ prev(x + flow(x))``. Pyramidal Lucas-Kanade, ``levels`` halvings,
    ``iters`` Gauss-Newton steps per level over ``window`` x ``window`` neighbourhoods; a small
    ridge keeps textureless areas still, and each step moves at most 2 pixels."""
    pyramid = [(prev[None, None], cur[None, None])]
    for _ in range(levels - 1):
        a, b = pyramid[-1]
        if min(a.shape[-2:]) < 2 * window:
            break
        pyramid.append((F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)))
    flow = torch.zeros(2, *pyramid[-1][0].shape[-2:])
    for depth, (a, b) in enumerate(reversed(pyramid)):
        if depth:
            flow = 2 * _resize(flow[None], tuple(a.shape[-2:]))[0]
        for _ in range(iters):
            warped, _ = _warp(a, flow)
            gx, gy = _gradients(warped)
            gt = warped - b
            terms = torch.cat([gx * gx, gx * gy, gy * gy, gx * gt, gy * gt], dim=1)
            sxx, sxy, syy, sxt, syt = _box(terms, window)[0]
            sxx, syy = sxx + _RIDGE, syy + _RIDGE
            det = sxx * syy - sxy * sxy
            du = (sxy * syt - syy * sxt) / det
            dv = (sxy * sxt - sxx * syt) / det
            flow = flow + torch.stack([du, dv]).clamp(-2.0, 2.0)
    return flow


_RIDGE = 1e-4  # added to the gradients' mean squares: below it, a window is textureless


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of an N x C x H x W tensor along x and y (edges replicated)."""
    px = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return (px[..., 1:-1, 2:] - px[..., 1:-1, :-2]) / 2, (
        px[..., 2:, 1:-1] - px[..., :-2, 1:-1]
    ) / 2


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha (the new frame's weight) must be in (0, 1], got {alpha:g}")


SMOOTHING_METHODS: dict[str, type[TemporalSmoother]] = {
    cls.method: cls for cls in (EMASmoother, GatedEMA, FlowEMA)
}


@dataclass(frozen=True)
class SmoothingSpec:
    """A smoothing method and its ``alpha`` (None: the method's ``default_alpha``);
    :meth:`new` makes a smoother for one video."""

    method: str
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.method not in SMOOTHING_METHODS:
            raise ValueError(
                f"unknown smoothing {self.method!r}: choose off, " + ", ".join(SMOOTHING_METHODS)
            )
        if self.alpha is None:
            object.__setattr__(self, "alpha", SMOOTHING_METHODS[self.method].default_alpha)
        _check_alpha(self.alpha)

    def new(self) -> TemporalSmoother:
        """A fresh smoother (no state): one per video."""
        return SMOOTHING_METHODS[self.method](self.alpha)

    def __str__(self) -> str:
        return f"{self.method}:{self.alpha:g}"


def parse_smoothing(text: str) -> SmoothingSpec | None:
    """``off`` -> None; ``METHOD[:ALPHA]`` (``ema``, ``gated``, ``flow``; ``ALPHA`` in (0, 1],
    default the method's ``default_alpha``) -> its :class:`SmoothingSpec`. A bad value raises
    ValueError with a one-line message."""
    method, _, value = text.strip().lower().partition(":")
    if method in ("off", "none") and not value:
        return None
    if not value:
        return SmoothingSpec(method)
    try:
        alpha = float(value)
    except ValueError:
        raise ValueError(f"expected METHOD[:ALPHA] with a number ALPHA, got {text!r}") from None
    return SmoothingSpec(method, alpha)
