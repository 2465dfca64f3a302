"""Small dataset trees in the real layouts, generated in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import label, save_index, save_rgb


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
