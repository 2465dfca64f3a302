"""The official TensorFlow DeepLab's outputs, reproduced by atrous from its checkpoints.

Each case of ``tests/fixtures/tf_deeplab`` (made by ``make_fixtures.py`` from the official
``research/deeplab`` graph, see ``shared/reference/tf_deeplab/README.md``) is rebuilt without
TensorFlow: the checkpoint's variables (``*.variables.txt``) take their values from the
reference value rule (:mod:`tf_recipe`), :mod:`atrous.weights.tf_deeplab` detects and maps
them, and the model's logits, backbone output and decoder tap must equal the official ones to
1e-4 of their largest magnitude, at every fixture size (odd 97×129, even 128×96, 305×145).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import tf_recipe
import torch
from tf_fixtures import FIXTURES, variables, write_variables_checkpoint

import atrous.models as M
from atrous.weights import CheckpointError
from atrous.weights.tf_deeplab import TF_MEAN, TF_STD, convert_tf, detect_tf, tf_build_options

CASES = json.loads((FIXTURES / "cases.json").read_text())
IMAGES = {"97x129": (97, 129, 1), "128x96": (128, 96, 2), "305x145": (305, 145, 3)}
TOLERANCE = 1e-4  # of max |official|, as the held-out check uses


@cache
def tensors(name: str) -> dict[str, np.ndarray]:
    """The model variables of a fixture checkpoint (``global_step`` left out, as the reader
    leaves it out), valued by the reference rule."""
    return {
        var: tf_recipe.value(var, shape, dtype)
        for var, (shape, dtype) in variables(name).items()
        if var != "global_step"
    }


def image_input(hw: str) -> torch.Tensor:
    """The fixture image, normalized as the model's metadata says (TF: 2/255 x - 1)."""
    h, w, seed = IMAGES[hw]
    x = torch.from_numpy(tf_recipe.image(h, w, seed)).permute(2, 0, 1)[None].float() / 255
    mean, std = torch.tensor(TF_MEAN).view(1, 3, 1, 1), torch.tensor(TF_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tf_model(case: str) -> M.DeepLab:
    meta = CASES[case]
    found = detect_tf({k: v.shape for k, v in tensors(meta["variables"]).items()})
    model = M.build(found.arch, **tf_build_options(found, meta["output_stride"])).eval()
    model.load_state_dict(convert_tf(tensors(meta["variables"]), model.state_dict()))
    return model


def outputs(model: M.DeepLab, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits before and after the final resize, backbone output and decoder tap (NHWC)."""
    with torch.no_grad():
        stages = model.backbone(x)
        feats = {role: stages[name] for role, name in model.backbone.roles.items()}
        out = {
            "logits": model.head(feats),
            "logits_up": model(x)["out"],
            "features": feats["out"],
            "low_level": feats["low_level"],
        }
    return {k: v.permute(0, 2, 3, 1) for k, v in out.items()}


def compare(case: str, key: str, mine: torch.Tensor, ref: np.ndarray) -> float:
    what = key.rsplit("_", 1)[0]
    px, ch = CASES[case]["steps"][what]
    mine = mine[:, ::px, ::px, ::ch].numpy()
    assert mine.shape == ref.shape, f"{case} {key}: shape {mine.shape} vs official {ref.shape}"
    return float(np.abs(mine - ref).max() / CASES[case]["max_abs"][key])


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_outputs(case: str) -> None:
    model = tf_model(case)
    ref = np.load(FIXTURES / f"{case}.npz")
    for hw in IMAGES:
        keys = [k for k in ref.files if k.endswith(f"_{hw}")]
        got = outputs(model, image_input(hw))
        for key in keys:
            what = key.rsplit("_", 1)[0]
            if what == "low_level" and case.startswith("mobilenetv2"):
                continue  # the zoo's MobileNetV2 is a v3: no decoder, the tap is not built
            err = compare(case, key, got[what], ref[key])
            assert err < TOLERANCE, f"{case} {key}: {err:.2e} of max |official|"


def test_detects_each_fixture_architecture() -> None:
    found = {
        name: detect_tf({k: v[0] for k, v in variables(meta["variables"]).items()})
        for name, meta in CASES.items()
    }
    assert found["xception65_v3plus_os16"].arch == "deeplabv3plus_xception65"
    assert found["mobilenetv2_v3_os16"].arch == "deeplabv3_mobilenetv2"
    assert found["resnet50beta_v3plus_os16"].arch == "deeplabv3plus_resnet50_beta"
    assert {f.num_classes for f in found.values()} == {21}
    mnv2 = found["mobilenetv2_v3_os16"]
    assert (mnv2.aspp_branches, mnv2.image_pooling, mnv2.decoder) == (0, True, False)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"xception_71/entry_flow/conv1_1/weights": (3, 3, 3, 32)}, "Xception-71"),
        ({"MobilenetV3/Conv/weights": (3, 3, 3, 16)}, "MobileNetV3"),
        ({"dense_prediction_cell/branch0/weights": (1, 1, 2048, 256)}, "dense prediction"),
    ],
)
def test_refuses_what_atrous_cannot_express(extra: dict, message: str) -> None:
    names = {k: v[0] for k, v in variables(CASES["mobilenetv2_v3_os16"]["variables"]).items()}
    with pytest.raises(CheckpointError, match=message):
        detect_tf({**names, **extra}, "zoo.tar.gz")


def test_refuses_a_backbone_checkpoint_and_a_mobilenet_decoder() -> None:
    names = {k: v[0] for k, v in variables(CASES["mobilenetv2_v3_os16"]["variables"]).items()}
    backbone_only = {k: v for k, v in names.items() if k.startswith("MobilenetV2/")}
    with pytest.raises(CheckpointError, match="ImageNet backbone checkpoint has no head"):
        detect_tf(backbone_only, "mnv2_imagenet")
    decoder = {**names, "decoder/feature_projection0/weights": (1, 1, 144, 48)}
    with pytest.raises(CheckpointError, match="MobileNetV2 DeepLab v3\\+"):
        detect_tf(decoder, "mnv2_dec")


def test_unknown_and_missing_variables_are_named() -> None:
    model = tf_model("mobilenetv2_v3_os16")
    good = tensors(CASES["mobilenetv2_v3_os16"]["variables"])
    extra = {**good, "aspp0/extra_scale": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointError, match="does not know: \\['aspp0/extra_scale'\\]"):
        convert_tf(extra, model.state_dict(), "ckpt")
    missing = {k: v for k, v in good.items() if k != "concat_projection/BatchNorm/gamma"}
    with pytest.raises(CheckpointError, match="concat_projection/BatchNorm/gamma"):
        convert_tf(missing, model.state_dict(), "ckpt")
    bad = {**good, "aspp0/weights": np.zeros((1, 1, 320, 128), np.float32)}
    with pytest.raises(CheckpointError, match="aspp0/weights: shape"):
        convert_tf(bad, model.state_dict(), "ckpt")


def write_fixture_checkpoint(case: str, folder: Path) -> Path:
    """The fixture's checkpoint written as TensorFlow writes it (global_step included)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_variables_checkpoint(folder / "model.ckpt-30000", CASES[case]["variables"])


def test_load_a_checkpoint_as_the_zoo_ships_it(tmp_path: Path) -> None:
    from atrous import weights

    prefix = write_fixture_checkpoint("mobilenetv2_v3_os8", tmp_path / "deeplabv3_mnv2")
    ref = np.load(FIXTURES / "mobilenetv2_v3_os8.npz")
    for form in (prefix, Path(f"{prefix}.index"), prefix.parent):
        model = weights.load(form, output_stride=8)
        assert model.metadata["source"] == "tf" and model.metadata["mean"] == TF_MEAN
        assert model.config["output_stride"] == 8 and model.config["align_corners"]
        assert model.metadata["class_names"][15] == "person"  # 21 classes: the zoo's VOC
        got = outputs(model, image_input("128x96"))["logits_up"]
        err = compare("mobilenetv2_v3_os8", "logits_up_128x96", got, ref["logits_up_128x96"])
        assert err < TOLERANCE


def test_fine_tune_from_a_checkpoint_with_another_class_count(tmp_path: Path) -> None:
    from atrous import weights

    prefix = write_fixture_checkpoint("mobilenetv2_v3_os16", tmp_path / "m")
    model = weights.load(prefix, num_classes=5)
    assert model.num_classes == 5
    assert model.metadata["reinitialized"] == ["head.classifier.weight", "head.classifier.bias"]
    assert "class_names" not in model.metadata  # 5 new classes: the user names them
    with pytest.raises(CheckpointError, match="not a deeplabv3plus_xception65"):
        weights.load(prefix, arch="deeplabv3plus_xception65")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mobilenetv2_v3_os16", "resnet50beta_v3plus_os16"])
def test_converted_model_exports_and_segments_the_same(case: str, tmp_path: Path) -> None:
    """TF SAME padding and align_corners survive ONNX export at odd and even sizes, and the
    Segmenter runs the exported file with the weights' own (TF) normalization."""
    from atrous import weights
    from atrous.export import export
    from atrous.inference import Segmenter

    model = tf_model(case)
    model.metadata.update(mean=TF_MEAN, std=TF_STD)
    path = tmp_path / f"{case}.onnx"
    export(model, path)
    exported = weights.load(path)
    for hw in IMAGES:
        x = image_input(hw)
        with torch.no_grad():
            want, got = model(x)["out"], exported(x)["out"]
        assert float((want - got).abs().max() / want.abs().max()) < TOLERANCE
    h, w, seed = IMAGES["128x96"]
    img = tf_recipe.image(h, w, seed)
    eager = Segmenter.from_model(model, scales=(1.0,)).predict_proba(img)
    onnx = Segmenter.from_model(exported, scales=(1.0,)).predict_proba(img)
    ref = np.load(FIXTURES / f"{case}.npz")["logits_up_128x96"][0]  # every 3rd pixel
    official = torch.from_numpy(ref).softmax(-1).permute(2, 0, 1).numpy()
    for proba in (eager, onnx):
        assert np.abs(proba[:, ::3, ::3] - official).max() < 1e-4


def test_zoo_class_counts_name_their_dataset() -> None:
    from atrous.weights.tf_deeplab import zoo_classes

    assert zoo_classes(21)["dataset"] == "voc"
    assert zoo_classes(19)["class_names"][0] == "road"
    ade = zoo_classes(151)
    assert ade["class_names"][:2] == ["other", "wall"] and len(ade["palette"]) == 151
    assert zoo_classes(7) == {}


def test_saved_conversion_reloads_with_its_configuration(tmp_path: Path) -> None:
    from atrous import weights

    prefix = write_fixture_checkpoint("mobilenetv2_v3_os16", tmp_path / "m")
    model = weights.load(prefix)
    saved = weights.load(weights.save(model, tmp_path / "m.safetensors"))
    assert saved.config == model.config and saved.metadata["mean"] == TF_MEAN
    assert saved.metadata["class_names"] == model.metadata["class_names"]
    x = image_input("128x96")
    with torch.no_grad():
        assert torch.equal(saved(x)["out"], model(x)["out"])


def test_convert_command_reads_a_zoo_tarball(tmp_path: Path, capsys) -> None:
    """``atrous convert --from tf zoo.tar.gz out.safetensors`` (the zoo's tarball layout, the
    checkpoint prefix found by its .index) and the converted file reproduces the official
    logits."""
    import json
    import tarfile

    from atrous import weights
    from atrous.cli import main

    prefix = write_fixture_checkpoint("mobilenetv2_v3_os16", tmp_path / "deeplabv3_mnv2_pascal")
    tarball = tmp_path / "deeplabv3_mnv2_pascal_train_aug.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(prefix.parent, arcname=prefix.parent.name)
    out = tmp_path / "mnv2.safetensors"
    assert main(["convert", "--from", "tf", str(tarball), str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source"] == "tf" and summary["arch"] == "deeplabv3_mobilenetv2"
    model = weights.load(out)
    got = outputs(model, image_input("97x129"))["logits_up"]
    ref = np.load(FIXTURES / "mobilenetv2_v3_os16.npz")["logits_up_97x129"]
    assert compare("mobilenetv2_v3_os16", "logits_up_97x129", got, ref) < TOLERANCE


def test_converted_model_is_served_with_the_official_labels(tmp_path: Path) -> None:
    """``atrous serve`` of a TF checkpoint: the TF normalization comes from the weights and
    the labels it answers are the official graph's argmax."""
    import io
    import time

    from PIL import Image
    from starlette.testclient import TestClient

    from atrous import weights
    from atrous.serve import ServerSettings, create_app

    model = weights.load(write_fixture_checkpoint("mobilenetv2_v3_os16", tmp_path / "m"))
    h, w, seed = IMAGES["128x96"]
    buf = io.BytesIO()
    Image.fromarray(tf_recipe.image(h, w, seed)).save(buf, format="PNG")
    with TestClient(create_app(model, ServerSettings(warmup_size=(64, 64)))) as client:
        for _ in range(300):  # the warm-up forward runs first (/readyz turns 200), <= 30 s
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        r = client.post(
            "/v1/segment", content=buf.getvalue(), headers={"content-type": "image/png"}
        )
    assert r.status_code == 200
    labels = np.asarray(Image.open(io.BytesIO(r.content)))[::3, ::3]
    official = np.load(FIXTURES / "mobilenetv2_v3_os16.npz")["logits_up_128x96"][0].argmax(-1)
    assert labels.shape == official.shape and (labels == official).mean() >= 0.999
