"""Each dataset format owns its layout (``detect``, ``splits``) and registers itself; the
factory's building, detection, split listing and opening are read from that registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import label, save_index, save_rgb

from atrous.data import (
    ADE20K,
    DATASET_FORMATS,
    DATASETS,
    FORMATS,
    CamVid,
    Cityscapes,
    FolderDataset,
    FormatOptionError,
    SyntheticSegmentation,
    VOCSegmentation,
    available_splits,
    build_dataset,
    detect_format,
    open_dataset,
    registry,
)
from atrous.data.base import SegmentationDataset


def test_folder_without_root_reads_the_folders_given(tmp_path: Path) -> None:
    save_rgb(tmp_path / "i" / "a.png")
    save_index(tmp_path / "m" / "a.png", label(values=(0, 1)))
    ds = FolderDataset(images_dir=tmp_path / "i", masks_dir=tmp_path / "m", num_classes=2)
    assert len(ds) == 1 and ds[0]["mask"].max() <= 1


def test_formats_are_the_registered_classes_in_detection_order() -> None:
    assert FORMATS == DATASET_FORMATS == ("voc", "cityscapes", "ade20k", "camvid", "folder")
    assert DATASETS == ("voc", "voc_aug", "cityscapes", "ade20k", "camvid", "folder", "synthetic")
    classes = (VOCSegmentation, Cityscapes, ADE20K, CamVid, FolderDataset)
    assert tuple(f.cls for f in registry.formats()) == classes
    assert all(c.format_name == n for c, n in zip(classes, FORMATS, strict=True))


def test_each_class_detects_its_own_layout(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    assert Cityscapes.detect(tmp_path) and not VOCSegmentation.detect(tmp_path)
    assert Cityscapes.splits(tmp_path) == ["val"] and detect_format(tmp_path) == "cityscapes"
    assert available_splits("cityscapes", tmp_path) == ["val"]


def test_a_registered_format_is_detected_built_and_listed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "_FORMATS", dict(registry._FORMATS))
    monkeypatch.setattr(registry, "_VARIANTS", dict(registry._VARIANTS))

    @registry.register_format("mine", priority=50, variants={"mine_all": {"train": "all"}})
    class Mine(SegmentationDataset):
        def __init__(self, root: Path, split: str | None = None, **kwargs: object) -> None:
            self.split = split
            super().__init__([], class_names=["a"], palette=None, root=root)

        @classmethod
        def detect(cls, root: Path) -> bool:
            return (Path(root) / "MINE").is_file()

        @classmethod
        def splits(cls, root: Path) -> list[str]:
            return ["all"]

    (tmp_path / "MINE").write_text("")
    (tmp_path / "images").mkdir()  # a folder dataset too: the higher priority wins
    assert detect_format(tmp_path) == "mine" and available_splits("mine_all", tmp_path) == ["all"]
    assert build_dataset("mine_all", tmp_path, "train").split == "all"
    assert registry.format_names()[0] == "mine"
    with pytest.raises(ValueError, match="already registered"):
        registry.register_format("mine", priority=0)(type("Other", (SegmentationDataset,), {}))


def test_open_dataset_reads_a_folder_as_the_models_classes(tmp_path: Path) -> None:
    save_rgb(tmp_path / "images" / "a.png")
    save_index(tmp_path / "masks" / "a.png", label(values=(0, 4)))
    ds, fmt = open_dataset("auto", tmp_path, "", num_classes=5)
    assert fmt == "folder" and ds.num_classes == 5 and ds.placeholder_names
    (tmp_path / "classes.txt").write_text("\n".join("abcdef"))
    ds, _ = open_dataset("folder", tmp_path, "", num_classes=5)
    assert ds.class_names == tuple("abcdef")  # the root's classes file wins


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope: dataset folder not found"):
        open_dataset("voc", tmp_path / "nope", "val")
    with pytest.raises(ValueError, match="needs a root folder"):
        open_dataset("auto", None, "val")
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FormatOptionError, match="classes_file is for the folder format, not voc"):
        open_dataset("auto", tmp_path, "val", classes_file="c.txt")
    sets = tmp_path / "VOC2012" / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("")
    with pytest.raises(ValueError, match="split 'val' of the voc dataset has no images"):
        open_dataset("auto", tmp_path, "val")


def test_open_synthetic_needs_no_root() -> None:
    ds, fmt = open_dataset("synthetic", None, "val", size=16)
    assert fmt == "synthetic" and isinstance(ds, SyntheticSegmentation) and len(ds) == 50
    ds, _ = open_dataset("synthetic", None, "val", length=3, size=16)
    assert len(ds) == 3 and ds[0]["image"].shape == (16, 16, 3)
    assert np.asarray(ds[0]["mask"]).shape == (16, 16)
