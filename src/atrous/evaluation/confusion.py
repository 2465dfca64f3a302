"""One confusion matrix over a whole dataset, and the metrics the DeepLab papers report.

DeepLab v1 sec. 5, v2 sec. 4, v3 sec. 4: mIoU = mean over classes of TP / (TP + FP + FN),
with the counts accumulated over *all* pixels of the dataset (not averaged per image), at
full image resolution, pixels labelled ``ignore_index`` (255 in VOC) left out.

Rows of the matrix are ground truth, columns are predictions: ``mat[t, p]`` counts pixels of
true class ``t`` predicted as ``p``.

Classes that occur neither in the ground truth nor in the prediction have an undefined
IoU (0 / 0). They are reported as NaN (``None`` in JSON), listed in ``absent``, and left
out of every mean; counting them as 0 or 1 would move mIoU with the number of unused class
slots. A class predicted but never in the ground truth has IoU 0 (all its pixels are false
positives) and does count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atrous.constants import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "Metrics", "as_label_tensor", "metrics_from_matrix"]


def as_label_tensor(x: Any, name: str) -> torch.Tensor:
    """A (N, H, W) or (H, W) label map (torch or numpy, integer dtype) as an int64 tensor."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
            raise TypeError(f"{name}: expected an integer label map, got numpy dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex():
            raise TypeError(f"{name}: expected an integer label map, got torch dtype {x.dtype}")
        t = x
    else:
        raise TypeError(
            f"{name}: expected a torch.Tensor or numpy.ndarray of class ids, got {type(x).__name__}"
        )
    if t.dim() not in (2, 3):
        raise ValueError(f"{name}: expected shape (H, W) or (N, H, W), got {tuple(t.shape)}")
    return t.long()


@dataclass(frozen=True)
class Metrics:
    """Summary metrics of one confusion matrix (fractions in [0, 1]; NaN = undefined)."""

    miou: float
    iou: np.ndarray  # (C,) float64, NaN for absent classes
    pixel_accuracy: float
    mean_class_accuracy: float
    class_accuracy: np.ndarray  # (C,) recall per class, NaN where the class has no GT pixel
    fw_iou: float
    absent: list[int] = field(default_factory=list)  # classes in neither GT nor prediction
    num_pixels: int = 0  # scored (non-ignored) pixels

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready: NaN becomes ``None``; absent classes listed by index and name."""
        names = list(class_names) if class_names is not None else None
        out: dict[str, Any] = {
            "mIoU": _num(self.miou),
            "pixel_accuracy": _num(self.pixel_accuracy),
            "mean_class_accuracy": _num(self.mean_class_accuracy),
            "fw_IoU": _num(self.fw_iou),
            "num_pixels": int(self.num_pixels),
            "per_class_IoU": [_num(v) for v in self.iou],
            "per_class_accuracy": [_num(v) for v in self.class_accuracy],
            "absent": list(self.absent),
        }
        if names is not None:
            out["absent_names"] = [names[i] for i in self.absent]
        return out


def _num(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def metrics_from_matrix(mat: np.ndarray | torch.Tensor) -> Metrics:
    """Metrics of a (C, C) confusion matrix (rows: ground truth, columns: prediction).

    Mean class accuracy averages per-class recall over classes present in the ground truth;
    frequency-weighted IoU weights each class's IoU by its share of ground-truth pixels.
    """
    if isinstance(mat, torch.Tensor):
        mat = mat.detach().cpu().numpy()
    m = np.asarray(mat, dtype=np.float64)
    tp = np.diag(m)
    gt = m.sum(axis=1)
    pred = m.sum(axis=0)
    union = gt + pred - tp
    total = m.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    freq = gt / total if total > 0 else np.zeros_like(gt)
    # A class with gt > 0 always has union > 0, so its IoU is defined wherever freq > 0.
    fw = float(np.sum(freq[gt > 0] * iou[gt > 0])) if total > 0 else float("nan")
    return Metrics(
        miou=_nanmean(iou),
        iou=iou,
        pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
        mean_class_accuracy=_nanmean(acc),
        class_accuracy=acc,
        fw_iou=fw,
        absent=[int(i) for i in np.flatnonzero(union == 0)],
        num_pixels=int(total),
    )


class ConfusionMatrix:
    """A (C, C) int64 confusion matrix accumulated over a dataset.

    ``update`` takes predictions and targets of shape (H, W) or (N, H, W), torch (any device)
    or numpy; the matrix lives on the device of the first update (or ``device``).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = IGNORE_INDEX,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self._touched = False

    def reset(self) -> None:
        self.mat.zero_()
        self._touched = False

    def update(self, pred: Any, target: Any) -> ConfusionMatrix:
        """Add one image or a batch. Target values outside [0, C) other than the ignore index
        raise ``ValueError`` (a wrong ``num_classes`` or unmapped dataset labels); so do
        prediction values outside [0, C) at scored pixels."""
        p = as_label_tensor(pred, "pred")
        t = as_label_tensor(target, "target")
        if p.shape != t.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
        if not self._touched and self.mat.device != t.device:
            self.mat = self.mat.to(t.device)
        self._touched = True
        t = t.to(self.mat.device)
        p = p.to(self.mat.device)
        c = self.num_classes
        valid = (
            t != self.ignore_index
            if self.ignore_index is not None
            else torch.ones_like(t, dtype=torch.bool)
        )
        t = t[valid]
        p = p[valid]
        if t.numel() == 0:
            return self
        bad_t = (t < 0) | (t >= c)
        if bool(bad_t.any()):
            vals = torch.unique(t[bad_t])[:10].tolist()
            raise ValueError(
                f"target has values {vals} outside [0, {c}) that are not the ignore index "
                f"({self.ignore_index}); check num_classes and the dataset's label mapping"
            )
        bad_p = (p < 0) | (p >= c)
        if bool(bad_p.any()):
            vals = torch.unique(p[bad_p])[:10].tolist()
            raise ValueError(f"pred has values {vals} outside [0, {c})")
        self.mat += torch.bincount(t * c + p, minlength=c * c).view(c, c)
        return self

    # --- combining -------------------------------------------------------------------------
    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts in place (same class count)."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge confusion matrices of {self.num_classes} and "
                f"{other.num_classes} classes"
            )
        self.mat += other.mat.to(self.mat.device)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = self.copy()
        return out.merge(other)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def copy(self) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.mat.device)
        out.mat = self.mat.clone()
        out._touched = self._touched
        return out

    def all_reduce(self, group: Any = None) -> ConfusionMatrix:
        """Sum the matrix over all processes (``torch.distributed``); a no-op when not
        initialised. Every rank ends with the whole dataset's counts."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM, group=group)
        return self

    # --- metrics ---------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        return self.mat.detach().cpu().numpy()

    def compute(self) -> Metrics:
        return metrics_from_matrix(self.mat)

    @property
    def miou(self) -> float:
        return self.compute().miou

    def __repr__(self) -> str:
        m = self.compute()
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, pixels={m.num_pixels}, "
            f"mIoU={m.miou:.4f})"
        )
