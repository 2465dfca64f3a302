"""The learning curve of a run: training loss and validation mIoU from ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a ``metrics.jsonl`` (a line cut by a crash is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def curve_title(val: list[dict], val_images: int | None = None) -> str:
    """The curve's title: the best validation mIoU, its iteration, and the image count it
    was measured on (the demo's curve uses 16, its evaluation table every image)."""
    best = max(val, key=lambda r: r["val_miou"])
    on = f" (on {val_images} val images)" if val_images else ""
    return f"best val mIoU {100 * best['val_miou']:.1f}% at iteration {best['iteration']}{on}"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported once: a second or more; a time-budgeted
    run imports it at the start, with its validation cost estimate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(
    metrics: str | os.PathLike, png: str | os.PathLike, val_images: int | None = None
) -> Path:
    """Loss (left axis) and val mIoU (right axis) against iterations, written to ``png``; the
    title says how many validation images (``val_images``) the mIoU was measured on, which
    may be fewer than an evaluation of the whole split uses (``val_max_images``)."""
    plt = pyplot()
    recs = read_metrics(metrics)
    train = [r for r in recs if "loss" in r]
    val = [r for r in recs if "val_miou" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(
            [r["iteration"] for r in train],
            [r["loss"] for r in train],
            lw=0.8,
            color="tab:blue",
            label="train loss",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss", color="tab:blue")
    if val:
        ax2 = ax.twinx()
        ax2.plot(
            [r["iteration"] for r in val],
            [100 * r["val_miou"] for r in val],
            "o-",
            color="tab:red",
            label="val mIoU",
        )
        ax2.set_ylabel("val mIoU (%)", color="tab:red")
        ax.set_title(curve_title(val, val_images))
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
