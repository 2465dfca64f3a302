"""Datasets read images as displayed (EXIF orientation applied), exactly like
``atrous.imageio.read_image`` and ``atrous predict``; masks are read as stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import save_index
from PIL import Image, ImageOps

from atrous.data import DatasetError, FolderDataset
from atrous.imageio import read_image


def _rotated_jpeg(path: Path, h: int = 12, w: int = 16, orientation: int = 6) -> None:
    """A JPEG stored ``h`` x ``w`` that viewers show rotated (orientation 6: 90° clockwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, quality=95, exif=exif)


def test_dataset_image_equals_reader_and_exif_transpose(tmp_path: Path) -> None:
    _rotated_jpeg(tmp_path / "images" / "a.jpg")
    save_index(tmp_path / "masks" / "a.png", np.ones((16, 12), np.uint8))  # drawn as shown
    ds = FolderDataset(tmp_path, num_classes=2)
    sample = ds[0]
    with Image.open(tmp_path / "images" / "a.jpg") as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert sample["image"].shape == (16, 12, 3) and sample["mask"].shape == (16, 12)
    np.testing.assert_array_equal(sample["image"], shown)
    np.testing.assert_array_equal(sample["image"], read_image(tmp_path / "images" / "a.jpg"))


def test_mask_drawn_on_unrotated_pixels_is_a_clear_error(tmp_path: Path) -> None:
    _rotated_jpeg(tmp_path / "images" / "a.jpg")
    save_index(tmp_path / "masks" / "a.png", np.ones((12, 16), np.uint8))  # stored size
    ds = FolderDataset(tmp_path, num_classes=2)
    with pytest.raises(DatasetError, match=r"a\.png: .*a\.jpg.*un-rotated") as e:
        ds[0]
    assert e.value.path.endswith("a.png") and "EXIF" in e.value.problem
