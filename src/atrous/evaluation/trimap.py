"""Trimap (boundary band) accuracy: DeepLab v1 sec. 5 (Fig. 5), v2 sec. 4.1 (Fig. "trimap").

The papers measure mIoU and pixel accuracy only on pixels within a narrow band of width w
around object boundaries and plot them against w (1..40 px): this shows where the dense
CRF helps (sharper boundaries), which whole-image mIoU hides.

A pixel belongs to the band of width ``w`` when its distance ``d`` to the label boundary is
at most ``w``. Boundary pixels are those with a 4-neighbour on the other side of a boundary;
what counts as a boundary is the ``boundary`` option:

``"label"`` (default)
    Any change of label, void (``ignore_index``) counting as a label of its own. In VOC
    (objects outlined by a void band) the band then follows the objects' outlines.
    ``d`` = 1 + Euclidean distance to the nearest boundary pixel, so both pixels of a label
    change have d = 1, and on straight edges d is exactly the distance to the nearest pixel
    of the other label.
``"class"``
    Only changes between two different *non-void* classes count (same ``d``); void is
    invisible. On VOC this finds few boundaries (void outlines separate most objects).
``"void"``
    The papers' VOC protocol: ``d`` = Euclidean distance to the nearest void pixel ("pixels
    located within a narrow band (called trimap) of void labels", v1 sec. 5).

In every mode the ignored pixels themselves are never scored. Pixels of an image with no
boundary (d = infinity) are in no band.

Efficiency: one Euclidean distance transform per image (``scipy.ndimage``), then every
scored pixel is binned by the narrowest width whose band contains it, one ``bincount``
fills a (bins, C, C) array, and a cumulative sum over bins gives the confusion matrix of
every band width at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from atrous.constants import IGNORE_INDEX
from atrous.evaluation.confusion import Metrics, as_label_tensor, metrics_from_matrix

__all__ = ["TrimapAccumulator", "boundary_distance", "boundary_pixels", "plot_trimap"]

BoundaryMode = Literal["label", "class", "void"]
_MODES = ("label", "class", "void")


def boundary_pixels(
    label: np.ndarray, ignore_index: int | None = IGNORE_INDEX, boundary: BoundaryMode = "label"
) -> np.ndarray:
    """Boolean (H, W) map of boundary pixels: pixels with a 4-neighbour of a different label
    (mode "label", void counting as a label), of a different non-void class with both
    non-void (mode "class"), or the void pixels themselves (mode "void")."""
    void = label == ignore_index if ignore_index is not None else np.zeros(label.shape, bool)
    if boundary == "void":
        return void
    out = np.zeros(label.shape, bool)
    for axis in (0, 1):
        a = label.swapaxes(0, axis)
        o = out.swapaxes(0, axis)  # a view: writing it writes ``out``
        diff = a[1:] != a[:-1]
        if boundary == "class":
            v = void.swapaxes(0, axis)
            diff &= ~v[1:] & ~v[:-1]
        o[1:] |= diff
        o[:-1] |= diff
    return out


def boundary_distance(
    label: np.ndarray | torch.Tensor,
    ignore_index: int | None = IGNORE_INDEX,
    boundary: BoundaryMode = "label",
) -> np.ndarray:
    """Per-pixel distance (float64, (H, W)) to the boundary of ``label`` (module docstring).

    Modes "label"/"class": 1 + the Euclidean distance to the nearest boundary pixel, so a
    pixel next to a label change has distance 1 (on straight edges this is exactly the
    distance to the nearest pixel of the other label). Mode "void": the Euclidean distance
    to the nearest void pixel. ``inf`` where the image has no boundary. One distance
    transform per image."""
    if boundary not in _MODES:
        raise ValueError(f"boundary must be one of {_MODES}, got {boundary!r}")
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label: expected shape (H, W), got {label.shape}")
    b = boundary_pixels(label, ignore_index, boundary)
    if not b.any():
        return np.full(label.shape, np.inf)
    d = ndimage.distance_transform_edt(~b)
    return d if boundary == "void" else d + 1.0


class TrimapAccumulator:
    """Confusion matrices restricted to boundary bands of several widths (v1 sec. 5).

    ``widths`` are band widths in pixels (default 1..40 as in the papers' figure); the band
    of width w holds the scored pixels at distance <= w from a boundary.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Iterable[float] = range(1, 41),
        ignore_index: int | None = IGNORE_INDEX,
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
        d = boundary_distance(target, self.ignore_index, self.boundary)
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
