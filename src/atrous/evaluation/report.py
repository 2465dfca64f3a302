"""Reports of an evaluation: terminal table, JSON with every number, confusion-matrix PNG."""

from __future__ import annotations

import datetime as _dt
import math
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atrous.evaluation.confusion import Metrics
from atrous.fileio import atomic_write_json

__all__ = ["environment", "format_table", "plot_confusion", "write_json"]


def _pct(v: float) -> str:
    return "   n/a" if math.isnan(v) else f"{100 * v:6.2f}"


def format_table(
    metrics: Metrics, class_names: Sequence[str] | None = None, title: str | None = None
) -> str:
    """Per-class IoU and accuracy (%) with class names, then the summary metrics."""
    c = len(metrics.iou)
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    width = max([len("class"), *(len(n) for n in names)])
    lines = []
    if title:
        lines.append(title)
    head = f"{'id':>4}  {'class':<{width}}  {'IoU %':>6}  {'acc %':>6}"
    lines += [head, "-" * len(head)]
    absent = set(metrics.absent)
    for i in range(c):
        note = "  (absent)" if i in absent else ""
        lines.append(
            f"{i:>4}  {names[i]:<{width}}  {_pct(metrics.iou[i])}  "
            f"{_pct(metrics.class_accuracy[i])}{note}"
        )
    lines.append("-" * len(head))
    present = c - len(metrics.absent)
    summary = [
        ("mIoU", f"{_pct(metrics.miou)} %  (mean over {present} of {c} classes)"),
        ("pixel accuracy", f"{_pct(metrics.pixel_accuracy)} %"),
        ("mean class accuracy", f"{_pct(metrics.mean_class_accuracy)} %"),
        ("frequency-weighted IoU", f"{_pct(metrics.fw_iou)} %"),
        ("scored pixels", f"{metrics.num_pixels:>6}"),
    ]
    lines += [f"{k:<23}{v}" for k, v in summary]
    if metrics.absent:
        shown = ", ".join(names[i] for i in metrics.absent[:20])
        more = f" (+{len(metrics.absent) - 20} more)" if len(metrics.absent) > 20 else ""
        lines.append(f"absent (no GT, never predicted; excluded from means): {shown}{more}")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Software and machine facts recorded with every result."""
    import torch

    import atrous

    return {
        "atrous": atrous.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars/arrays -> Python, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """Strict JSON (no NaN tokens): ``null`` stands for an undefined number."""
    atomic_write_json(path, _clean(data), allow_nan=False, default=str)


def plot_confusion(
    mat: np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "Confusion matrix (rows: ground truth, normalised per row)",
) -> None:
    """Row-normalised confusion matrix as PNG; size and font scale with the class count so
    that up to ~150 class names stay readable. Cell values are printed up to 30 classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(mat, dtype=np.float64)
    c = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    rows = m.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(rows > 0, m / rows, np.nan)
    side = min(40.0, max(6.0, 0.16 * c + 3.0))
    font = max(4.0, min(10.0, 300.0 / max(c, 1)))
    dpi = 100 if c <= 60 else 150
    fig = Figure(figsize=(side, side), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                v = norm[i, j]
                if not math.isnan(v) and v >= 0.005:
                    color = "white" if v > 0.5 else "black"
                    cell = f"{100 * v:.0f}"
                    ax.text(j, i, cell, ha="center", va="center", fontsize=font * 0.8, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
