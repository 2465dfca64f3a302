"""A corpus of bad datasets for end-to-end checks (``atrous data check / eval / train``).

:func:`write_dataset_corpus` writes, under ``root``:

- ``folder/``: folder format (``images/*.jpg`` + ``masks/*.png`` paired by stem, no split
  files, ``classes.txt`` with 3 classes, no colours), 24x32 images; ``good_*`` pairs load
  (masks: 8-bit grey, 16-bit, 1-bit, opaque grey+alpha), each ``bad_*`` pair has one fault
  (including a transparent grey+alpha mask and a decompression-bomb mask);
- ``voc_palette/``: a VOC layout (``VOCdevkit/VOC2012``, train/val lists) whose palette PNGs
  use an annotation tool's palette, not VOC's: rejected by default, read with
  ``palette_check="off"`` (``--palette-check off``); ``cvat_size`` also has the wrong size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 24, 32
FOLDER = "folder"
VOC = "voc_palette"
_TOOL_PALETTE = [(0, 0, 0), (250, 50, 83), (51, 221, 255)] + [(9, 9, 9)] * 253


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height`` grey pixels, with one row of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _image(path: Path, seed: int, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def _labels(seed: int, values: tuple[int, ...], h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed + 7).choice(np.asarray(values), (h, w))


def _index(path: Path, arr: np.ndarray, palette: list | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        Image.fromarray(arr).save(path)
        return
    im = Image.fromarray(arr.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        im.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    im.save(path)


def write_dataset_corpus(root: Path) -> dict[str, str]:
    """Write both datasets; return {bad file name: substring of its reported problem} (the
    problems under the defaults; the folder's names are unique across both datasets)."""
    root = Path(root)
    f = root / FOLDER
    (f / "masks").mkdir(parents=True, exist_ok=True)
    (f / "classes.txt").write_text("background\ncat\ndog\n")
    for i in range(4):
        _image(f / "images" / f"good_{i}.jpg", i)
        _index(f / "masks" / f"good_{i}.png", _labels(i, (0, 1, 2, 255)))
    _image(f / "images" / "good_16bit.jpg", 10)
    _index(f / "masks" / "good_16bit.png", _labels(10, (0, 1, 2)).astype(np.uint16))
    # A 1-bit mask (values 0/1) and an opaque grey+alpha mask read as their grey values.
    _image(f / "images" / "good_bilevel.jpg", 11)
    Image.fromarray(_labels(11, (0, 1)).astype(bool)).save(f / "masks" / "good_bilevel.png")
    _image(f / "images" / "good_la.jpg", 12)
    la = np.dstack([_labels(12, (0, 2)), np.full((H, W), 255)]).astype(np.uint8)
    Image.fromarray(la, mode="LA").save(f / "masks" / "good_la.png")
    expected: dict[str, str] = {}
    _image(f / "images" / "bad_la_alpha.jpg", 13)
    la[..., 1] = 0
    Image.fromarray(la, mode="LA").save(f / "masks" / "bad_la_alpha.png")
    expected["bad_la_alpha.png"] = "the alpha channel is not a label"
    _image(f / "images" / "bad_mask_bomb.jpg", 14)
    (f / "masks" / "bad_mask_bomb.png").write_bytes(_bomb_png(100_000, 100_000))
    expected["bad_mask_bomb.png"] = f"mask size 100000x100000 differs from image {W}x{H}"
    for n, name in enumerate(("bad_size", "bad_unreadable", "bad_missing", "bad_value")):
        _image(f / "images" / f"{name}.jpg", 20 + n)
    # Wrong size and out-of-range values: the size is the fault reported.
    _index(f / "masks" / "bad_size.png", _labels(20, (0, 9), 12, 16))
    expected["bad_size.png"] = f"mask size 16x12 differs from image {W}x{H}"
    (f / "masks" / "bad_unreadable.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    expected["bad_unreadable.png"] = "unreadable mask"
    expected["bad_missing.png"] = "mask file not found"
    _index(f / "masks" / "bad_value.png", _labels(23, (0, 1, 7)))
    expected["bad_value.png"] = "label values [7]"
    _image(f / "images" / "bad_rgb.jpg", 24)
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(f / "masks" / "bad_rgb.png")
    expected["bad_rgb.png"] = "RGB mask"
    (f / "images" / "bad_image.jpg").write_bytes(b"not a jpeg")
    _index(f / "masks" / "bad_image.png", _labels(25, (0, 1)))
    expected["bad_image.jpg"] = "unreadable image"

    voc = root / VOC / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    names = ["cvat_000001", "cvat_000002", "cvat_000003", "cvat_size"]
    for i, name in enumerate(names):
        _image(voc / "JPEGImages" / f"{name}.jpg", 40 + i)
        h, w = (12, 16) if name == "cvat_size" else (H, W)
        _index(
            voc / "SegmentationClass" / f"{name}.png",
            _labels(40 + i, (0, 1, 2), h, w),
            _TOOL_PALETTE,
        )
        expected[f"{name}.png"] = 'palette_check="off"'
    expected["cvat_size.png"] = f"mask size 16x12 differs from image {W}x{H}"
    (sets / "train.txt").write_text("\n".join(names[:2] + names[3:]) + "\n")
    (sets / "val.txt").write_text(names[2] + "\n")
    return expected
