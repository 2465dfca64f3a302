"""atrous.weights: detection, conversion, save/load round trips, backbone checkpoints, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from recipe import state_dict, to_reference_names

import atrous.models as M
import atrous.weights as W

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reference"


def _entries(source: str, fixture: str) -> list:
    return json.loads((FIXTURES / source / f"{fixture}.json").read_text())["state_dict"]


@pytest.fixture(scope="module")
def tv_mnv3() -> dict[str, torch.Tensor]:
    return state_dict(_entries("torchvision", "deeplabv3_mobilenet_v3_large"))


def test_detect_sources(tv_mnv3) -> None:
    assert W.detect(tv_mnv3) == ("torchvision", "deeplabv3_mobilenetv3_large")
    vainf = state_dict(_entries("vainf", "deeplabv3_mobilenet_os16"))
    assert W.detect(vainf) == ("vainf", "deeplabv3_mobilenetv2")
    ours = M.build("deeplabv3plus_mobilenetv2", 3).state_dict()
    assert W.detect(ours) == ("atrous", "deeplabv3plus_mobilenetv2")
    with pytest.raises(W.CheckpointError, match="not a state dict of a known DeepLab"):
        W.detect({"foo.weight": torch.zeros(1)})


def test_convert_names_match_our_model(tv_mnv3) -> None:
    converted = W.convert(tv_mnv3, "torchvision", "deeplabv3_mobilenet_v3_large")
    options = W.source_config("torchvision", "deeplabv3_mobilenetv3_large")
    model = M.build("deeplabv3_mobilenetv3_large", 21, aux=True, **options)
    assert set(converted) == set(model.state_dict())


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = M.build(
        "deeplabv3plus_mobilenetv2", 4, output_stride=8, aux=True, separable=True
    ).eval()
    names = ["bg", "a", "b", "c"]
    pal = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    path = W.save(
        model, tmp_path / "m.safetensors", class_names=names, mean=(0.5, 0.5, 0.5), palette=pal
    )
    assert not list(tmp_path.glob("*.tmp"))
    loaded = W.load(path)
    assert loaded.config == model.config
    assert loaded.metadata["class_names"] == names
    assert loaded.metadata["mean"] == (0.5, 0.5, 0.5)
    assert [tuple(c) for c in loaded.metadata["palette"]] == pal
    assert not loaded.training
    x = torch.randn(1, 3, 45, 51)
    with torch.no_grad():
        for k in ("out", "aux"):
            torch.testing.assert_close(loaded(x)[k], model(x)[k], rtol=0, atol=0)


def test_bare_atrous_state_dict_infers_options() -> None:
    model = M.build("deeplabv3_mobilenetv2", 5, image_pooling=False, head_conv=True).eval()
    loaded = W.load(model.state_dict())
    assert loaded.config["arch"] == "deeplabv3_mobilenetv2"
    assert loaded.config["num_classes"] == 5
    assert loaded.config["image_pooling"] is False and loaded.config["head_conv"] is True


def test_num_classes_override_reinitializes_classifier(tv_mnv3) -> None:
    model = W.load(tv_mnv3, num_classes=5)
    assert model.config["num_classes"] == 5
    assert sorted(model.metadata["reinitialized"]) == [
        "aux_classifier.4.bias",
        "aux_classifier.4.weight",
        "head.classifier.bias",
        "head.classifier.weight",
    ]
    torch.testing.assert_close(
        model.state_dict()["backbone.features.16.0.weight"], tv_mnv3["backbone.16.0.weight"]
    )


def test_pth_file_with_weights_only(tmp_path: Path, tv_mnv3) -> None:
    path = tmp_path / "tv.pth"
    torch.save(tv_mnv3, path)
    model = W.load(path, source="torchvision")
    assert model.metadata["weights"] == str(path)
    # A pickled object that is not plain tensors is refused (weights_only=True).
    evil = tmp_path / "evil.pth"
    torch.save({"model_state": tv_mnv3, "obj": Path("x")}, evil)
    with pytest.raises(W.CheckpointError, match=r"evil\.pth.*weights_only"):
        W.load(evil)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        W.load(tmp_path / "nope.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(W.CheckpointError, match=r"junk\.safetensors"):
        W.load(junk)
    junk_pth = tmp_path / "junk.pth"
    junk_pth.write_text("hello")
    with pytest.raises(W.CheckpointError, match=r"junk\.pth"):
        W.load(junk_pth)
    sd = M.build("deeplabv3_mobilenetv2", 3).state_dict()
    sd["head.aspp.convs.0.0.weight"] = torch.zeros(7, 7, 1, 1)
    with pytest.raises(W.CheckpointError, match="shape"):
        W.load(sd)
    with pytest.raises(ValueError, match="source"):
        W.load(sd, source="caffe")


def _torchvision_resnet50_imagenet() -> dict[str, torch.Tensor]:
    """torchvision's resnet50 ImageNet state dict names, from the fixture's backbone part."""
    entries = [
        (k[len("backbone.") :], s, t)
        for k, s, t in _entries("torchvision", "deeplabv3_resnet50")
        if k.startswith("backbone.")
    ]
    entries += [("fc.weight", [1000, 2048], "float32"), ("fc.bias", [1000], "float32")]
    return state_dict(entries)


def test_torchvision_imagenet_resnet_loads_with_load_state_dict(tmp_path: Path) -> None:
    sd = _torchvision_resnet50_imagenet()
    classifier = M.ResNet(50, output_stride=32, num_classes=1000)
    classifier.load_state_dict(sd)  # strict: every name equal to torchvision's
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(sd, path)
    model = W.build_pretrained("deeplabv3_resnet50", num_classes=3, pretrained_backbone=path)
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
    with pytest.raises(W.CheckpointError, match=r"resnet50-imagenet\.pth: does not fit"):
        W.build_pretrained("deeplabv3_mobilenetv2", num_classes=3, pretrained_backbone=path)


def test_build_pretrained_loads_a_backbone_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    imagenet = M.MobileNetV2(16, width_mult=0.5).state_dict()
    imagenet["features.18.0.weight"] = torch.zeros(1280, 160, 1, 1)  # classifier: ignored
    path = tmp_path / "mnv2-imagenet.pth"
    torch.save(imagenet, path)
    kw = {"num_classes": 3, "output_stride": 8, "width_mult": 0.5, "aux": True}
    model = W.build_pretrained("deeplabv3_mobilenetv2", pretrained_backbone=path, **kw)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, imagenet[k]), k
    assert model.config == M.build("deeplabv3_mobilenetv2", **kw).config
    assert "pretrained_backbone" not in model.config
    from_memory = W.build_pretrained("deeplabv3_mobilenetv2", pretrained_backbone=imagenet, **kw)
    conv = from_memory.backbone.features[3].conv[0][0]
    assert torch.equal(conv.weight, imagenet["features.3.conv.0.0.weight"])
    assert W.build_pretrained("deeplabv3_mobilenetv2", pretrained_backbone=None, **kw).config == (
        model.config
    )
    with pytest.raises(W.CheckpointError, match=r"mnv2-imagenet\.pth: does not fit"):
        W.build_pretrained("deeplabv3_mobilenetv2", num_classes=3, pretrained_backbone=path)


def test_torchvision_imagenet_mobilenetv3_loads() -> None:
    entries = [
        ("features." + k[len("backbone.") :], s, t)
        for k, s, t in _entries("torchvision", "deeplabv3_mobilenet_v3_large")
        if k.startswith("backbone.")
    ]
    entries += [
        ("classifier.0.weight", [1280, 960], "float32"),
        ("classifier.0.bias", [1280], "float32"),
        ("classifier.3.weight", [1000, 1280], "float32"),
        ("classifier.3.bias", [1000], "float32"),
    ]
    sd = state_dict(entries)
    backbone = M.MobileNetV3Large(output_stride=32)
    ignored = W.load_backbone_weights(backbone, sd)
    assert sorted(ignored) == sorted(e[0] for e in entries[-4:])


@pytest.mark.parametrize(
    ("source", "arch", "os_", "classes"),
    [
        ("torchvision", "deeplabv3_resnet50", None, 7),
        ("torchvision", "deeplabv3_mobilenetv3_large", None, 3),
        ("vainf", "deeplabv3_resnet50", 8, 19),
        ("vainf", "deeplabv3plus_resnet101", 8, 4),
        ("vainf", "deeplabv3_mobilenetv2", 8, 5),
        ("vainf", "deeplabv3plus_mobilenetv2", 16, 2),
    ],
)
def test_every_conversion_round_trips(
    source: str, arch: str, os_: int | None, classes: int
) -> None:
    """Other class counts and OS 8: detection + conversion reproduce the model exactly."""
    torch.manual_seed(0)
    cfg = W.source_config(source, arch)
    if os_ is not None:
        cfg["output_stride"] = os_
        cfg["atrous_rates"] = [r * 16 // os_ for r in (6, 12, 18)]
    ref = M.build(arch, classes, aux=source == "torchvision", **cfg).eval()
    sd = to_reference_names(ref.state_dict(), source, arch)
    if source == "vainf":
        sd = {"model_state": sd, "cur_itrs": 10}
    loaded = W.load(sd, **({"output_stride": os_} if os_ and source == "vainf" else {}))
    assert W.detect(W.unwrap(sd)) == (source, arch)
    assert loaded.config["num_classes"] == classes
    assert loaded.config["atrous_rates"] == list(cfg["atrous_rates"])
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["out"], ref(x)["out"], rtol=0, atol=0)


def test_a_model_saved_without_its_aux_head_loads_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = M.build("deeplabv3_mobilenetv2", num_classes=3, width_mult=0.25, aux=True).eval()
    m.aux_classifier = None  # inference only
    back = W.load(W.save(m, tmp_path / "noaux.safetensors"))
    assert back.aux_classifier is None and back.config["aux"] is False
    assert m.config["aux"] is True  # the model itself is left as it is
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        assert torch.equal(back(x)["out"], m(x)["out"]) and "aux" not in back(x)
