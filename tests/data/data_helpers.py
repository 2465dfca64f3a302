"""Helpers that write small images and masks in the real dataset layouts (uniquely named
module so it cannot clash with other test folders' conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
