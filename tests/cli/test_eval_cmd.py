"""``atrous eval``: metrics match an independent recomputation; files, metadata, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipe import to_reference_names

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.data import SyntheticSegmentation
from atrous.inference import Segmenter
from atrous.models.zoo import scale_rates


def _save_model(path: Path, num_classes: int, names: list[str] | None = None) -> Path:
    torch.manual_seed(num_classes)
    model = M.build("deeplabv3_mobilenetv2", num_classes=num_classes, norm="gn")
    return W.save(model, path, class_names=names)


@pytest.fixture(scope="module")
def model3(tmp_path_factory) -> Path:
    return _save_model(tmp_path_factory.mktemp("m") / "m3.safetensors", 3, ["bg", "cat", "dog"])


@pytest.fixture(scope="module")
def model6(tmp_path_factory) -> Path:
    return _save_model(tmp_path_factory.mktemp("m") / "m6.safetensors", 6)


def _confusion(preds: list[np.ndarray], labels: list[np.ndarray], c: int) -> np.ndarray:
    cm = np.zeros((c, c), np.int64)
    for p, t in zip(preds, labels):
        keep = t != 255
        cm += np.bincount(c * t[keep].astype(np.int64) + p[keep], minlength=c * c).reshape(c, c)
    return cm


def _miou(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return float(np.nanmean(iou))


def _folder_dataset(root: Path, n: int = 3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """images/ + masks/ + classes.txt, 40x50 images, labels 0..2 with an ignore band."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("bg\ncat\ndog\n")
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(n):
        img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
        lab = np.zeros((40, 50), np.uint8)
        lab[5:25, 10:30] = 1
        lab[20:38, 30:48] = 2
        lab[:, i] = 255
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(lab).save(root / "masks" / f"im{i}.png")
        images.append(img)
        labels.append(lab)
    return images, labels


