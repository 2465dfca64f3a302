from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import label, save_index, save_rgb
from PIL import Image

from atrous.data import (
    ADE20K,
    CITYSCAPES_CLASSES,
    CamVid,
    Cityscapes,
    DatasetError,
    FolderDataset,
    VOCSegmentation,
    build_dataset,
    camvid_sequence,
    detect_format,
    scan_dataset,
)
from atrous.data.palettes import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CAMVID_PALETTE,
    CITYSCAPES_PALETTE,
    VOC_PALETTE,
    voc_colormap,
)


def test_voc_palette_png_loads_indices_and_keeps_border(voc_root: Path) -> None:
    ds = VOCSegmentation(voc_root, "train")
    assert len(ds) == 2 and ds.num_classes == 21
    s = ds[0]
    assert s["image"].shape == (12, 16, 3) and s["image"].dtype == np.uint8
    assert s["mask"].dtype == np.uint8
    np.testing.assert_array_equal(s["mask"], label(values=(0, 15, 255), seed=0))
    assert s["name"] == "2007_000001" and s["path"].endswith("2007_000001.jpg")


def test_voc_palette_constant_matches_devkit() -> None:
    assert tuple(VOC_PALETTE[15]) == (192, 128, 128)  # person
    assert tuple(voc_colormap()[255]) == (224, 224, 192)  # border


def test_voc_train_aug_from_sbd_mat(voc_root: Path, tmp_path: Path) -> None:
    from scipy.io import savemat

    sbd = tmp_path / "VOCdevkit" / "SBD" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("2008_000010\n2007_000003\n")  # the VOC val image is excluded
    (sbd / "val.txt").write_text("2008_000011\n")
    for i, n in enumerate(["2008_000010", "2008_000011"]):
        save_rgb(voc_root / "VOC2012" / "JPEGImages" / f"{n}.jpg", seed=10 + i)
        seg = label(values=(0, 7), seed=10 + i)
        savemat(sbd / "cls" / f"{n}.mat", {"GTcls": {"Segmentation": seg, "Boundaries": []}})
    ds = build_dataset("voc_aug", voc_root, "train")
    assert [it.name for it in ds.items] == [
        "2007_000001",
        "2007_000002",
        "2008_000010",
        "2008_000011",
    ]
    s = ds[2]
    assert str(ds.items[2].mask).endswith(".mat")
    np.testing.assert_array_equal(s["mask"], label(values=(0, 7), seed=10))


def test_voc_train_aug_prefers_segmentation_class_aug(voc_root: Path) -> None:
    voc = voc_root / "VOC2012"
    save_rgb(voc / "JPEGImages" / "2009_000100.jpg", seed=5)
    save_index(voc / "SegmentationClassAug" / "2009_000100.png", label(values=(0, 3), seed=5))
    ds = VOCSegmentation(voc_root, "train_aug")
    assert "2009_000100" in [it.name for it in ds.items]
    assert "2007_000003" not in [it.name for it in ds.items]
    i = [it.name for it in ds.items].index("2009_000100")
    np.testing.assert_array_equal(ds[i]["mask"], label(values=(0, 3), seed=5))


def test_wrong_palette_png_is_an_error_naming_the_file(voc_root: Path) -> None:
    voc = voc_root / "VOC2012"
    bad = voc / "SegmentationClass" / "2007_000002.png"
    save_index(bad, label(values=(0, 15), seed=1), ADE20K_PALETTE.tolist() + [[0, 0, 0]] * 106)
    ds = VOCSegmentation(voc_root, "train")
    with pytest.raises(DatasetError, match=r"2007_000002\.png.*palette"):
        ds[1]


def test_values_outside_classes_and_size_mismatch(voc_root: Path) -> None:
    voc = voc_root / "VOC2012"
    save_index(voc / "SegmentationClass" / "2007_000001.png", label(values=(0, 40), seed=0))
    save_index(voc / "SegmentationClass" / "2007_000002.png", label(8, 8, values=(0, 1)))
    ds = VOCSegmentation(voc_root, "train", palette_check="off")
    with pytest.raises(DatasetError, match=r"2007_000001\.png: label values \[40\]"):
        ds[0]
    with pytest.raises(DatasetError, match=r"2007_000002\.png: mask size 8x8 differs"):
        ds[1]
    assert isinstance(DatasetError("x", "y"), ValueError)


def test_unreadable_and_missing_files(voc_root: Path) -> None:
    voc = voc_root / "VOC2012"
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(b"not a jpeg")
    (voc / "SegmentationClass" / "2007_000002.png").unlink()
    ds = VOCSegmentation(voc_root, "train")
    with pytest.raises(DatasetError, match=r"2007_000001\.jpg: unreadable image"):
        ds[0]
    with pytest.raises(DatasetError, match=r"2007_000002\.png: mask file not found"):
        ds[1]


