"""Bad input is reported with its real fault (issue #11): size before values, palettes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from data_helpers import label, save_index, save_rgb
from PIL import Image

from atrous.data import DatasetError, FolderDataset, VOCSegmentation, build_dataset
from atrous.data.palettes import ADE20K_PALETTE

_ALIEN = ADE20K_PALETTE.tolist() + [[0, 0, 0]] * 106  # a palette that is not VOC's


def test_voc_wrong_size_and_wrong_palette_reports_the_size(voc_root: Path) -> None:
    bad = voc_root / "VOC2012" / "SegmentationClass" / "2007_000002.png"
    save_index(bad, label(8, 10, values=(0, 15), seed=1), _ALIEN)
    with pytest.raises(DatasetError, match=r"mask size 10x8 differs from image 16x12"):
        VOCSegmentation(voc_root, "train")[1]


def test_voc_rgb_mask_wrong_size_and_unknown_colour_reports_the_size(voc_root: Path) -> None:
    bad = voc_root / "VOC2012" / "SegmentationClass" / "2007_000002.png"
    Image.fromarray(np.full((8, 10, 3), 7, np.uint8)).save(bad)
    with pytest.raises(DatasetError, match=r"mask size 10x8 differs from image 16x12"):
        VOCSegmentation(voc_root, "train")[1]


def test_folder_wrong_size_and_bad_values_reports_the_size(tmp_path: Path) -> None:
    save_rgb(tmp_path / "images" / "a.png")
    save_index(tmp_path / "masks" / "a.png", np.full((5, 7), 9, np.uint8))
    with pytest.raises(DatasetError, match=r"a\.png: mask size 7x5 differs from image 16x12"):
        FolderDataset(tmp_path, num_classes=2)[0]


def test_missing_folder_root_is_the_first_error(tmp_path: Path) -> None:
    # Not "give class_names, classes_file or num_classes": the folder itself is missing.
    with pytest.raises(FileNotFoundError, match=r"nope: dataset folder not found"):
        build_dataset("folder", tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match=r"nope: dataset folder not found"):
        FolderDataset(tmp_path / "nope", num_classes=2)


def test_cityscapes_wrong_size_and_undefined_ids_reports_the_size(tmp_path: Path) -> None:
    save_rgb(tmp_path / "leftImg8bit" / "val" / "c" / "c_0_0_leftImg8bit.png")
    save_index(tmp_path / "gtFine" / "val" / "c" / "c_0_0_gtFine_labelIds.png", np.full((4, 4), 60))
    with pytest.raises(DatasetError, match=r"mask size 4x4 differs from image 16x12"):
        build_dataset("cityscapes", tmp_path, "val")[0]


def _alien_voc(voc_root: Path) -> None:
    for i, n in enumerate(["2007_000001", "2007_000002"]):
        path = voc_root / "VOC2012" / "SegmentationClass" / f"{n}.png"
        save_index(path, label(values=(0, 15, 255), seed=i), _ALIEN)


def test_palette_check_error_names_the_option(voc_root: Path) -> None:
    _alien_voc(voc_root)
    with pytest.raises(DatasetError, match=r'palette.*palette_check="off".*--palette-check off'):
        build_dataset("voc", voc_root, "train")[0]


def test_palette_check_off_reads_the_indices(voc_root: Path) -> None:
    _alien_voc(voc_root)
    ds = build_dataset("voc", voc_root, "train", palette_check="off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ds[0]["mask"], label(values=(0, 15, 255), seed=0))


def test_palette_check_warn_warns_once_naming_the_first_file(voc_root: Path) -> None:
    _alien_voc(voc_root)
    ds = build_dataset("voc", voc_root, "train", palette_check="warn")
    with pytest.warns(UserWarning, match=r"2007_000001\.png.*index 0 is drawn") as rec:
        masks = [ds[i]["mask"] for i in range(len(ds))]
    assert len([w for w in rec if "palette" in str(w.message)]) == 1
    np.testing.assert_array_equal(masks[1], label(values=(0, 15, 255), seed=1))


def test_palette_check_rejects_unknown_values(voc_root: Path) -> None:
    with pytest.raises(ValueError, match="palette_check must be"):
        build_dataset("voc", voc_root, "train", palette_check="maybe")
