"""Drawing label maps: the colours of a model or dataset and the overlays.

The datasets' class names and palettes are in :mod:`atrous.class_tables` (re-exported here).
Every palette is a ``(num_classes, 3)`` uint8 array indexed by *train id* (the label the loss
sees); the ignore index 255 has no entry. :func:`palette_for` picks the colours of a model or
dataset (its own palette, else the VOC colour map), :func:`colorize` draws a label map with
them and :func:`overlay` blends that drawing over the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Defined in atrous.class_tables (layer 0), re-exported here where they always were.
from atrous.class_tables import (  # noqa: F401
    ADE20K_CLASSES,
    ADE20K_FULL_NAMES,
    ADE20K_PALETTE,
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    VOC_PALETTE,
    voc_colormap,
)
from atrous.constants import IGNORE_INDEX as IGNORE_INDEX  # re-exported, defined in constants


def colorize(
    label: np.ndarray, palette: np.ndarray, ignore_color: Sequence[int] = (255, 255, 255)
) -> np.ndarray:
    """Draw an ``HxW`` label map as ``HxWx3`` uint8 RGB; ignore (255) and unknown ids get
    ``ignore_color``."""
    label = np.asarray(label)
    lut = np.tile(np.asarray(ignore_color, np.uint8), (256, 1))
    lut[: len(palette)] = palette
    return lut[np.clip(label, 0, 255).astype(np.intp)]


def palette_for(num_classes: int, palette: np.ndarray | Sequence | None = None) -> np.ndarray:
    """The ``(num_classes, 3)`` uint8 colours to draw ``num_classes`` classes with.

    ``palette`` (any ``R G B`` rows, e.g. a dataset's palette or the one saved with a model's
    weights) gives the first colours; classes it does not cover, or all of them when it is
    None, get the Pascal VOC colour map's. Raises ValueError for a palette that is not
    integer ``R G B`` rows in 0..255.
    """
    if num_classes < 1:
        raise ValueError(f"need at least 1 class, got {num_classes}")
    colours = voc_colormap(num_classes)
    if palette is None:
        return colours
    try:
        rows = np.asarray(palette, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"palette must be integer R G B rows, got {palette!r:.80}") from e
    if rows.size % 3 or rows.ndim > 2 or (rows.ndim == 2 and rows.shape[1] != 3):
        raise ValueError(f"palette must be R G B rows, got shape {rows.shape}")
    rows = rows.reshape(-1, 3)
    if rows.size and (rows.min() < 0 or rows.max() > 255):
        raise ValueError(f"palette colours must be in 0..255, got {rows.min()}..{rows.max()}")
    n = min(len(rows), num_classes)
    colours[:n] = rows[:n]
    return colours


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """``labels`` drawn over ``image`` (HxWx3 uint8): ``(1 - alpha) * image + alpha *
    colorize(labels, palette)``, rounded to the nearest uint8 (the arithmetic of ``atrous
    predict``'s ``_overlay.jpg``). Pixels where the boolean HxW ``where`` is False keep the
    image (``where=labels > 0`` tints the objects only, as the demo report does).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != labels.shape:
        raise ValueError(f"need an HxWx3 image and HxW labels, got {image.shape}, {labels.shape}")
    colours = colorize(labels, palette).astype(np.float32)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    out = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    if where is not None:
        out = np.where(np.asarray(where, bool)[..., None], out, image.astype(np.uint8))
    return out
