"""The registry of published weights (:mod:`atrous.weights.registry`): every row carries the
facts an auditor needs, its defaults are the settings of the number it reports, and a row's
file, fetched from a local server (``tests/http_server.py``) and converted, reproduces the
parity fixtures: the official TF DeepLab's outputs (``tests/fixtures/tf_deeplab``) and
torchvision's (``tests/fixtures/reference``)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from http_server import FileServer
from recipe import FIXTURES as REFERENCE
from recipe import image
from registry_files import MNV2_VOC, isolate, tf_tarball, torchvision_pth, with_file
from test_tf_parity import FIXTURES as TF_FIXTURES
from test_tf_parity import compare, image_input, outputs

import atrous.models as M
from atrous import weights
from atrous.weights import CheckpointError, build_pretrained, get_weights, hub, registry
from atrous.weights.entry import FORMATS, KINDS, Entry

REGISTRY_SOURCE = Path(registry.__file__)
BACKBONES = {spec.backbone for spec in M.MODELS.values()}
TV_MNV3 = "torchvision:deeplabv3_mobilenet_v3_large_coco"


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
def test_every_row_has_the_required_fields(entry: Entry) -> None:
    assert entry.kind in KINDS and entry.format in FORMATS
    assert entry.urls and all(u.startswith("https://") for u in entry.urls)
    assert entry.license and entry.dataset and entry.classes
    assert re.search(r"pytorch/vision|tensorflow/models", entry.source)
    if entry.format.endswith("pth"):  # torchvision: the published hash, from the file name
        assert entry.sha256_prefix and f"-{entry.sha256_prefix}." in entry.file_name
        assert entry.num_params
    else:  # no published hash: the format's own checks, then the recorded SHA-256
        assert entry.sha256_prefix is None and "recorded" in entry.integrity
        assert all(p.startswith("http://download.tensorflow.org/") for p in entry.published_urls)
    for metric in entry.metrics:
        assert metric.value > 0 and metric.split and metric.protocol
    if entry.kind == "segmentation":
        assert M.get_spec(entry.arch).name == entry.arch and entry.num_classes
        assert entry.metrics and entry.metrics[0].name == "mIoU"
        assert all(m.output_stride for m in entry.metrics)
    else:
        assert entry.arch in BACKBONES
        assert entry.metrics or "accuracy" in entry.unknown  # none published: said so


def test_every_row_has_a_source_comment() -> None:
    """Each ``Entry(`` of the table is preceded by a comment naming where its facts are from."""
    lines = REGISTRY_SOURCE.read_text().splitlines()
    tree = ast.parse(REGISTRY_SOURCE.read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Entry"
    ]
    assert len(calls) == len(registry.ENTRIES)
    for call in calls:
        i, block = call.lineno - 2, []
        while lines[i].strip().startswith("#"):
            block.insert(0, lines[i].strip())
            i -= 1
        comment = " ".join(block)
        assert re.search(r"\.py|\.md", comment), lines[call.lineno - 1 : call.lineno + 1]


def test_defaults_reproduce_the_reported_number() -> None:
    """A TF zoo row builds at the output stride of its headline number (OS 16 where the zoo
    reports a single-scale number, else the OS 8 of its only, multi-scale, one); the build
    options of every segmentation row are ones ``load`` accepts."""
    for entry in registry.ENTRIES:
        if entry.format == "tf_zoo_tarball":
            top = entry.headline
            assert entry.build == {"output_stride": top.output_stride}, entry.name
            single = [m for m in entry.metrics if m.scales == (1.0,)]
            assert not single or top in single, entry.name
            assert entry.inference_scales == (1.0,)
    voc = get_weights("tf:xception65_coco_voc_trainaug")
    assert (voc.headline.value, voc.headline.output_stride) == (82.20, 16)


def test_names_and_lookup() -> None:
    assert get_weights("xception65_coco_voc_trainaug").name == "tf:xception65_coco_voc_trainaug"
    with pytest.raises(CheckpointError, match="did you mean tf:xception65_coco_voc_trainaug"):
        get_weights("tf:xception65_coco_voc_trainaugg")
    assert registry.looks_like_name("tf:abc") and not registry.looks_like_name("c:/x.pth")
    assert registry.imagenet_weights("resnet101").name == "torchvision:resnet101_imagenet"
    assert set(registry.IMAGENET) == BACKBONES  # every atrous backbone has its ImageNet row


def test_meta_and_transforms() -> None:
    entry = get_weights(TV_MNV3)
    meta = entry.meta
    assert meta["categories"][15] == "person" and meta["num_params"] == 11029328
    assert meta["metrics"][0]["value"] == 60.3 and "520" in meta["metrics"][0]["protocol"]
    x = entry.transforms()(np.full((40, 60, 3), 255, np.uint8))
    assert x.shape == (1, 3, 520, 780)  # the shorter side resized to 520, as torchvision
    torch.testing.assert_close(
        x[0, :, 0, 0],
        (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]),
    )
    tf = get_weights(MNV2_VOC).transforms()(np.zeros((5, 7, 3), np.uint8))
    assert tf.shape == (1, 3, 5, 7) and float(tf.max()) == -1.0  # 2/255 x - 1, unresized
    assert json.dumps(entry.meta, default=str)


def test_tf_row_converts_and_reproduces_the_official_outputs(tmp_path: Path, monkeypatch) -> None:
    """tf:mobilenetv2_coco_voc_trainaug, served as the zoo's tarball of the fixture weights:
    fetched, checked, converted once; equal to the official graph's outputs at OS 16 (the
    default) and, from the cached conversion, at OS 8."""
    name = get_weights(MNV2_VOC).file_name
    with FileServer({name: tf_tarball()}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        model = weights.load(MNV2_VOC)
        again = weights.load(MNV2_VOC, output_stride=8)
    assert server.requests == [(name, None)]
    assert model.metadata["registry"] == MNV2_VOC and model.metadata["source"] == "tf"
    assert model.metadata["class_names"][15] == "person" and model.metadata["mean"] == (0.5,) * 3
    assert model.config["output_stride"] == 16 and again.config["output_stride"] == 8
    converted = hub.converted_path(get_weights(MNV2_VOC))
    assert model.metadata["weights_file"] == str(converted)
    for case, net in (("mobilenetv2_v3_os16", model), ("mobilenetv2_v3_os8", again)):
        ref = np.load(TF_FIXTURES / f"{case}.npz")
        got = outputs(net, image_input("128x96"))["logits_up"]
        assert compare(case, "logits_up_128x96", got, ref["logits_up_128x96"]) < 1e-4


def test_torchvision_row_converts_and_reproduces_torchvision(tmp_path: Path, monkeypatch) -> None:
    data = torchvision_pth("deeplabv3_mobilenet_v3_large")
    entry = with_file(TV_MNV3, data, monkeypatch)
    with FileServer({entry.file_name: data}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        model = weights.load(TV_MNV3)
    assert model.config["arch"] == entry.arch and model.metadata["source"] == "torchvision"
    assert sum(p.numel() for p in model.parameters()) == entry.num_params
    assert model.metadata["class_names"][0] == "background"  # the COCO-VOC categories
    ref = np.load(REFERENCE / "torchvision" / "deeplabv3_mobilenet_v3_large.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(image((1, 3, 129, 129))))["out"].numpy()
    err = np.abs(out[:, :, ::8, ::8] - ref["a_out_s8"]).max() / np.abs(ref["a_out_s8"]).max()
    assert err < 1e-4


def test_fine_tuning_from_a_name_drops_the_class_names(tmp_path: Path, monkeypatch) -> None:
    """``train --weights NAME`` (the config's ``weights:``) fine-tunes from the entry."""
    from atrous.training.config import TrainConfig
    from atrous.training.model_setup import build_training_model

    name = get_weights(MNV2_VOC).file_name
    logged: list[str] = []
    with FileServer({name: tf_tarball()}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        model = weights.load(MNV2_VOC, num_classes=5)
        cfg = TrainConfig(model="deeplabv3_mobilenetv2", weights=MNV2_VOC)
        trained = build_training_model(cfg, num_classes=5, log=logged.append)
    assert trained.training and trained.num_classes == 5
    assert f"fine-tuning from {MNV2_VOC} (tf format)" in logged[0]
    assert model.num_classes == 5 and "class_names" not in model.metadata
    assert sorted(model.metadata["reinitialized"]) == [
        "head.classifier.bias",
        "head.classifier.weight",
    ]


def test_a_path_that_exists_is_used_as_is(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("ATROUS_OFFLINE", "1")
    Path(TV_MNV3).write_bytes(torchvision_pth())  # a file named like a registry entry
    model = weights.load(TV_MNV3)
    assert model.metadata["source"] == "torchvision" and "registry" not in model.metadata
    with pytest.raises(FileNotFoundError):
        weights.load("no_such_model.pth")


def test_imagenet_backbones_by_name(tmp_path: Path, monkeypatch) -> None:
    data = torchvision_pth("deeplabv3_mobilenet_v3_large", backbone=True)
    entry = with_file("torchvision:mobilenet_v3_large_imagenet", data, monkeypatch)
    with FileServer({entry.file_name: data}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        model = build_pretrained(
            "deeplabv3_mobilenetv3_large", pretrained_backbone="imagenet", num_classes=3
        )
        same = build_pretrained(
            "deeplabv3plus_mobilenetv3_large",
            num_classes=4,
            pretrained_backbone="torchvision:mobilenet_v3_large_imagenet",
        )
        with pytest.raises(CheckpointError, match="not ImageNet weights for the resnet50"):
            build_pretrained("deeplabv3_resnet50", pretrained_backbone=entry.name)
        with pytest.raises(CheckpointError, match="cannot load TensorFlow ImageNet backbone"):
            build_pretrained("deeplabv3plus_xception65", pretrained_backbone="imagenet")
        with pytest.raises(CheckpointError, match="not a segmentation model"):
            weights.load(entry.name)
    assert server.full_gets(entry.file_name) == 1  # nothing fetched for the refused ones
    sd = torch.load(hub.fetch(entry), weights_only=True)
    for net in (model, same):
        torch.testing.assert_close(
            net.backbone.features[4].block[0][0].weight, sd["features.4.block.0.0.weight"]
        )


def test_training_config_pretrained_backbone_imagenet(tmp_path: Path, monkeypatch) -> None:
    """``pretrained_backbone: imagenet`` in a training config is the registry's ImageNet entry
    for the model's backbone; offline and uncached it says how to supply the file."""
    from atrous.training.config import TrainConfig
    from atrous.training.model_setup import build_training_model

    data = torchvision_pth("deeplabv3_mobilenet_v3_large", backbone=True)
    entry = with_file("torchvision:mobilenet_v3_large_imagenet", data, monkeypatch)
    cfg = TrainConfig(model="deeplabv3_mobilenetv3_large", pretrained_backbone="imagenet")
    isolate(monkeypatch, tmp_path / "offline")
    monkeypatch.setenv("ATROUS_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=f"atrous weights import {entry.file_name}"):
        build_training_model(cfg, num_classes=3, log=lambda s: None)
    with FileServer({entry.file_name: data}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        model = build_training_model(cfg, num_classes=3, log=lambda s: None)
    sd = torch.load(hub.fetch(entry), weights_only=True)
    torch.testing.assert_close(
        model.backbone.features[4].block[0][0].weight, sd["features.4.block.0.0.weight"]
    )


def test_builders_take_weights_by_name_default_or_dataset(tmp_path: Path, monkeypatch) -> None:
    """``atrous.models.<builder>(weights=...)`` in torchvision's style: a registry name,
    "DEFAULT" or the dataset; the entry's class count unless overridden (fine-tuning)."""
    name = get_weights(MNV2_VOC).file_name
    with FileServer({name: tf_tarball()}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        by_tag = M.deeplabv3_mobilenetv2(weights="voc")
        by_default = M.deeplabv3_mobilenetv2(weights="DEFAULT", output_stride=8)
        by_name = M.deeplabv3_mobilenetv2(weights=MNV2_VOC, num_classes=5)
    assert server.requests == [(name, None)]  # one download, then the cached conversion
    assert by_tag.metadata["registry"] == by_default.metadata["registry"] == MNV2_VOC
    assert by_tag.num_classes == 21 and by_default.config["output_stride"] == 8
    assert by_name.num_classes == 5 and "class_names" not in by_name.metadata
    with pytest.raises(CheckpointError, match="no 'ade20k' weights for deeplabv3_mobilenetv2"):
        M.deeplabv3_mobilenetv2(weights="ade20k")
    with pytest.raises(CheckpointError, match="holds a deeplabv3_mobilenetv2, not a"):
        M.deeplabv3plus_xception65(weights=MNV2_VOC)
    assert M.deeplabv3_mobilenetv2().num_classes == 21  # no weights: built as before
