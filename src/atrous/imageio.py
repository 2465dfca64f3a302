"""The one image reader of atrous, the image extensions it looks for, and the label-map dtype.

Orientation policy: **images are read as displayed**, with their EXIF orientation applied,
the way photo viewers and annotation tools (labelme, CVAT...) show them; **masks are read as
stored** and never rotated. A mask drawn on the displayed image therefore stays aligned with
the image, whether it reaches the model through ``atrous predict`` or through a dataset. A
mask that fits only the stored pixels (size equal to :func:`stored_size`, different from the
displayed size: a 90°/270° EXIF rotation) was drawn on the un-rotated pixels; the datasets
report it as an error. A 180° rotation or a mirror keeps the size and cannot be detected.

Input policies of :func:`read_image` (every image becomes HxWx3 uint8 RGB):

- **8-bit modes** (grey, 1-bit, palette, RGB, CMYK, YCbCr...) are converted by Pillow; CMYK
  uses its plain formula (no ICC colour management).
- **Alpha is dropped and the stored colours kept** (grey+alpha, RGBA, palette transparency),
  as PIL's ``convert`` and most segmentation tools do; nothing is composited.
- **16-bit grey** (I;16, I;16B, I;16L, and 32-bit mode I whose values fit 0..65535) is scaled
  by the full 16-bit range, ``round(x * 255 / 65535)``, the same for every file (like
  skimage's ``img_as_ubyte``). **16-bit colour PNGs** are decoded by Pillow to their high byte
  (``x >> 8``, within one level of that scaling). A 16-bit image whose values stay below
  1/16 of the range (e.g. 12-bit microscopy data) reads dark: an :class:`ImageReadWarning`.
- **32-bit integer images beyond 16 bits and float images** are refused (ImageReadError).
- **Animated and multi-page files**: the first frame, with an :class:`ImageReadWarning`.
- **Decompression bombs**: an image whose header declares more than ``max_pixels``
  (:data:`MAX_PIXELS`, 200 million: more than any photo or aerial tile people segment) is
  refused before decoding, whatever PIL's ``Image.MAX_IMAGE_PIXELS``; PIL's own bomb warning
  and error never leak.
- **Broken files** (missing, directory, permission denied, empty, truncated, not an image)
  raise :class:`ImageReadError` whose ``problem`` says which and what to do.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from atrous.constants import IGNORE_INDEX, MAX_PIXELS

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageReadError",
    "ImageReadWarning",
    "ImageTooLarge",
    "image_kind",
    "label_dtype",
    "read_image",
    "read_image_bytes",
    "stored_size",
]

# File suffixes (lower case) that folder scans treat as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
)

# The default pixel limit of read_image (checked from the header, before decoding).

_DARK_16 = 65536 // 16  # a 16-bit image below this maximum reads dark
_FORMATS = "JPEG, PNG, TIFF, BMP, WebP, GIF or PPM"
_SIGNATURES = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
    b"RIFF": "WebP",
}
_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image file that cannot be read: ``path`` and ``problem`` (the message is both)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ImageTooLarge(ImageReadError):
    """An image whose header declares more pixels than the reader's limit (a decompression
    bomb, or a real image over the limit): refused before decoding."""


class ImageReadWarning(UserWarning):
    """An image read with a loss worth knowing: only its first frame, or dark 16-bit data."""


# What PIL raises for a missing, foreign, truncated, corrupt or oversized file.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


OnWarning = Callable[[str], None]


def read_image(
    path: str | os.PathLike, max_pixels: int = MAX_PIXELS, on_warning: OnWarning | None = None
) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, as displayed (EXIF orientation applied), by the
    policies of this module's docstring. Raises :class:`ImageReadError`; warns
    :class:`ImageReadWarning`, or hands each warning's text to ``on_warning`` instead (the
    thread-safe way to collect them: ``warnings.catch_warnings`` is process-wide)."""
    return _read(path, path, max_pixels, on_warning=on_warning)


def read_image_bytes(
    data: bytes,
    name: str = "upload",
    max_pixels: int = MAX_PIXELS,
    on_warning: OnWarning | None = None,
) -> np.ndarray:
    """:func:`read_image` of an encoded image held in memory (an HTTP upload), by the same
    policies; errors and warnings name ``name``."""
    if not data:
        raise ImageReadError(name, "unreadable image (empty (0 bytes)): send the image file")
    return _read(io.BytesIO(data), name, max_pixels, head=bytes(data[:16]), on_warning=on_warning)


def _warn(message: str, on_warning: OnWarning | None, stacklevel: int) -> None:
    if on_warning is not None:
        on_warning(message)
    else:
        warnings.warn(ImageReadWarning(message), stacklevel=stacklevel + 1)


def image_kind(head: bytes) -> str | None:
    """The format an encoded image's first bytes announce (``PNG``, ``JPEG``, ``WebP``...),
    or None."""
    if head.startswith(b"RIFF") and head[8:12] != b"WEBP":
        return None
    return next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), None)


