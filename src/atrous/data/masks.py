"""Mask files to train ids: each image mode decoded, palette PNGs compared with the
dataset's colours, colour-coded masks read through a palette, raw labels mapped by lookup
table, and the error of a mask whose size is not its image's.

Pure functions of the file and the dataset's tables: the dataset
(:class:`~atrous.data.base.SegmentationDataset`) calls them and keeps the policy
(``palette_check``, skipping bad samples).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from atrous.constants import IGNORE_INDEX
from atrous.data.errors import DatasetError
from atrous.imageio import ImageReadError, label_dtype, stored_size

# Lookup-table value for a raw label that the dataset does not define.
INVALID = -1

# What a mask decoder returns: the values, and whether they already are train ids.
Decoded = tuple[np.ndarray, bool]


def make_lut(mapping: Mapping[int, int], size: int = 256, default: int = INVALID) -> np.ndarray:
    """A raw-label -> train-id table; raw values not in ``mapping`` get ``default``."""
    lut = np.full(size, default, dtype=np.int16)
    for k, v in mapping.items():
        lut[k] = v
    return lut


def identity_lut(num_classes: int, void: Sequence[int] = ()) -> np.ndarray:
    """0..n-1 kept, 255 and each ``void`` raw value -> ignore, anything else invalid."""
    mapping = {i: i for i in range(num_classes)}
    mapping[IGNORE_INDEX] = IGNORE_INDEX
    for v in void:
        mapping[v] = IGNORE_INDEX
    return make_lut(mapping)


def read_mask_image(path: Path, decode: Callable[[Image.Image], Decoded]) -> Decoded:
    """Open the mask image at ``path`` and ``decode`` it; PIL's errors become
    :class:`DatasetError` naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return decode(im)
    except FileNotFoundError as e:
        raise DatasetError(path, "mask file not found") from e
    except DatasetError:
        raise
    except Image.DecompressionBombError as e:
        raise DatasetError(path, f"mask declares too many pixels to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(path, f"unreadable mask ({e})") from e


def decode_mask_image(
    im: Image.Image,
    path: Path,
    *,
    rgb_to_index: Callable[[np.ndarray], np.ndarray],
    check_palette: Callable[[Image.Image, np.ndarray], None] | None = None,
) -> Decoded:
    """A loaded mask image's values by mode: palette and grey images hold the labels,
    colour images are decoded by ``rgb_to_index`` (their values are then train ids);
    ``check_palette(im, indices)`` vets a palette PNG's colours."""
    if im.mode == "P":
        idx = np.asarray(im, dtype=np.uint8)
        if check_palette is not None:
            check_palette(im, idx)
        return idx, False
    if im.mode in ("L", "1"):  # "1": a bilevel mask (1-bit PNG/TIFF), values 0 and 1
        return np.asarray(im, dtype=np.uint8), False
    if im.mode == "LA":  # grey + alpha: the grey values are the labels if alpha is unused
        if np.asarray(im.getchannel("A")).min() < 255:
            raise DatasetError(
                path,
                "grey+alpha mask with transparent pixels: the alpha channel is not a label; "
                "save the mask as 8-bit grey (mode L), with the void pixels set to 255",
            )
        return np.asarray(im.getchannel("L"), dtype=np.uint8), False
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.int64), False
    if im.mode in ("RGB", "RGBA"):
        return rgb_to_index(np.asarray(im.convert("RGB"), np.uint8)), True
    raise DatasetError(
        path,
        f"unsupported mask mode {im.mode!r} (want a palette PNG, 8/16-bit grey, 1-bit or "
        "RGB colour codes)",
    )