def test_eval_folder_dataset_matches_recomputation(tmp_path: Path, model3: Path, capsys) -> None:
    images, labels = _folder_dataset(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["eval", str(model3), "--data", str(tmp_path / "data"), "--out", str(out)]
    rc = main([*argv, "--trimap-widths", "1-5", "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "dog" in printed and "3 images" in printed

    seg = Segmenter(W.load(model3))
    preds = [seg.predict(im) for im in images]
    cm = _confusion(preds, labels, 3)
    res = json.loads((out / "metrics.json").read_text())
    assert res["confusion_matrix"] == cm.tolist()
    assert res["metrics"]["mIoU"] == pytest.approx(_miou(cm))
    assert res["metrics"]["num_pixels"] == sum(int((t != 255).sum()) for t in labels)
    assert res["num_images"] == 3 and res["class_names"] == ["bg", "cat", "dog"]
    meta = res["metadata"]
    assert meta["arch"] == "deeplabv3_mobilenetv2" and meta["output_stride"] == 16
    assert meta["weights_file"] == str(model3) and meta["atrous_rates"] == [6, 12, 18]
    assert meta["dataset"] == {
        "format": "folder",
        "root": str(tmp_path / "data"),
        "split": "val",
        "num_images": 3,
        "num_skipped": 0,
        "limit": None,
    }
    assert meta["scales"] == [1.0] and meta["flip"] is False and meta["tile_size"] is None
    assert "crf" in meta and meta["crf"] is None
    assert res["trimap"]["width"] == [1, 2, 3, 4, 5]
    for name in ("confusion.png", "trimap.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_eval_synthetic_with_tta(tmp_path: Path, model6: Path, capsys) -> None:
    out = tmp_path / "out"
    flags = "--format synthetic --limit 2 --size 40 --scales 0.75,1 --flip --tile-size 32"
    flags += " --trimap-widths none --no-progress"
    rc = main(["eval", str(model6), *flags.split(), "--out", str(out)])
    assert rc == 0
    assert "synthetic val: 2 images" in capsys.readouterr().out
    ds = SyntheticSegmentation(length=2, size=40, split="val")
    seg = Segmenter(W.load(model6), scales=(0.75, 1.0), flip=True, tile_size=32)
    preds = [seg.predict(ds[i]["image"]) for i in range(2)]
    cm = _confusion(preds, [ds[i]["mask"] for i in range(2)], 6)
    res = json.loads((out / "metrics.json").read_text())
    assert res["confusion_matrix"] == cm.tolist()
    assert res["metrics"]["mIoU"] == pytest.approx(_miou(cm))
    meta = res["metadata"]
    assert meta["scales"] == [0.75, 1.0] and meta["flip"] is True and meta["tile_size"] == 32
    assert meta["dataset"]["format"] == "synthetic" and meta["dataset"]["root"] is None
    assert "trimap" not in res and not (out / "trimap.png").exists()
    assert (out / "confusion.png").is_file()


def test_eval_class_count_mismatch_is_a_clear_error(model3: Path, capsys) -> None:
    rc = main(["eval", str(model3), "--format", "synthetic", "--limit", "1", "--size", "16"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "3 classes" in err and "has 6" in err and "Traceback" not in err


def test_eval_missing_root_and_bad_weights(tmp_path: Path, model3: Path, capsys) -> None:
    assert main(["eval", str(model3), "--data", str(tmp_path / "nope")]) == 2
    assert "nope: dataset folder not found" in capsys.readouterr().err
    assert main(["eval", str(model3), "--format", "camvid"]) == 2
    assert "--data ROOT is required" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_text("garbage")
    assert main(["eval", str(bad), "--format", "synthetic"]) == 2
    assert "bad.pth" in capsys.readouterr().err


def test_eval_torchvision_pth_at_output_stride_8(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    arch = "deeplabv3_mobilenetv3_large"
    ref = M.build(arch, 6, **W.source_config("torchvision", arch)).eval()
    tv = to_reference_names(ref.state_dict(), "torchvision", arch)
    pth = tmp_path / "tv.pth"
    torch.save(tv, pth)
    out = tmp_path / "out"
    flags = "--format synthetic --limit 1 --size 40 --output-stride 8 --no-progress"
    rc = main(["eval", str(pth), *flags.split(), "--out", str(out)])
    assert rc == 0
    capsys.readouterr()
    meta = json.loads((out / "metrics.json").read_text())["metadata"]
    base = W.load(pth)
    assert meta["weights_source"] == "torchvision" and meta["arch"] == arch
    assert meta["output_stride"] == 8 and meta["output_stride_override"] == 8
    assert meta["atrous_rates"] == list(
        scale_rates(base.config["atrous_rates"], base.config["output_stride"], 8)
    )
    ds = SyntheticSegmentation(length=1, size=40, split="val")
    pred = Segmenter(W.load(pth, output_stride=8)).predict(ds[0]["image"])
    cm = _confusion([pred], [ds[0]["mask"]], 6)
    res = json.loads((out / "metrics.json").read_text())
    assert res["confusion_matrix"] == cm.tolist()


def test_eval_tf_zoo_protocol_matches_the_wrapper(tmp_path: Path, model6: Path, capsys) -> None:
    """--protocol tf-zoo: each image padded to the crop, scales + flip as probabilities,
    recorded in metrics.json; the labels are the protocol wrapper's argmax."""
    from atrous.inference.tf_protocol import TFEvalProtocol

    out = tmp_path / "out"
    flags = "--format synthetic --limit 2 --size 40 --scales 0.75,1 --flip --protocol tf-zoo"
    flags += " --crop-size 49,49 --trimap-widths none --no-progress"
    assert main(["eval", str(model6), *flags.split(), "--out", str(out)]) == 0
    ds = SyntheticSegmentation(length=2, size=40, split="val")
    model = TFEvalProtocol(W.load(model6), (49, 49), (0.75, 1.0), flip=True)
    seg = Segmenter(model, scales=(1.0,))
    preds = [seg.predict(ds[i]["image"]) for i in range(2)]
    cm = _confusion(preds, [ds[i]["mask"] for i in range(2)], 6)
    res = json.loads((out / "metrics.json").read_text())
    assert res["confusion_matrix"] == cm.tolist()
    meta = res["metadata"]
    assert meta["protocol"] == "tf-zoo" and meta["crop_size"] == [49, 49]
    assert meta["scales"] == [0.75, 1.0] and meta["flip"] is True
    rc = main(
        ["eval", str(model6), "--format", "synthetic", "--limit", "1", "--protocol", "tf-zoo"]
    )
    assert rc == 2 and "give --crop-size H,W" in capsys.readouterr().err
