"""Evaluation by the DeepLab papers' protocol: one confusion matrix over the whole dataset
at full resolution (mIoU, per-class IoU, pixel and mean class accuracy, frequency-weighted
IoU), the trimap boundary-band curve (v1 sec. 5, v2 sec. 4.1), and reports (table, JSON,
plots). Start with :func:`evaluate`."""

from __future__ import annotations

from atrous.evaluation.confusion import ConfusionMatrix, Metrics, metrics_from_matrix
from atrous.evaluation.evaluate import (
    EvalResult,
    evaluate,
    evaluate_model,
    iter_predictions,
    reconcile_class_names,
    score,
    split_item,
)
from atrous.evaluation.report import environment, format_table, plot_confusion, write_json
from atrous.evaluation.trimap import TrimapAccumulator, boundary_distance, plot_trimap

__all__ = [
    "ConfusionMatrix",
    "EvalResult",
    "Metrics",
    "TrimapAccumulator",
    "boundary_distance",
    "environment",
    "evaluate",
    "evaluate_model",
    "format_table",
    "iter_predictions",
    "metrics_from_matrix",
    "plot_confusion",
    "plot_trimap",
    "reconcile_class_names",
    "score",
    "split_item",
    "write_json",
]
