"""Trimap (boundary band) accuracy: DeepLab v1 sec. 5 (Fig. 5), v2 sec. 4.1 (Fig. "trimap").

The papers measure mIoU and pixel accuracy only on pixels within a narrow band of width w
around object boundaries and plot them against w (1..40 px): this shows where the dense
CRF helps (sharper boundaries), which whole-image mIoU hides.

A pixel belongs to the band of width ``w`` when its Euclidean distance ``d`` to the nearest
"boundary" pixel is at most ``w``. What counts as the boundary is the ``boundary`` option:

``"label"`` (default)
    ``d`` is the distance to the nearest pixel whose label *differs* from this pixel's label,
    void (``ignore_index``) counting as a label of its own. So a pixel next to a label change
    has d = 1, and in VOC (objects outlined by a void band) the band follows the objects.
``"class"``
    Only changes between two different *non-void* classes count; void pixels are invisible
    when looking for the boundary. On VOC this finds few boundaries (the void outline
    separates most objects from the background).
``"void"``
    The papers' VOC protocol: ``d`` is the distance to the nearest void pixel ("pixels
    located within a narrow band (called trimap) of void labels", v1 sec. 5).

In every mode the ignored pixels themselves are never scored. Pixels with no boundary in
the image (d = infinity) are in no band.

Efficiency: the distance map is computed once per image (one exact Euclidean distance
transform per label present, cropped to that label's bounding box plus the largest width),
then every scored pixel is binned by the smallest width whose band contains it, one
``bincount`` fills a (bins, C, C) tensor, and a cumulative sum over bins gives the
confusion matrix of every band width at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from atrous.evaluation.confusion import Metrics, as_label_tensor, metrics_from_matrix

__all__ = ["TrimapAccumulator", "boundary_distance"]

BoundaryMode = Literal["label", "class", "void"]
_MODES = ("label", "class", "void")


def _edt_to_zeros(
    inside: np.ndarray, zeros: np.ndarray, limit: float
) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Distance from each ``inside`` pixel to the nearest ``zeros`` pixel, computed on the
    bounding box of ``inside`` grown by ``limit`` (exact for distances <= limit, which is all
    the bands need; larger distances come back > limit or inf)."""
    ys, xs = np.nonzero(inside)
    if ys.size == 0:
        return None
    h, w = inside.shape
    m = int(np.ceil(limit)) + 1 if np.isfinite(limit) else max(h, w)
    sl = (
        slice(max(0, ys.min() - m), min(h, ys.max() + m + 1)),
        slice(max(0, xs.min() - m), min(w, xs.max() + m + 1)),
    )
    z = zeros[sl]
    if not z.any():
        return np.full(z.shape, np.inf), sl
    return ndimage.distance_transform_edt(~z), sl


def boundary_distance(
    label: np.ndarray | torch.Tensor,
    ignore_index: int | None = 255,
    boundary: BoundaryMode = "label",
    max_distance: float = np.inf,
) -> np.ndarray:
    """Per-pixel Euclidean distance (float64, (H, W)) to the nearest boundary of ``label``
    as defined by ``boundary`` (see the module docstring). Void pixels get ``inf`` in
    modes "label"/"class" only where no boundary exists; they are never scored anyway.
    Distances above ``max_distance`` may be returned as any value > ``max_distance``."""
    if boundary not in _MODES:
        raise ValueError(f"boundary must be one of {_MODES}, got {boundary!r}")
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label: expected shape (H, W), got {label.shape}")
    dist = np.full(label.shape, np.inf)
    void = label == ignore_index if ignore_index is not None else np.zeros(label.shape, bool)
    if boundary == "void":
        if void.any():
            dist = ndimage.distance_transform_edt(~void)
        return dist
    for lab in np.unique(label):
        inside = label == lab
        if boundary == "class":
            if ignore_index is not None and lab == ignore_index:
                continue
            zeros = ~inside & ~void  # other valid classes only
        else:
            zeros = ~inside
        r = _edt_to_zeros(inside, zeros, max_distance)
        if r is None:
            continue
        d, sl = r
        region = inside[sl]
        dist[sl][region] = d[region]
    return dist


