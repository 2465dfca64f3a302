"""A training run's validation set at work (rank 0): the metrics of one pass, the estimated
cost of one for planning, and the TensorBoard strips, with the set's bad samples under the
run's policy (:class:`~atrous.failures.BadSamples`). The passes themselves are
:mod:`atrous.training.validation`'s, the same Segmenter and confusion matrix as ``atrous
eval``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from torch import nn

from atrous.data import DatasetError
from atrous.failures import BadSamples, quiet_dataset_skips
from atrous.training.config import TrainConfig
from atrous.training.run_log import RunLog
from atrous.training.validation import (
    estimate_validation_seconds,
    prediction_strips,
    validate_model,
)

__all__ = ["Validator"]


class EvenlySpaced:
    """``count`` items of ``dataset`` spread evenly over its first ``span`` (a time budget's
    validation subset: the first few images of a video-frame split are one scene)."""

    def __init__(self, dataset: Any, span: int, count: int) -> None:
        self.dataset = dataset
        picks = np.linspace(0, span - 1, num=max(1, min(count, span)))
        self.indices = sorted({int(i) for i in np.round(picks)})

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]  # IndexError past the end ends iteration

    def __getattr__(self, name: str) -> Any:  # skip_report, class_names, ...
        return getattr(self.dataset, name)


class Validator:
    """Validation on ``dataset`` (untransformed; None: no validation) of a model with
    ``class_names``, per ``cfg`` (``eval_scales``, ``val_max_images``, ``tb_images``).
    :attr:`planned`: the images a ``time_limit`` plan allows (an evenly spaced subset)."""

    def __init__(
        self, cfg: TrainConfig, dataset: Any | None, class_names: list[str], bad: BadSamples
    ) -> None:
        self.cfg, self.dataset, self.class_names, self.bad = cfg, dataset, class_names, bad
        self.planned: int | None = None

    def full_images(self) -> int:
        """Images of a full validation (``val_max_images`` of the validation split)."""
        if self.dataset is None:
            return 0
        n = len(self.dataset)
        return min(n, self.cfg.val_max_images) if self.cfg.val_max_images else n

    def images(self) -> int:
        """Images in one validation: the full one's, or the time budget's subset."""
        span = self.full_images()
        return span if self.planned is None else min(span, self.planned)

    def _items(self) -> Any:
        """The validation items: the first ``val_max_images``, or the planned subset."""
        span, n = self.full_images(), self.images()
        return self.dataset if n >= span else EvenlySpaced(self.dataset, span, n)

    def run(self, model: nn.Module) -> dict[str, float]:
        """mIoU, pixel and mean class accuracy, per-class IoU (``iou/NAME``, classes seen)
        and the pass's ``seconds``; {} without a validation set."""
        if self.dataset is None:
            return {}
        t0, cfg = time.perf_counter(), self.cfg
        with self._samples():
            result = validate_model(
                model,
                self._items(),
                len(self.class_names),
                tuple(cfg.eval_scales),
                self.class_names,
                limit=self.images(),
            )
        m = result.metrics
        metrics = {
            "miou": float(m.miou),
            "pixel_acc": float(m.pixel_accuracy),
            "mean_acc": float(m.mean_class_accuracy),
            "seconds": time.perf_counter() - t0,
        }
        for name, iou in zip(self.class_names, m.iou):
            if np.isfinite(iou):
                metrics[f"iou/{name}"] = float(iou)
        return metrics

    def log_strips(
        self, model: nn.Module, palette: np.ndarray, log: RunLog, iteration: int
    ) -> None:
        """TensorBoard images ``val/i``: image | truth | prediction of the first few."""
        with self._samples():
            strips = prediction_strips(
                model, self.dataset, self.cfg.eval_scales, palette, self.cfg.tb_images
            )
            for i, strip in strips:
                log.image(f"val/{i}", strip, iteration)

    def estimate_seconds(self, model: nn.Module) -> float:
        """The estimated seconds of one validation; 0 without a validation set."""
        if self.dataset is None:
            return 0.0
        with self._samples():
            return estimate_validation_seconds(
                model, self.dataset, self.cfg.eval_scales, self.images()
            )

    @contextmanager
    def _samples(self) -> Iterator[None]:
        """Around a pass over the validation set: its bad items, skipped by the dataset
        (which serves the next good one), are counted and reported; under ``on_error:
        raise`` the dataset's error stops training as a one-line TrainingError."""
        try:
            with quiet_dataset_skips():
                yield
        except DatasetError as e:
            self.bad.stop(e.path, e.problem)
        report = getattr(self.dataset, "skip_report", None)
        if report is not None:
            self.bad.met(list(report.skipped.items()))