def _read(
    src: str | os.PathLike | BinaryIO,
    name: str | os.PathLike,
    max_pixels: int | None,
    head: bytes | None = None,
    on_warning: OnWarning | None = None,
) -> np.ndarray:
    try:
        with _open(src, max_pixels, name) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                _warn(f"{name}: {frames} frames; only the first is read", on_warning, 3)
            return _to_rgb(name, im, on_warning)
    except ImageReadError:
        raise
    except _PIL_ERRORS as e:
        raise _read_error(name, e, head) from e


def stored_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of the pixels as stored, before EXIF orientation (the file header
    only). Raises :class:`ImageReadError`."""
    try:
        with _open(path, None) as im:
            return im.height, im.width
    except ImageReadError:
        raise
    except _PIL_ERRORS as e:
        raise _read_error(path, e) from e


def _open(
    path: str | os.PathLike | BinaryIO, max_pixels: int | None, name: str | os.PathLike = ""
) -> Image.Image:
    """``Image.open`` (the header only) under our pixel limit instead of PIL's; errors name
    ``name`` (default: ``path``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:
            with _PIL_LIMIT_LOCK:  # PIL's limit is global: lifted for this open only
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    if hasattr(path, "seek"):
                        path.seek(0)
                    im = Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise ImageTooLarge(
            name or path,
            f"{w * h} pixels ({w}x{h}), more than the limit {max_pixels}: "
            "a decompression bomb; if the image is real, raise the limit (max_pixels; CLI: "
            "--max-pixels)",
        )
    return im


def _to_rgb(
    path: str | os.PathLike, im: Image.Image, on_warning: OnWarning | None = None
) -> np.ndarray:
    """The decoded first frame of ``im`` as displayed, as HxWx3 uint8."""
    tile = im.tile[0].args if im.tile else None
    rawmode = tile if isinstance(tile, str) else str(tile[0]) if tile else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im.load()
    if im.getexif().get(0x0112, 1) != 1:
        ImageOps.exif_transpose(im, in_place=True)
    mode = im.mode
    if mode == "F":
        raise ImageReadError(
            path,
            "unsupported bit depth (32-bit floating-point pixels): convert it to an 8- or "
            "16-bit PNG (e.g. scaled to 0..65535 as uint16)",
        )
    if mode.startswith("I"):
        a = np.asarray(im)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ImageReadError(
                path,
                f"unsupported bit depth (32-bit integer pixels, values {lo}..{hi}): convert "
                "it to an 8- or 16-bit PNG",
            )
        _warn_dark(path, hi, 65535, on_warning)
        grey = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode != "RGB":
        im.info.pop("transparency", None)  # alpha dropped: the stored colours kept
        try:
            im = im.convert("RGB")
        except ValueError as e:
            raise ImageReadError(
                path, f"unsupported pixel mode {mode} ({e}): save it as 8-bit RGB"
            ) from e
    out = np.array(im, dtype=np.uint8)
    if "16" in rawmode:  # 16-bit colour, decoded to the high byte by Pillow
        _warn_dark(path, int(out.max()) * 256 + 255, 65535, on_warning)
    return out


def _warn_dark(
    path: str | os.PathLike, top: int, full: int, on_warning: OnWarning | None = None
) -> None:
    """Warn when 16-bit data stays below 1/16 of its range (``top``: its maximum)."""
    if top < _DARK_16:
        _warn(
            f"{path}: 16-bit image with values only up to {top} of {full} (less than 1/16 of "
            "the range, e.g. 12-bit data): scaled by the full 16-bit range, it reads dark; "
            "rescale it to 0..65535 if that is not wanted",
            on_warning,
            5,
        )


def _read_error(path: str | os.PathLike, e: Exception, head: bytes | None = None) -> ImageReadError:
    """The :class:`ImageReadError` for one of :data:`_PIL_ERRORS` (``head``: the data's first
    bytes when it is not a file)."""
    if isinstance(e, FileNotFoundError):
        return ImageReadError(path, "image file not found: check the path")
    if isinstance(e, IsADirectoryError):
        return ImageReadError(path, "unreadable image (it is a directory, not a file)")
    if isinstance(e, PermissionError):
        return ImageReadError(
            path, "unreadable image (permission denied): make the file readable (chmod a+r)"
        )
    again = "copy or export it again"
    if isinstance(e, UnidentifiedImageError):
        if head is None:
            try:
                with open(path, "rb") as f:
                    head = f.read(16)
            except OSError:
                head = b""
        if not head:
            return ImageReadError(path, f"unreadable image (empty file (0 bytes)): {again}")
        kind = image_kind(head)
        if kind is not None:
            return ImageReadError(
                path, f"unreadable image (truncated or corrupt {kind} file): {again}"
            )
        return ImageReadError(
            path,
            f"unreadable image (not an image: unknown format): give a {_FORMATS} file",
        )
    if isinstance(e, Image.DecompressionBombError):
        return ImageReadError(path, f"unreadable image (decompression bomb: {e})")
    if "truncat" in str(e).lower():
        return ImageReadError(path, f"unreadable image (truncated: {e}): {again}")
    return ImageReadError(path, f"unreadable image ({e}): the file seems corrupt; {again}")


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