class TrimapAccumulator:
    """Confusion matrices restricted to boundary bands of several widths (v1 sec. 5).

    ``widths`` are band widths in pixels (default 1..40 as in the papers' figure); the band
    of width w holds the scored pixels at distance <= w from a boundary.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Iterable[float] = range(1, 41),
        ignore_index: int | None = 255,
        boundary: BoundaryMode = "label",
    ) -> None:
        ws = sorted(float(w) for w in widths)
        if not ws or ws[0] <= 0:
            raise ValueError(f"widths must be non-empty and positive, got {ws}")
        if len(set(ws)) != len(ws):
            raise ValueError(f"widths must be distinct, got {ws}")
        if boundary not in _MODES:
            raise ValueError(f"boundary must be one of {_MODES}, got {boundary!r}")
        self.num_classes = num_classes
        self.widths = ws
        self.ignore_index = ignore_index
        self.boundary: BoundaryMode = boundary
        # One extra bin for pixels outside the widest band (kept for nothing but symmetry).
        self.bins = np.zeros((len(ws) + 1, num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> TrimapAccumulator:
        """Add one image (H, W) or a batch (N, H, W) of predictions and ground truth."""
        p = as_label_tensor(pred, "pred").cpu().numpy()
        t = as_label_tensor(target, "target").cpu().numpy()
        if p.shape != t.shape:
            raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
        if t.ndim == 2:
            p, t = p[None], t[None]
        for pi, ti in zip(p, t):
            self._update_one(pi, ti)
        return self

    def _update_one(self, pred: np.ndarray, target: np.ndarray) -> None:
        c = self.num_classes
        d = boundary_distance(target, self.ignore_index, self.boundary, self.widths[-1])
        valid = target != self.ignore_index if self.ignore_index is not None else None
        scored = d <= self.widths[-1]
        if valid is not None:
            scored &= valid
        t = target[scored]
        p = pred[scored]
        if t.size == 0:
            return
        if t.min() < 0 or t.max() >= c:
            raise ValueError(
                f"target has values outside [0, {c}) that are not the ignore index "
                f"({self.ignore_index})"
            )
        if p.min() < 0 or p.max() >= c:
            raise ValueError(f"pred has values outside [0, {c})")
        # Bin k = index of the narrowest band that contains the pixel.
        k = np.searchsorted(np.asarray(self.widths), d[scored], side="left")
        idx = (k * c + t) * c + p
        self.bins += np.bincount(idx, minlength=self.bins.size).reshape(self.bins.shape)

    def merge(self, other: TrimapAccumulator) -> TrimapAccumulator:
        if other.widths != self.widths or other.num_classes != self.num_classes:
            raise ValueError("cannot merge trimap accumulators with different widths/classes")
        if other.boundary != self.boundary:
            raise ValueError("cannot merge trimap accumulators with different boundary modes")
        self.bins += other.bins
        return self

    def all_reduce(self, group: Any = None) -> TrimapAccumulator:
        """Sum the counts over all processes (a no-op without ``torch.distributed``)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.from_numpy(self.bins)
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            self.bins = t.numpy()
        return self

    def matrices(self) -> np.ndarray:
        """(len(widths), C, C) confusion matrices, one per band width (cumulative bins)."""
        return np.cumsum(self.bins[:-1], axis=0)

    def compute(self) -> list[Metrics]:
        return [metrics_from_matrix(m) for m in self.matrices()]

    def curve(self) -> dict[str, list[float]]:
        """Band width, mIoU and pixel accuracy per width (NaN where a band is empty)."""
        ms = self.compute()
        return {
            "width": list(self.widths),
            "mIoU": [m.miou for m in ms],
            "pixel_accuracy": [m.pixel_accuracy for m in ms],
            "num_pixels": [m.num_pixels for m in ms],
        }


def plot_trimap(
    curves: dict[str, TrimapAccumulator | dict[str, Sequence[float]]],
    path: str,
    title: str = "Trimap: accuracy near object boundaries",
) -> None:
    """Plot mIoU and pixel accuracy (%) against band width, one curve per entry of
    ``curves`` (e.g. ``{"without CRF": a, "with CRF": b}``) as in v1 Fig. 5 / v2 Fig. "trimap".
    Written as PNG with the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_trimap: no curves given")
    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax_iou, ax_acc = fig.subplots(1, 2)
    for name, c in curves.items():
        data = c.curve() if isinstance(c, TrimapAccumulator) else c
        w = np.asarray(data["width"], dtype=float)
        ax_iou.plot(w, 100 * np.asarray(data["mIoU"], dtype=float), marker=".", label=name)
        ax_acc.plot(
            w, 100 * np.asarray(data["pixel_accuracy"], dtype=float), marker=".", label=name
        )
    for ax, what in ((ax_iou, "mean IoU (%)"), (ax_acc, "pixel accuracy (%)")):
        ax.set_xlabel("trimap width (pixels)")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
