"""atrous.imageio: the one image reader (EXIF orientation applied), its errors, the image
extensions and the label-map dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from atrous.imageio import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    label_dtype,
    read_image,
    stored_size,
)


def _jpeg_with_orientation(path: Path, orientation: int, h: int = 12, w: int = 16) -> None:
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, quality=95, exif=exif)


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    p = tmp_path / "photo.jpg"
    _jpeg_with_orientation(p, 6)
    with Image.open(p) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (16, 12, 3)
    np.testing.assert_array_equal(out, expected)
    assert stored_size(p) == (12, 16)  # the pixels as stored, before orientation


def test_read_image_expands_grey_and_palette(tmp_path: Path) -> None:
    p = tmp_path / "grey.png"
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), mode="L").save(p)
    out = read_image(p)
    assert out.shape == (3, 4, 3) and out.flags.writeable
    np.testing.assert_array_equal(out[..., 0], np.arange(12).reshape(3, 4))


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="image file not found") as e:
        read_image(tmp_path / "missing.jpg")
    assert e.value.path == str(tmp_path / "missing.jpg")
    assert isinstance(e.value, ValueError)
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"notes\.jpg: unreadable image \(not an image"):
        read_image(tmp_path / "notes.jpg")
    good = tmp_path / "good.jpg"
    _jpeg_with_orientation(good, 1, 64, 64)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"cut\.jpg: unreadable image") as e:
        read_image(tmp_path / "cut.jpg")
    assert e.value.problem.startswith("unreadable image")


def test_image_extensions_cover_the_readers() -> None:
    for ext in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"):
        assert ext in IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


def test_label_dtype_keeps_classes_and_ignore_apart() -> None:
    assert label_dtype(1) == np.uint8
    assert label_dtype(255) == np.uint8  # ids 0..254 and the ignore index 255
    assert label_dtype(256) == np.uint8  # ids 0..255 (predictions; no room for ignore)
    assert label_dtype(257) == np.uint16
    assert label_dtype(65536) == np.uint16
    with pytest.raises(ValueError):
        label_dtype(0)
    with pytest.raises(ValueError):
        label_dtype(65537)


def test_read_image_bytes_reads_uploads_by_the_same_policy() -> None:
    import io

    from PIL import Image

    from atrous.imageio import ImageTooLarge, image_kind, read_image_bytes

    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    data = buf.getvalue()
    out = read_image_bytes(data, "up.png")
    assert out.shape == (5, 7, 3) and out[0, 0].tolist() == [200, 0, 0]  # alpha dropped
    assert image_kind(data[:16]) == "PNG" and image_kind(b"RIFF1234WAVE") is None
    with pytest.raises(ImageReadError, match=r"^up\.png: unreadable image \(empty"):
        read_image_bytes(b"", "up.png")
    with pytest.raises(ImageReadError, match=r"^up\.png: unreadable image \(truncated"):
        read_image_bytes(data[:40], "up.png")
    with pytest.raises(ImageReadError, match=r"not an image: unknown format"):
        read_image_bytes(b"plain text, no image", "up.png")
    with pytest.raises(ImageTooLarge, match=r"35 pixels \(7x5\), more than the limit 20"):
        read_image_bytes(data, "up.png", max_pixels=20)
