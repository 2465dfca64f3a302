"""Small dataset trees in the real layouts, generated in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def save_rgb(path: Path, h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(
        img
    ).save(path)
    return img


def save_index(path: Path, arr: np.ndarray, palette: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="L")
    if palette is not None:
        im = im.convert("P")
        im.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
        im = Image.fromarray(arr.astype(np.uint8), mode="P")
        im.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    im.save(path)


def label(h: int = 12, w: int = 16, values=(0, 1, 2), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 100).choice(np.asarray(values), (h, w)).astype(np.uint8)


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    from atrous.data.palettes import voc_colormap

    root = tmp_path / "VOCdevkit" / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    names = ["2007_000001", "2007_000002", "2007_000003"]
    for i, n in enumerate(names):
        save_rgb(root / "JPEGImages" / f"{n}.jpg", seed=i)
        save_index(
            root / "SegmentationClass" / f"{n}.png",
            label(values=(0, 15, 255), seed=i),
            voc_colormap(),
        )
    (sets / "train.txt").write_text("2007_000001\n2007_000002\n")
    (sets / "val.txt").write_text("2007_000003\n")
    return tmp_path / "VOCdevkit"