def test_skip_mode_serves_next_good_item_and_counts(voc_root: Path) -> None:
    voc = voc_root / "VOC2012"
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text(
        "2007_000001\n2007_000002\n2007_000003\n"
    )
    (voc / "JPEGImages" / "2007_000002.jpg").write_bytes(b"garbage")
    ds = VOCSegmentation(voc_root, "train", on_error="skip")
    with pytest.warns(UserWarning, match="skipping"):
        s = ds[1]
    assert s["name"] == "2007_000003"
    assert len(ds.skip_report) == 1 and "2007_000002.jpg" in str(ds.skip_report)
    report = scan_dataset(ds, drop_bad=True)
    assert len(report.problems) == 1 and len(ds) == 2  # scan drops it under "skip"


def test_scan_counts_pixels_and_images(voc_root: Path) -> None:
    ds = VOCSegmentation(voc_root, "train")
    rep = scan_dataset(ds)
    masks = [label(values=(0, 15, 255), seed=i) for i in range(2)]
    assert rep.pixels[15] == sum(int((m == 15).sum()) for m in masks)
    assert rep.images[15] == 2 and rep.images[1] == 0
    assert rep.ignored_pixels == sum(int((m == 255).sum()) for m in masks)
    assert rep.ok and "person" in rep.table()


def _cityscapes(root: Path) -> Path:
    city = "aachen"
    ids = np.array([[7, 8, 0, 33], [26, 1, 255, 24]], np.uint8).repeat(3, 0).repeat(4, 1)
    save_rgb(root / "leftImg8bit" / "val" / city / f"{city}_000000_000019_leftImg8bit.png", 6, 16)
    save_index(root / "gtFine" / "val" / city / f"{city}_000000_000019_gtFine_labelIds.png", ids)
    return root


def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    root = _cityscapes(tmp_path / "cs")
    ds = Cityscapes(root, "val")
    m = ds[0]["mask"]
    assert len(CITYSCAPES_CLASSES) == 19
    expected = np.array([[0, 1, 255, 18], [13, 255, 255, 11]], np.uint8).repeat(3, 0).repeat(4, 1)
    np.testing.assert_array_equal(m, expected)
    assert detect_format(root) == "cityscapes"


def test_cityscapes_rejects_undefined_label_ids(tmp_path: Path) -> None:
    root = _cityscapes(tmp_path / "cs")
    p = next((root / "gtFine").rglob("*labelIds.png"))
    save_index(p, np.full((6, 16), 60, np.uint8))
    with pytest.raises(DatasetError, match=r"labelIds\.png: label values \[60\]"):
        Cityscapes(root, "val")[0]


