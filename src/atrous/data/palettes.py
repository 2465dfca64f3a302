"""Drawing label maps: the colours of a model or dataset and the overlays.

The datasets' class names and palettes are in :mod:`atrous.class_tables` (re-exported here).
Every palette is a ``(num_classes, 3)`` uint8 array indexed by *train id* (the label the loss
sees); the ignore index 255 has no entry. :func:`palette_for` picks the colours of a model or
dataset (its own palette, else the VOC colour map), :func:`colorize` draws a label map with
them, :func:`overlay` blends that drawing over the image and :func:`draw_legend` names the
colours on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (its fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, TypeError):  # Pillow built without FreeType, or before 10.1
        return ImageFont.load_default()


def draw_legend(
    image: np.ndarray,
    entries: Sequence[tuple[str, Sequence[int]]],
    size: int | None = None,
) -> np.ndarray:
    """``image`` (HxWx3 uint8) with a legend in its top-left corner: one row per ``(name,
    (r, g, b))`` entry, a swatch of the colour and the name, on a dark translucent box. ``size``
    is the text height in pixels (default: 1/40 of the image height, at least 10). Rows that do
    not fit in the image are summed up as a last "+N more" row. Returns a new array."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need an HxWx3 image, got shape {image.shape}")
    h, w = image.shape[:2]
    if not entries:
        return image.copy()
    px = int(size) if size is not None else max(10, round(h / 40))
    font = _font(px)
    pad, row = max(2, px // 4), px + max(2, px // 4)
    fit = max(1, (h - 2 * pad) // row)
    shown = list(entries) if len(entries) <= fit else list(entries)[: fit - 1]
    lines = [(name, tuple(int(c) for c in colour)) for name, colour in shown]
    if len(shown) < len(entries):
        lines.append((f"+{len(entries) - len(shown)} more", None))  # type: ignore[arg-type]
    text_w = max(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(n, font=font) for n, _ in lines)
    box_w = min(w, int(3 * pad + px + text_w + pad))
    box_h = min(h, 2 * pad + len(lines) * row)
    out = image.astype(np.uint8, copy=True)
    # Darken the box behind the rows (to 40%), then draw on it alone: the rest is untouched.
    region = Image.fromarray((out[:box_h, :box_w].astype(np.uint16) * 2 // 5).astype(np.uint8))
    draw = ImageDraw.Draw(region)
    for k, (name, colour) in enumerate(lines):
        y = pad + k * row
        if colour is not None:
            draw.rectangle((pad, y, pad + px - 1, y + px - 1), fill=colour, outline=(255, 255, 255))
        draw.text((2 * pad + px, y), name, fill=(255, 255, 255), font=font)
    out[:box_h, :box_w] = np.asarray(region)
    return out
