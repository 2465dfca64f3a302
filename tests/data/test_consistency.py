"""Every dataset knows its classes; check_label_range finds labels beyond num_classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bad_datasets import FOLDER, write_dataset_corpus
from data_helpers import label, save_index, save_rgb

from atrous.data import build_dataset
from atrous.data.consistency import check_label_range


def _layouts(tmp_path: Path, voc_root: Path) -> dict[str, tuple[str, Path, str, dict]]:
    cs = tmp_path / "cs"
    save_rgb(cs / "leftImg8bit" / "val" / "c" / "c_0_0_leftImg8bit.png")
    save_index(cs / "gtFine" / "val" / "c" / "c_0_0_gtFine_labelIds.png", np.full((12, 16), 7))
    ade = tmp_path / "ade"
    save_rgb(ade / "images" / "validation" / "a.jpg")
    save_index(ade / "annotations" / "validation" / "a.png", label(values=(0, 1, 150)))
    cam = tmp_path / "cam"
    save_rgb(cam / "val" / "a.png")
    save_index(cam / "valannot" / "a.png", label(values=(0, 10, 11)))
    write_dataset_corpus(tmp_path / "corpus")
    nameless = tmp_path / "nameless"
    save_rgb(nameless / "images" / "a.png")
    save_index(nameless / "masks" / "a.png", label(values=(0, 1)))
    return {
        "voc": ("voc", voc_root, "train", {}),
        "cityscapes": ("cityscapes", cs, "val", {}),
        "ade20k": ("ade20k", ade, "val", {}),
        "camvid": ("camvid", cam, "val", {}),
        "folder_classes_file": ("folder", tmp_path / "corpus" / FOLDER, "", {}),
        "folder_num_classes": ("folder", nameless, "", {"num_classes": 2}),
        "synthetic": ("synthetic", None, "train", {"length": 2, "size": 16}),
    }


@pytest.mark.parametrize(
    "key",
    [
        "voc",
        "cityscapes",
        "ade20k",
        "camvid",
        "folder_classes_file",
        "folder_num_classes",
        "synthetic",
    ],
)
def test_every_dataset_exposes_classes_and_palette(tmp_path: Path, voc_root: Path, key) -> None:
    fmt, root, split, kw = _layouts(tmp_path, voc_root)[key]
    ds = build_dataset(fmt, root, split, **kw)
    assert ds.num_classes >= 1 and len(ds.class_names) == ds.num_classes
    assert ds.palette is not None and len(ds.palette) >= ds.num_classes
    assert np.asarray(ds.palette).shape[1:] == (3,)
    assert getattr(ds, "placeholder_names", False) == (key == "folder_num_classes")


def test_label_range_finds_values_beyond_a_smaller_num_classes(tmp_path: Path) -> None:
    cam = tmp_path / "cam"
    save_rgb(cam / "val" / "a.png")
    save_index(cam / "valannot" / "a.png", label(values=(0, 10, 11)))
    ds = build_dataset("camvid", cam, "val")
    assert check_label_range(ds, 21).ok  # more classes than CamVid's 11: masks cannot tell
    found = check_label_range(ds, 5)
    assert not found.ok and list(found.counts) == [10] and found.checked == 1
    assert "label values [10] are >= num_classes=5" in found.message()
    synthetic = build_dataset("synthetic", None, "train", length=2, size=16)
    assert check_label_range(synthetic, 2, samples=2).checked == 2