def test_ade20k_shifts_labels_and_ignores_zero(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    raw = np.array([[0, 1, 150], [2, 0, 3]], np.uint8).repeat(4, 0).repeat(4, 1)
    save_rgb(root / "images" / "validation" / "ADE_val_00000001.jpg", 8, 12)
    save_index(root / "annotations" / "validation" / "ADE_val_00000001.png", raw)
    ds = ADE20K(tmp_path, "val")
    expected = np.array([[255, 0, 149], [1, 255, 2]], np.uint8).repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(ds[0]["mask"], expected)
    assert ds.num_classes == 150 and ADE20K_CLASSES[0] == "wall" and ADE20K_CLASSES[149] == "flag"
    assert ADE20K_PALETTE.shape == (150, 3)
    assert detect_format(tmp_path) == "ade20k"
    save_index(root / "annotations" / "validation" / "ADE_val_00000001.png", raw + 100)
    with pytest.raises(DatasetError, match=r"values \[250\]"):
        ds[0]


def _camvid(root: Path, absolute_lists: bool = False) -> Path:
    for split in ("train", "val"):
        lines = []
        for i in range(2):
            name = f"0001TP_00{i}{split}"
            save_rgb(root / split / f"{name}.png", seed=i)
            save_index(root / f"{split}annot" / f"{name}.png", label(values=(0, 10, 11), seed=i))
            prefix = "/SegNet/CamVid/" if absolute_lists else ""
            lines.append(f"{prefix}{split}/{name}.png {prefix}{split}annot/{name}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("absolute_lists", [False, True])
def test_camvid_list_files_and_void(tmp_path: Path, absolute_lists: bool) -> None:
    root = _camvid(tmp_path / "camvid", absolute_lists)
    ds = CamVid(root, "val")
    assert len(ds) == 2
    m = ds[1]["mask"]
    raw = label(values=(0, 10, 11), seed=1)
    np.testing.assert_array_equal(m, np.where(raw == 11, 255, raw))
    assert detect_format(root) == "camvid"


def test_camvid_without_list_pairs_by_stem(tmp_path: Path) -> None:
    root = _camvid(tmp_path / "camvid")
    (root / "train.txt").unlink()
    ds = CamVid(root, "train")
    assert [it.name for it in ds.items] == ["0001TP_000train", "0001TP_001train"]
    assert ds[0]["mask"].max() == 255


def test_camvid_sequence_aware_splits(tmp_path: Path) -> None:
    """Hold out a whole street sequence: ``train:SEQ`` keeps it, ``train:-SEQ`` the rest."""
    root = tmp_path / "camvid"
    names = ["0001TP_006690", "0006R0_f01020", "0006R0_f01050", "0016E5_08019"]
    for i, name in enumerate(names):
        save_rgb(root / "train" / f"{name}.png", seed=i)
        save_index(root / "trainannot" / f"{name}.png", label(values=(0, 10), seed=i))
    assert camvid_sequence("0016E5_08019") == "0016E5"
    held = CamVid(root, "train:0006R0")
    assert [it.name for it in held.items] == names[1:3]
    rest = CamVid(root, "train:-0006R0")
    assert [it.name for it in rest.items] == [names[0], names[3]]
    assert [it.name for it in CamVid(root, "train:-0006R0,0001TP").items] == [names[3]]
    assert len(build_dataset("camvid", root, "train:0006R0")) == 2
    with pytest.raises(ValueError, match=r"Seq05VD.*it has 0001TP, 0006R0, 0016E5"):
        CamVid(root, "train:Seq05VD")
    with pytest.raises(ValueError, match="leaves no frames"):
        CamVid(root, "train:-0001TP,0006R0,0016E5")
    with pytest.raises(ValueError, match="no sequence"):
        CamVid(root, "train:")
    with pytest.raises(ValueError, match="train, val, test or trainval"):
        CamVid(root, "tran:0006R0")


def test_folder_rgb_masks_through_palette(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    (root).mkdir()
    (root / "classes.txt").write_text("sky 0 0 255\nroad 128 64 128\ncar, van 255 0 0\n")
    idx = label(values=(0, 1, 2), seed=3)
    pal = np.array([[0, 0, 255], [128, 64, 128], [255, 0, 0]], np.uint8)
    save_rgb(root / "images" / "a.jpg", seed=3)
    (root / "masks").mkdir()
    Image.fromarray(pal[idx]).save(root / "masks" / "a.png")
    ds = FolderDataset(root)
    assert ds.class_names == ("sky", "road", "car, van")
    np.testing.assert_array_equal(ds[0]["mask"], idx)
    assert detect_format(root) == "folder"
    rgb = pal[idx].copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(root / "masks" / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png: RGB mask has colour \(1, 2, 3\)"):
        ds[0]


def test_folder_list_file_void_and_value_map(tmp_path: Path) -> None:
    root = tmp_path / "bin"
    save_rgb(root / "im" / "x.png")
    raw = label(values=(0, 255, 7), seed=0)
    save_index(root / "gt" / "x.png", raw)
    (root / "train.txt").write_text("im/x.png gt/x.png\n")
    ds = FolderDataset(root, "train", num_classes=2, value_map={255: 1}, void_labels=(7,))
    np.testing.assert_array_equal(ds[0]["mask"], np.select([raw == 255, raw == 7], [1, 255], 0))


def test_folder_needs_class_information(tmp_path: Path) -> None:
    save_rgb(tmp_path / "images" / "a.png")
    with pytest.raises(ValueError, match="class_names"):
        FolderDataset(tmp_path)


def test_build_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        build_dataset("coco", tmp_path)
    with pytest.raises(FileNotFoundError, match="no Pascal VOC layout"):
        build_dataset("voc", tmp_path, "train")
    with pytest.raises(ValueError, match="needs a root"):
        build_dataset("camvid")


def test_each_dataset_draws_with_its_published_palette(tmp_path: Path, voc_root: Path) -> None:
    """VOC, Cityscapes, ADE20K and CamVid each expose their own colours as ``.palette``
    (issue 28: a CamVid model drawn with VOC's colours had a black sky)."""
    ade = tmp_path / "ade" / "ADEChallengeData2016"
    save_rgb(ade / "images" / "validation" / "ADE_val_00000001.jpg", 8, 12)
    save_index(ade / "annotations" / "validation" / "ADE_val_00000001.png", label(8, 12))
    sets = {
        "voc": (VOCSegmentation(voc_root, "val"), VOC_PALETTE, {0: (0, 0, 0), 15: (192, 128, 128)}),
        "cityscapes": (
            Cityscapes(_cityscapes(tmp_path / "cs"), "val"),
            CITYSCAPES_PALETTE,
            {0: (128, 64, 128), 10: (70, 130, 180), 18: (119, 11, 32)},
        ),
        "ade20k": (
            ADE20K(tmp_path / "ade", "val"),
            ADE20K_PALETTE,
            {0: (120, 120, 120), 2: (6, 230, 230), 149: (92, 0, 255)},
        ),
        "camvid": (
            CamVid(_camvid(tmp_path / "camvid"), "val"),
            CAMVID_PALETTE,
            {0: (128, 128, 128), 3: (128, 64, 128), 10: (0, 128, 192)},
        ),
    }
    for name, (ds, palette, published) in sets.items():
        assert ds.palette is not None, name
        np.testing.assert_array_equal(ds.palette[: ds.num_classes], palette, err_msg=name)
        assert len(palette) == ds.num_classes == len(ds.class_names), name
        for k, rgb in published.items():
            assert tuple(int(c) for c in ds.palette[k]) == rgb, (name, k)