def palette_mismatch(
    im: Image.Image, idx: np.ndarray, palette: np.ndarray, owner: str
) -> str | None:
    """Why a palette PNG's colours are not ``palette`` (the classes' colours, by index)
    for the indices it uses, or None when they agree: a PNG saved with another dataset's
    palette is a classic silent label mix-up. ``owner`` names the palette's dataset."""
    pal = im.getpalette()
    if pal is None:
        return None
    pal_arr = np.zeros((256, 3), np.uint8)
    pal = np.asarray(pal[: 256 * 3], np.uint8).reshape(-1, 3)
    pal_arr[: len(pal)] = pal
    used = np.flatnonzero(np.bincount(idx.ravel(), minlength=256))
    used = used[used < len(palette)]
    bad = [int(u) for u in used if not np.array_equal(pal_arr[u], palette[u])]
    if not bad:
        return None
    u = bad[0]
    return (
        f"palette PNG colours do not match the {owner} palette: index {u} "
        f"is drawn {tuple(int(c) for c in pal_arr[u])}, expected "
        f"{tuple(int(c) for c in palette[u])} ({len(bad)} index(es) differ)"
    )


def rgb_to_index(
    rgb: np.ndarray, path: Path, palette: np.ndarray, ignore_colours: Iterable[int]
) -> np.ndarray:
    """A colour-coded mask -> class indices through ``palette`` (one colour per class);
    ``ignore_colours`` (packed ``0xRRGGBB``) -> 255; any other colour is an error."""
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
    code |= rgb[..., 2]
    pal = palette.astype(np.int32)
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    ignore = set(ignore_colours)
    colours, inverse = np.unique(code, return_inverse=True)
    out = np.full(colours.shape, INVALID, np.int64)
    for j, c in enumerate(colours):
        hit = np.flatnonzero(keys == c)
        if hit.size:
            out[j] = hit[0]
        elif c in ignore:
            out[j] = IGNORE_INDEX
    if (out == INVALID).any():
        c = int(colours[np.flatnonzero(out == INVALID)[0]])
        raise DatasetError(
            path, f"RGB mask has colour {(c >> 16, (c >> 8) & 255, c & 255)} not in the palette"
        )
    return out[inverse.reshape(code.shape)]


def to_train_ids(raw: np.ndarray, path: Path, lut: np.ndarray, num_classes: int) -> np.ndarray:
    """Raw labels -> train ids (0..n-1, 255 = ignore) through ``lut``; values it does not
    define are an error naming the file and the values."""
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        bad = np.unique(raw[(raw < 0) | (raw >= len(lut))])
        raise DatasetError(path, f"label values {_fmt_values(bad)} outside the classes")
    mapped = lut[raw]
    if (mapped == INVALID).any():
        bad = np.unique(raw[mapped == INVALID])
        raise DatasetError(
            path,
            f"label values {_fmt_values(bad)} are neither classes (0..{num_classes - 1} "
            f"after mapping) nor the ignore index",
        )
    return mapped.astype(label_dtype(num_classes))


def stored_mask_shape(path: Path) -> tuple[int, int] | None:
    """A mask image's (h, w) from its header; None when PIL cannot open it (a non-image
    format such as SBD's .mat, or a bad file that the full read reports)."""
    try:
        return stored_size(path)  # the header only, whatever its declared size
    except Exception:
        return None


def size_mismatch(
    image: Path, mask: Path, mask_shape: tuple[int, ...], image_shape: tuple[int, ...]
) -> DatasetError:
    """The error for a mask whose size is not its image's, saying when the mask fits the
    image's stored pixels, i.e. was drawn before a 90°/270° EXIF rotation."""
    mh, mw = mask_shape[:2]
    ih, iw = image_shape[:2]
    try:
        drawn_unrotated = tuple(mask_shape[:2]) == stored_size(image) != (ih, iw)
    except ImageReadError:
        drawn_unrotated = False
    if drawn_unrotated:
        return DatasetError(
            mask,
            f"mask size {mw}x{mh} fits image {image} only before its EXIF orientation "
            f"(shown {iw}x{ih}): the mask seems drawn on the un-rotated pixels; images are "
            "read as displayed, masks as stored, so redraw the mask on the displayed image "
            "or save the image with its rotation applied",
        )
    return DatasetError(mask, f"mask size {mw}x{mh} differs from image {iw}x{ih} ({image.name})")


def _fmt_values(vals: np.ndarray, limit: int = 8) -> str:
    v = [int(x) for x in vals[:limit]]
    return str(v)[:-1] + (", ...]" if len(vals) > limit else "]")
