"""Validation during training: the same :class:`~atrous.inference.Segmenter` and confusion
matrix as ``atrous eval`` (full-resolution labels, ignore 255, the config's ``eval_scales``),
a cost estimate for planning a ``time_limit`` run, and image | truth | prediction strips."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch import nn

from atrous.data.palettes import colorize
from atrous.evaluation import EvalResult, evaluate
from atrous.inference import InferenceSettings, Segmenter, build_segmenter

__all__ = ["estimate_validation_seconds", "prediction_strips", "validate_model"]


def _segmenter(
    model: nn.Module, scales: Sequence[float], num_classes: int | None = None
) -> Segmenter:
    # batch 1: validation images differ in size; a learned CRF runs as in ``atrous eval``
    kw = {} if num_classes is None else {"num_classes": num_classes}
    return build_segmenter(model, InferenceSettings(scales=tuple(scales), batch_size=1), **kw)


def validate_model(
    model: nn.Module,
    dataset: Any,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    class_names: list[str] | None = None,
    limit: int | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (items with uint8 "image" and "mask", untransformed)
    the way ``atrous eval`` does. The model is left in eval mode."""
    seg = _segmenter(model, scales, num_classes)
    return evaluate(seg, dataset, num_classes, class_names, trimap_widths=None, limit=limit)


def estimate_validation_seconds(
    model: nn.Module, dataset: Any, scales: Sequence[float], limit: int | None
) -> float:
    """Time of one validation, from one timed image after a warm-up (for planning a
    ``time_limit`` run before the first validation has been measured)."""
    n = len(dataset) if not limit else min(len(dataset), limit)
    seg = _segmenter(model, scales)
    image = np.asarray(dataset[0]["image"])
    seg.predict(image)  # warm-up
    t = time.perf_counter()
    seg.predict(image)
    return (time.perf_counter() - t) * n


def prediction_strips(
    model: nn.Module, dataset: Any, scales: Sequence[float], palette: np.ndarray, count: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, image | ground truth | prediction)`` for the first ``count`` items."""
    seg = _segmenter(model, scales)
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        image = np.asarray(item["image"])
        pred = seg.predict(image)
        parts = [image, colorize(np.asarray(item["mask"]), palette), colorize(pred, palette)]
        yield i, np.concatenate(parts, axis=1)
