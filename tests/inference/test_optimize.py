"""The fast CPU path (issue 12): ``optimize(model, precision)`` keeps the forward contract and
the outputs (fp32 to float rounding, bf16 and int8 to label agreement); BatchNorm folding is
exact; ``atrous quantize`` and ``--precision`` reach it from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.export import ExportError
from atrous.inference import Segmenter, fold_batchnorm, optimize
from atrous.inference.optimize import bf16_supported


def _model(arch: str = "deeplabv3plus_mobilenetv2") -> torch.nn.Module:
    torch.manual_seed(0)
    m = M.build(arch, num_classes=4, width_mult=0.25)
    for mod in m.modules():  # non-trivial running statistics, so folding has work to do
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        m.head.classifier.weight.mul_(50.0)  # separated logits: argmax ties cannot decide
    return m.eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(6):
        small = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((96, 72), Image.BILINEAR).save(d / f"{i}.png")
    return d


def _x(seed: int = 1, shape=(2, 3, 72, 96)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_fold_batchnorm_is_exact() -> None:
    m = _model()
    x = _x()
    with torch.no_grad():
        ref = m(x)["out"]
        n = fold_batchnorm(m)
        got = m(x)["out"]
    assert n > 20 and not any(isinstance(k, torch.nn.BatchNorm2d) for k in m.modules())
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5


def test_optimize_fp32_and_bf16_keep_the_contract() -> None:
    m = _model()
    x = _x()
    with torch.no_grad():
        ref = m(x)["out"]
    fast = optimize(m, "fp32")
    out = fast(x)
    assert set(out) == {"out"} and out["out"].dtype == torch.float32
    assert float((out["out"] - ref).abs().max() / ref.abs().max()) < 1e-4
    assert fast.config == m.config and fast.metadata["precision"] == "fp32"
    assert any(isinstance(k, torch.nn.BatchNorm2d) for k in m.modules())  # original untouched
    if bf16_supported():
        bf = optimize(m, "bf16")(x)["out"]
        assert bf.dtype == torch.float32
        assert float((bf.argmax(1) == ref.argmax(1)).double().mean()) > 0.98
    else:
        with pytest.raises(ValueError, match="no native bfloat16"):
            optimize(m, "bf16")


def test_optimize_int8_calibrates_on_images_and_runs_in_the_segmenter(images) -> None:
    m = _model()
    q = optimize(m, "int8", calibration=images, calibration_images=4)
    assert q.metadata["precision"] == "int8" and q.metadata["backend"] == "onnxruntime"
    x = _x()
    with torch.no_grad():
        ref = m(x)["out"]
    got = q(x)["out"]
    assert got.shape == ref.shape and got.dtype == torch.float32
    agree = float((got.argmax(1) == ref.argmax(1)).double().mean())
    assert agree > 0.9, agree
    image = np.asarray(Image.open(images / "0.png"))
    seg = Segmenter.from_model(q, scales=(0.75, 1.0), flip=True, tile_size=65)
    labels = seg.predict(image)
    ref_labels = Segmenter.from_model(m, scales=(0.75, 1.0), flip=True, tile_size=65)(image)
    assert labels.shape == image.shape[:2] and (labels == ref_labels).mean() > 0.9
    batches = [_x(s, (1, 3, 72, 96)) for s in range(3)]  # or normalized batches directly
    assert optimize(m, "int8", calibration=batches).metadata["precision"] == "int8"


def test_optimize_refuses_what_it_cannot_do(tmp_path) -> None:
    m = _model()
    with pytest.raises(ExportError, match="int8 needs calibration images"):
        optimize(m, "int8")
    with pytest.raises(ExportError, match="no such calibration folder"):
        optimize(m, "int8", calibration=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize(m, "fp8")
    with pytest.raises(ValueError, match="runs on ONNX Runtime only"):
        optimize(m, "int8", calibration=[_x()], backend="eager")


def test_quantize_and_precision_on_the_command_line(images, tmp_path, capsys) -> None:
    w = W.save(_model(), tmp_path / "m.safetensors")
    flags = ["--calib", str(images), "--out", str(tmp_path / "q.onnx"), "--calib-images", "3"]
    rc = main(["quantize", str(w), *flags, "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads(out)
    assert report["details"]["quantization"]["calibration_images"] == 3
    assert report["details"]["quantization"]["quantize_nodes"] > 10
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert meta["export_precision"] == "int8" and meta["arch"] == "deeplabv3plus_mobilenetv2"
    img = images / "1.png"
    outs = {}
    for name, extra in (
        ("eager", []),
        ("fp32", ["--precision", "fp32"]),
        ("ort", ["--precision", "fp32", "--backend", "onnxruntime"]),
        ("q", []),
    ):
        weights = tmp_path / "q.onnx" if name == "q" else w
        flags = ["-o", str(tmp_path / name), "--no-progress", *extra]
        rc = main(["predict", str(weights), str(img), *flags])
        assert rc == 0, capsys.readouterr().err
        outs[name] = np.asarray(Image.open(tmp_path / name / "1.png"))
    assert (outs["fp32"] == outs["eager"]).mean() > 0.999
    assert (outs["ort"] == outs["eager"]).mean() > 0.999
    assert (outs["q"] == outs["eager"]).mean() > 0.9
    flags = ["-o", str(tmp_path / "x"), "--no-progress", "--precision", "int8"]
    rc = main(["predict", str(w), str(img), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and "--precision int8 needs --calib DATA" in err


def test_optimize_drops_the_auxiliary_head() -> None:
    torch.manual_seed(0)
    m = M.build("deeplabv3_mobilenetv2", num_classes=3, width_mult=0.25, aux=True).eval()
    fast = optimize(m, "fp32")
    assert m.aux_classifier is not None and fast.net.aux_classifier is None
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        ref = m(x)["out"]
    assert float((fast(x)["out"] - ref).abs().max() / ref.abs().max()) < 1e-4
