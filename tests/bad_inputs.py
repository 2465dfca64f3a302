"""A generated corpus of good, odd and broken image files, for tests of every reader of user
images (``atrous.imageio.read_image`` and, through it, predict, eval and ``data check``).

:func:`write_image_corpus` writes each file into a folder and returns what reading it should
give: ``None`` (reads fine, as HxWx3 uint8) or a substring of the ``ImageReadError``
problem. :data:`EXPECTED_WARNINGS` names the readable files that also warn
(``ImageReadWarning``) and a substring of that warning. :data:`READ_SHAPES` is the shape each
readable file reads as.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "EXPECTED_WARNINGS",
    "READ_SHAPES",
    "png_bytes",
    "write_image_corpus",
]

H, W = 12, 16  # the size of most corpus images (rows, columns)

# Readable files that warn, and a substring of the warning.
EXPECTED_WARNINGS: dict[str, str] = {
    "grey16_dark.png": "only up to",
    "animated.gif": "3 frames",
    "animated.png": "3 frames",
    "multipage.tif": "2 frames",
}

# The shape read_image returns for each readable file.
READ_SHAPES: dict[str, tuple[int, int, int]] = {
    "good.jpg": (H, W, 3),
    "grey8.png": (H, W, 3),
    "bilevel.png": (H, W, 3),
    "grey_alpha.png": (H, W, 3),
    "grey16.png": (H, W, 3),
    "grey16_dark.png": (H, W, 3),
    "grey16.tif": (H, W, 3),
    "rgb16.png": (H, W, 3),
    "rgba.png": (H, W, 3),
    "palette.png": (H, W, 3),
    "palette_transparent.png": (H, W, 3),
    "cmyk.jpg": (H, W, 3),
    "ycbcr.tif": (H, W, 3),
    "one_pixel.png": (1, 1, 3),
    "two_by_three.png": (2, 3, 3),
    "exif_rotated.jpg": (W, H, 3),  # orientation 6: shown rotated, W rows
    "animated.gif": (H, W, 3),
    "animated.png": (H, W, 3),
    "multipage.tif": (H, W, 3),
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(pixels: np.ndarray, color_type: int, bit_depth: int = 16) -> bytes:
    """A PNG file written byte by byte (for what PIL cannot write, e.g. 48-bit RGB).

    ``pixels`` is HxW or HxWxC of unsigned integers; ``color_type`` is PNG's (0 grey, 2 RGB,
    4 grey+alpha, 6 RGBA)."""
    h, w = pixels.shape[:2]
    raw = pixels.astype(">u2" if bit_depth == 16 else np.uint8)
    rows = b"".join(b"\x00" + raw[y].tobytes() for y in range(h))  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG that declares ``width`` x ``height`` 8-bit grey pixels but holds
    one compressed row: tiny on disk, huge once decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def write_image_corpus(folder: Path) -> dict[str, str | None]:
    """Write the corpus into ``folder``; return ``{file name: None if it reads fine, else a
    substring of its ImageReadError problem}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    ramp16 = np.linspace(0, 65535, H * W).astype(np.uint16).reshape(H, W)
    outcome: dict[str, str | None] = {}

    def save(name: str, image: Image.Image, **kw: object) -> None:
        image.save(folder / name, **kw)
        outcome[name] = None

    save("good.jpg", Image.fromarray(rgb), quality=95)
    save("grey8.png", Image.fromarray(grey, mode="L"))
    save("bilevel.png", Image.fromarray(grey > 127))
    save("grey_alpha.png", Image.fromarray(np.dstack([grey, grey[::-1]]), mode="LA"))
    save("grey16.png", Image.fromarray(ramp16))  # I;16, the full 0..65535 range
    save("grey16_dark.png", Image.fromarray((ramp16 >> 4).astype(np.uint16)))  # 12-bit data
    save("grey16.tif", Image.frombytes("I;16B", (W, H), ramp16.astype(">u2").tobytes()))
    rgb16 = (rgb.astype(np.uint16) * 257) ^ rng.integers(0, 256, rgb.shape, dtype=np.uint16)
    (folder / "rgb16.png").write_bytes(png_bytes(rgb16, color_type=2))
    outcome["rgb16.png"] = None
    rgba = np.dstack([rgb, rng.integers(0, 256, (H, W), dtype=np.uint8)])
    save("rgba.png", Image.fromarray(rgba, mode="RGBA"))
    palette = Image.fromarray(rgb).quantize(16)
    save("palette.png", palette)
    save("palette_transparent.png", palette, transparency=bytes(range(0, 256, 16)))
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    save("ycbcr.tif", Image.fromarray(rgb).convert("YCbCr"))
    save("one_pixel.png", Image.fromarray(rgb[:1, :1]))
    save("two_by_three.png", Image.fromarray(rgb[:2, :3]))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    save("exif_rotated.jpg", Image.fromarray(rgb), quality=95, exif=exif)
    frames = [Image.fromarray(np.full((H, W, 3), v, np.uint8)) for v in (40, 120, 200)]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100)
    save("animated.png", frames[0], save_all=True, append_images=frames[1:], duration=100)
    save("multipage.tif", frames[0], save_all=True, append_images=frames[1:2])

    good_png = folder / "_full.png"
    Image.fromarray(rgb).save(good_png)
    data = good_png.read_bytes()
    good_png.unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    outcome["truncated.png"] = "truncated"
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    outcome["truncated.jpg"] = "truncated"
    (folder / "empty.png").write_bytes(b"")
    outcome["empty.png"] = "empty file"
    (folder / "text.png").write_text("name,label\ncat,1\n")
    outcome["text.png"] = "not an image"
    Image.fromarray(rng.random((H, W), dtype=np.float32)).save(folder / "float32.tif")
    outcome["float32.tif"] = "unsupported bit depth"
    int32 = (np.arange(H * W, dtype=np.int32).reshape(H, W) * 100_000).astype(np.int32)
    Image.fromarray(int32).save(folder / "int32.tif")
    outcome["int32.tif"] = "unsupported bit depth"
    (folder / "bomb.png").write_bytes(_bomb_png(100_000, 100_000))
    outcome["bomb.png"] = "decompression bomb"
    return outcome
