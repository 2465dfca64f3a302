"""Evaluate a segmenter over a dataset by the papers' protocol (DEEPLAB.md "Evaluation").

Full-resolution predictions, one confusion matrix over the whole dataset, label 255
ignored, plus the trimap curve of v1 sec. 5 / v2 sec. 4.1. The ``atrous eval`` command is a
thin layer over :func:`evaluate` and :class:`EvalResult`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atrous.evaluation.confusion import ConfusionMatrix, Metrics
from atrous.evaluation.report import environment, format_table, plot_confusion, write_json
from atrous.evaluation.trimap import BoundaryMode, TrimapAccumulator, plot_trimap

__all__ = ["EvalResult", "evaluate", "split_item"]


def split_item(item: Any, index: int = 0) -> tuple[Any, Any]:
    """A dataset item as ``(image, label)``: a 2-tuple/list, or a dict with "image" and
    "mask" (or "label") keys."""
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"dataset item {index}: dict has no 'image' key ({sorted(item)})")
        for key in ("mask", "label", "target"):
            if key in item:
                return item["image"], item[key]
        raise ValueError(f"dataset item {index}: dict has no 'mask' key ({sorted(item)})")
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise TypeError(
        f"dataset item {index}: expected (image, label) or a dict with 'image'/'mask', "
        f"got {type(item).__name__}"
    )


@dataclass
class EvalResult:
    """Everything one evaluation measured; write it with ``to_json``/``plot_*``/``table``."""

    confusion: ConfusionMatrix
    class_names: list[str] | None = None
    trimap: TrimapAccumulator | None = None
    num_images: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> Metrics:
        return self.confusion.compute()

    @property
    def miou(self) -> float:
        return self.metrics.miou

    def table(self, title: str | None = None) -> str:
        return format_table(self.metrics, self.class_names, title)

    def to_dict(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        m = self.metrics
        out: dict[str, Any] = {
            "metadata": dict(metadata or {}),
            "environment": environment(),
            "protocol": {
                "accumulation": "one confusion matrix over all pixels of the dataset",
                "resolution": "full image",
                "ignore_index": self.confusion.ignore_index,
                "absent_classes": "no GT pixel and never predicted: null, excluded from means",
            },
            "num_images": self.num_images,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / self.num_images if self.num_images else None,
            "num_classes": self.confusion.num_classes,
            "class_names": self.class_names,
            "metrics": m.to_dict(self.class_names),
            "confusion_matrix": self.confusion.numpy().tolist(),
        }
        if self.class_names is not None:
            out["per_class_IoU_by_name"] = dict(zip(self.class_names, m.iou.tolist()))
        if self.trimap is not None:
            out["trimap"] = {"boundary": self.trimap.boundary, **self.trimap.curve()}
        out.update(self.extra)
        return out

    def to_json(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Every number plus the caller's run metadata (model, weights, output stride,
        scales, flip, CRF settings, split...) and the software environment."""
        write_json(self.to_dict(metadata), path)

    def plot_confusion(self, path: str | Path) -> None:
        plot_confusion(self.confusion.numpy(), path, self.class_names)

    def plot_trimap(
        self,
        path: str | Path,
        label: str = "this run",
        others: dict[str, EvalResult | TrimapAccumulator] | None = None,
    ) -> None:
        """Trimap curve of this run, with ``others`` (e.g. the run without CRF) overlaid."""
        if self.trimap is None:
            raise ValueError("this evaluation did not compute the trimap (trimap_widths=None)")
        curves: dict[str, Any] = {label: self.trimap}
        for name, o in (others or {}).items():
            acc = o.trimap if isinstance(o, EvalResult) else o
            if acc is None:
                raise ValueError(f"plot_trimap: {name!r} has no trimap")
            curves[name] = acc
        plot_trimap(curves, str(path))

    def all_reduce(self) -> EvalResult:
        """Sum counts over ``torch.distributed`` ranks (each rank evaluated a shard)."""
        import torch
        import torch.distributed as dist

        self.confusion.all_reduce()
        if self.trimap is not None:
            self.trimap.all_reduce()
        if dist.is_available() and dist.is_initialized():
            n = torch.tensor([self.num_images], dtype=torch.int64)
            dist.all_reduce(n)
            self.num_images = int(n.item())
        return self


def _predictions(segmenter: Any, images: Iterable[Any]) -> Iterator[Any]:
    if hasattr(segmenter, "predict_many"):
        yield from segmenter.predict_many(images)
    elif callable(segmenter):
        for im in images:
            yield segmenter(im)
    else:
        raise TypeError(
            "segmenter must have predict_many(images) or be callable image -> label map, got "
            f"{type(segmenter).__name__}"
        )


def evaluate(
    segmenter: Any,
    dataset: Iterable[Any],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = 255,
    trimap_widths: Iterable[float] | None = range(1, 41),
    trimap_boundary: BoundaryMode = "label",
    limit: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Run ``segmenter`` (a :class:`atrous.inference.Segmenter`, or any callable returning an
    (H, W) label map) over ``dataset`` items ``(image_uint8_hwc, label_hw)`` or dicts with
    "image"/"mask", at full resolution, and accumulate the confusion matrix (and the trimap
    matrices unless ``trimap_widths`` is None)."""
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but num_classes is {num_classes}"
        )
    cm = ConfusionMatrix(num_classes, ignore_index)
    tri = (
        TrimapAccumulator(num_classes, trimap_widths, ignore_index, trimap_boundary)
        if trimap_widths is not None
        else None
    )
    labels: deque[Any] = deque()

    def images() -> Iterator[Any]:
        for i, item in enumerate(dataset):
            if limit is not None and i >= limit:
                return
            image, label = split_item(item, i)
            labels.append(label)
            yield image

    t0 = time.perf_counter()
    n = 0
    preds = _predictions(segmenter, images())
    if progress:
        from tqdm import tqdm

        preds = tqdm(preds, desc="evaluate", unit="img")
    for pred in preds:
        label = labels.popleft()
        label = np.asarray(label) if not hasattr(label, "dim") else label
        if tuple(pred.shape) != tuple(label.shape):
            raise ValueError(
                f"dataset item {n}: prediction shape {tuple(pred.shape)} differs from label "
                f"shape {tuple(label.shape)} (evaluation is at full resolution)"
            )
        cm.update(pred, label)
        if tri is not None:
            tri.update(pred, label)
        n += 1
    return EvalResult(
        confusion=cm,
        class_names=list(class_names) if class_names is not None else None,
        trimap=tri,
        num_images=n,
        seconds=time.perf_counter() - t0,
    )
