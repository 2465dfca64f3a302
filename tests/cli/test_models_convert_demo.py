"""The `atrous` command: models, convert, demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from recipe import to_reference_names

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE


def test_models_lists_every_model_with_parameters(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == M.list_models()
    by_name = {r["name"]: r for r in rows}
    assert 4.0 < by_name["deeplabv3_mobilenetv2"]["params_m"] < 5.0
    assert main(["models"]) == 0
    assert "deeplabv3plus_xception65" in capsys.readouterr().out


def test_convert_torchvision_checkpoint(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    ref = M.build(
        "deeplabv3_mobilenetv3_large",
        21,
        aux=True,
        **W.source_config("torchvision", "deeplabv3_mobilenetv3_large"),
    ).eval()
    tv = to_reference_names(ref.state_dict(), "torchvision", "deeplabv3_mobilenetv3_large")
    src = tmp_path / "tv.pth"
    torch.save(tv, src)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"c{i}" for i in range(21)))
    out = tmp_path / "out.safetensors"
    rc = main(["convert", "--from", "torchvision", str(src), str(out), "--class-names", str(names)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["arch"] == "deeplabv3_mobilenetv3_large"
    assert summary["atrous_rates"] == [12, 24, 36]
    model = W.load(out)
    assert model.metadata["class_names"][3] == "c3"
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], ref(x)["out"])


def test_convert_bad_input_is_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_text("garbage")
    assert main(["convert", str(bad), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "bad.pth" in err and "Traceback" not in err


def test_demo_trains_evaluates_predicts_and_reports(tmp_path: Path) -> None:
    args = ["demo", "--out", str(tmp_path), "--iterations", "20", "--eval-images", "4"]
    assert main([*args, "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["miou"] <= 1.0 and summary["val_images"] == 4
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert abs(metrics["metrics"]["mIoU"] - summary["miou"]) < 1e-9
    for f in (
        "report.md",
        "report.html",
        "learning_curve.png",
        "eval/trimap.png",
        "eval/confusion.png",
        "predictions/0_image.png",
        "predictions/0_truth.png",
        "predictions/0_prediction.png",
        "run/model.safetensors",
    ):
        assert (tmp_path / f).stat().st_size > 0, f
    # Issue 28: each example beside its ground truth, a legend of the weights' colours, and
    # which images the curve's and the table's mIoU were measured on (16 vs 4).
    assert summary["curve_val_images"] == 16
    for report in ("report.md", "report.html"):
        text = (tmp_path / report).read_text()
        assert "mIoU" in text and "ground truth" in text, report
        assert "predictions/3_truth.png" in text and "predictions/3_prediction.png" in text
        for name, rgb in zip(SYNTHETIC_CLASSES[1:], SYNTHETIC_PALETTE[1:]):
            assert name in text and "#" + bytes(rgb).hex() in text, (report, name)
        assert "full evaluation set: 4 validation images" in text, report
        assert "validation subset of 16 images" in text, report
    truth = np.asarray(Image.open(tmp_path / "predictions" / "0_truth.png"))
    image = np.asarray(Image.open(tmp_path / "predictions" / "0_image.png"))
    assert truth.shape == image.shape and (truth != image).any()
    # A second run reuses the trained model instead of training again.
    mtime = (tmp_path / "run" / "model.safetensors").stat().st_mtime_ns
    assert main([*args, "--no-progress"]) == 0
    assert (tmp_path / "run" / "model.safetensors").stat().st_mtime_ns == mtime


def test_demo_report_says_what_each_number_measured(tmp_path: Path) -> None:
    """The report function alone (no training): legend rows with their colours, the ground
    truth beside each prediction, and the image counts of the curve and of the table."""
    from atrous.cli._demo_report import Example, legend, write_report

    summary = {
        "model": "deeplabv3plus_mobilenetv2",
        "parameters": 1_000_000,
        "train_seconds": 12.0,
        "val_images": 32,
        "curve_val_images": 16,
        "miou": 0.683,
        "pixel_accuracy": 0.9,
        "mean_class_accuracy": 0.8,
        "fw_iou": 0.85,
        "iou": {"background": 0.9, "disc": None},
    }
    colours = legend(["background", "disc"], np.array([[0, 0, 0], [220, 60, 60]], np.uint8))
    assert colours == [("background", "#000000"), ("disc", "#dc3c3c")]
    examples = [Example("p/0_image.png", "p/0_truth.png", "p/0_prediction.png")]
    write_report(tmp_path, summary, examples, colours)
    for report in ("report.md", "report.html"):
        text = (tmp_path / report).read_text()
        assert "#dc3c3c" in text and "disc" in text and "ground truth" in text
        assert "p/0_image.png" in text and "p/0_truth.png" in text and "p/0_prediction.png" in text
        assert "32 validation images" in text and "subset of 16 images" in text
        assert "68.3" in text
