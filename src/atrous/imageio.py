"""The one image reader of atrous, the image extensions it looks for, and the label-map dtype.

Orientation policy: **images are read as displayed**, with their EXIF orientation applied,
the way photo viewers and annotation tools (labelme, CVAT...) show them; **masks are read as
stored** and never rotated. A mask drawn on the displayed image therefore stays aligned with
the image, whether it reaches the model through ``atrous predict`` or through a dataset. A
mask that fits only the stored pixels (size equal to :func:`stored_size`, different from the
displayed size: a 90°/270° EXIF rotation) was drawn on the un-rotated pixels; the datasets
report it as an error. A 180° rotation or a mirror keeps the size and cannot be detected.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from atrous.constants import IGNORE_INDEX

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "label_dtype", "read_image", "stored_size"]

# File suffixes (lower case) that folder scans treat as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
)  # fmt: skip


class ImageReadError(ValueError):
    """An image file that cannot be read: ``path`` and ``problem`` (the message is both)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# What PIL raises for a missing, foreign, truncated, corrupt or oversized file.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, as displayed (EXIF orientation applied; grey,
    palette and alpha images converted to RGB). Raises :class:`ImageReadError`."""
    try:
        with Image.open(path) as im:
            return np.array(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)
    except _PIL_ERRORS as e:
        raise _read_error(path, e) from e


def stored_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of the pixels as stored, before EXIF orientation (the file header
    only). Raises :class:`ImageReadError`."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except _PIL_ERRORS as e:
        raise _read_error(path, e) from e


def _read_error(path: str | os.PathLike, e: Exception) -> ImageReadError:
    """The :class:`ImageReadError` for one of :data:`_PIL_ERRORS`."""
    if isinstance(e, FileNotFoundError):
        return ImageReadError(path, "image file not found")
    if isinstance(e, UnidentifiedImageError):
        return ImageReadError(path, "unreadable image (not an image file: unknown format)")
    if isinstance(e, Image.DecompressionBombError):
        return ImageReadError(path, f"unreadable image (too large: {e})")
    return ImageReadError(path, f"unreadable image ({e})")


def label_dtype(num_classes: int) -> np.dtype:
    """The dtype of a label map of ``num_classes`` classes: the smallest unsigned integer that
    holds every id ``0..num_classes-1`` and :data:`~atrous.constants.IGNORE_INDEX` (255).

    uint8 up to 256 classes, uint16 up to 65,536 (the 8- and 16-bit PNG masks). Above 255
    classes, id 255 *is* the ignore value: predictions (no ignore pixels) are fine, but a
    ground-truth map cannot tell the two apart, which is why datasets allow 1..254 classes.
    """
    num_classes = int(num_classes)
    if not 1 <= num_classes <= 65536:
        raise ValueError(f"label maps hold 1..65536 classes, got {num_classes}")
    largest = max(num_classes - 1, IGNORE_INDEX)
    return np.dtype(np.uint8) if largest <= np.iinfo(np.uint8).max else np.dtype(np.uint16)
