"""The official TensorFlow DeepLab (tensorflow/models ``research/deeplab``) in atrous's names.

A TF model-zoo checkpoint is a dict of variables (``xception_65/entry_flow/conv1_1/weights``,
``aspp0/BatchNorm/gamma``, ``logits/semantic/biases`` …; read by :mod:`.tf_checkpoint`). This
module says what network the variables describe and turns them into an atrous state dict:

* :func:`detect_tf` — the backbone (``xception_65``, ``MobilenetV2``), the head (v3+ decoder,
  v3 ASPP with or without atrous branches, image pooling) and the class count, from the
  variable names and shapes alone; what atrous cannot express is refused by name
  (Xception-41/71, NAS, dense prediction cells, MobileNetV3, the MobileNetV2 decoder tap).
* :func:`tf_build_options` — the :func:`atrous.models.build` arguments that make atrous
  compute what the official graph computes: BatchNorm epsilon 1e-3 in the Xception and
  MobileNetV2 backbones (slim's default), TF ``SAME`` padding in MobileNetV2, bilinear
  resizes with ``align_corners=True`` (``model.py``), the zoo's MobileNetV2 head (image
  pooling + ``aspp0`` only), and the input ``2/255·x − 1`` (mean = std = 0.5).
* :func:`convert_tf` — the tensors renamed and laid out for PyTorch: conv weights
  ``[kh, kw, cin, cout]`` → ``[cout, cin, kh, kw]``, depthwise ``[kh, kw, c, 1]`` →
  ``[c, 1, kh, kw]``, and two concatenation orders undone by permuting input channels
  (TF's ASPP concatenates image pooling first, atrous last; TF's decoder puts the ASPP
  output before the low-level feature, atrous after), which leaves the outputs equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atrous.class_tables import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    VOC_PALETTE,
)
from atrous.models.resnet import DEPTHS
from atrous.models.zoo import scale_rates

from .errors import CheckpointError

# The input normalization of every TF DeepLab variant: (2/255) x - 1
# (``preprocess_utils`` / ``feature_extractor._preprocess_zero_mean_unit_range``).
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)

# ASPP rates of the zoo's Xception models at output stride 16 (``--atrous_rates=6,12,18``).
TF_RATES_OS16 = (6, 12, 18)

_BN = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}

_UNSUPPORTED = {
    "xception_41/": "Xception-41",
    "xception_71/": "Xception-71",
    "MobilenetV3/": (
        "the zoo's MobileNetV3 Cityscapes models: their head needs what atrous's models "
        "cannot express (local image pooling over 769x769 crops at stride 4x5, "
        "squeeze-and-excitation in the ASPP, a decoder at stride 8 that sums 19-channel "
        "logits, and TF's MobileNetV3-Large layout)"
    ),
    "nas_": "Auto-DeepLab / NAS backbones (a searched cell network atrous does not build)",
    "dense_prediction_cell": (
        "the dense prediction cell (DPC) head (a searched ASPP replacement atrous does not build)"
    ),
}


@dataclass(frozen=True)
class TFModel:
    """What a TF DeepLab checkpoint holds: the atrous architecture and its head."""

    arch: str
    backbone: str  # "xception65" | "mobilenetv2" | "resnet50_beta" | "resnet101_beta"
    num_classes: int
    decoder: bool
    aspp_branches: int  # atrous (3×3) ASPP branches: 3 for Xception v3+, 0 in the MNv2 zoo
    image_pooling: bool


def detect_tf(names: Mapping[str, tuple[int, ...]] | Any, where: str = "checkpoint") -> TFModel:
    """The architecture of a TF DeepLab checkpoint from its variable names → shapes."""
    shapes = {k: tuple(v) for k, v in dict(names).items()}
    for prefix, what in _UNSUPPORTED.items():
        if any(k.startswith(prefix) or f"/{prefix}" in k for k in shapes):
            raise CheckpointError(f"{where}: not supported by atrous: {what}")
    if "logits/semantic/biases" not in shapes:
        raise CheckpointError(
            f"{where}: not a TensorFlow DeepLab segmentation checkpoint "
            "(no logits/semantic/biases; an ImageNet backbone checkpoint has no head)"
        )
    num_classes = int(shapes["logits/semantic/biases"][0])
    decoder = "decoder/feature_projection0/weights" in shapes
    resnet = re.compile(r"resnet_v1_(50|101)/conv1_1/weights")
    if any(k.startswith("xception_65/") for k in shapes):
        backbone = "xception65"
    elif beta := next((m.group(1) for k in shapes if (m := resnet.fullmatch(k))), None):
        backbone = f"resnet{beta}_beta"
    elif any(k.startswith("MobilenetV2/") for k in shapes):
        backbone = "mobilenetv2"
        if decoder:
            raise CheckpointError(
                f"{where}: a MobileNetV2 DeepLab v3+ (decoder on expanded_conv_2's depthwise "
                "output) is not supported by atrous; the zoo's MobileNetV2 models are v3"
            )
    else:
        first = sorted(shapes)[:3]
        raise CheckpointError(f"{where}: unknown TensorFlow backbone (variables {first} ...)")
    branches = sum(1 for k in shapes if re.fullmatch(r"aspp[1-9]_depthwise/depthwise_weights", k))
    if any(re.fullmatch(r"aspp[1-9]/weights", k) for k in shapes):
        raise CheckpointError(f"{where}: ASPP without separable convs is not supported")
    if backbone != "mobilenetv2" and not decoder:
        raise CheckpointError(f"{where}: {backbone} without the v3+ decoder is not supported")
    if backbone != "mobilenetv2" and branches != 3:
        raise CheckpointError(f"{where}: {backbone} with {branches} ASPP branches (atrous: 3)")
    arch = f"deeplabv3{'plus' if decoder else ''}_{backbone}"
    pooling = "image_pooling/weights" in shapes
    return TFModel(arch, backbone, num_classes, decoder, branches, pooling)


def tf_build_options(model: TFModel, output_stride: int = 16) -> dict[str, Any]:
    """:func:`atrous.models.build` keyword arguments that reproduce the official graph."""
    opts: dict[str, Any] = {
        "num_classes": model.num_classes,
        "output_stride": output_stride,
        "align_corners": True,
        "image_pooling": model.image_pooling,
    }
    if model.backbone in ("xception65", "mobilenetv2"):
        opts["backbone_eps"] = 1e-3  # slim's batch_norm default; resnet_v1_beta sets 1e-5
    if model.backbone == "mobilenetv2":
        opts.update(padding="same", atrous_rates=(), separable=False, head_conv=False)
    else:
        opts["atrous_rates"] = scale_rates(TF_RATES_OS16, 16, output_stride)
    return opts


def zoo_classes(num_classes: int) -> dict[str, Any]:
    """The dataset, class names and palette of the model zoo's models with ``num_classes``
    outputs (``research/deeplab/datasets/data_generator.py``): 21 Pascal VOC, 19 Cityscapes
    train ids, 151 ADE20K (index 0 "other", ignored in training, then the 150 classes);
    {} for any other count (names then come from the user)."""
    if num_classes == len(VOC_CLASSES):
        return {"dataset": "voc", "class_names": list(VOC_CLASSES), "palette": VOC_PALETTE}
    if num_classes == len(CITYSCAPES_CLASSES):
        names, palette = list(CITYSCAPES_CLASSES), CITYSCAPES_PALETTE
        return {"dataset": "cityscapes", "class_names": names, "palette": palette}
    if num_classes == len(ADE20K_CLASSES) + 1:
        palette = np.concatenate([np.zeros((1, 3), np.uint8), ADE20K_PALETTE])
        return {"dataset": "ade20k", "class_names": ["other", *ADE20K_CLASSES], "palette": palette}
    return {}


class _Mapper:
    """Fills an atrous state dict from TF tensors, one layer at a time, and remembers which
    TF variables were used, so that nothing is silently dropped or left unset."""

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray],
        target: Mapping[str, torch.Tensor],
        reshape_ok: bool = False,
    ) -> None:
        self.tf = tensors
        self.target = target
        self.reshape_ok = reshape_ok
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def _take(self, name: str) -> np.ndarray:
        if name not in self.tf:
            raise CheckpointError(f"the checkpoint has no variable {name!r}")
        self.used.add(name)
        return np.asarray(self.tf[name])

    def _put(self, key: str, value: np.ndarray, tf_name: str) -> None:
        if key not in self.target:
            raise CheckpointError(f"{tf_name}: no atrous parameter {key!r} to hold it")
        t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tuple(t.shape) != tuple(self.target[key].shape) and not self.reshape_ok:
            raise CheckpointError(
                f"{tf_name}: shape {tuple(value.shape)} does not fit {key} "
                f"{tuple(self.target[key].shape)}"
            )
        self.out[key] = t

    def conv(self, scope: str, key: str, perm: np.ndarray | None = None) -> None:
        """A conv's ``weights`` [kh, kw, cin, cout] (and ``biases``) → ``key.weight``."""
        w = self._take(f"{scope}/weights").transpose(3, 2, 0, 1)
        self._put(f"{key}.weight", w[:, perm] if perm is not None else w, f"{scope}/weights")
        if f"{scope}/biases" in self.tf:
            self._put(f"{key}.bias", self._take(f"{scope}/biases"), f"{scope}/biases")

    def depthwise(self, scope: str, key: str, perm: np.ndarray | None = None) -> None:
        """``depthwise_weights`` [kh, kw, c, 1] → ``key.weight`` [c, 1, kh, kw]."""
        w = self._take(f"{scope}/depthwise_weights").transpose(2, 3, 0, 1)
        self._put(f"{key}.weight", w[perm] if perm is not None else w, scope)

    def bn(self, scope: str, key: str, perm: np.ndarray | None = None) -> None:
        """``scope/BatchNorm/{gamma,beta,moving_mean,moving_variance}`` → ``key.*``."""
        for tf_leaf, pt_leaf in _BN.items():
            v = self._take(f"{scope}/BatchNorm/{tf_leaf}")
            self._put(f"{key}.{pt_leaf}", v[perm] if perm is not None else v, scope)

    def conv_bn(self, scope: str, conv_key: str, bn_key: str, perm: np.ndarray | None = None):
        self.conv(scope, conv_key, perm)
        self.bn(scope, bn_key)

    def separable(self, scope: str, key: str, perm: np.ndarray | None = None) -> None:
        """A split separable conv (``scope_depthwise`` + ``scope_pointwise``, each with BN) →
        atrous's ``key.depthwise.{0,1}`` and ``key.pointwise.{0,1}``."""
        self.depthwise(f"{scope}_depthwise", f"{key}.depthwise.0", perm)
        self.bn(f"{scope}_depthwise", f"{key}.depthwise.1", perm)
        self.conv_bn(f"{scope}_pointwise", f"{key}.pointwise.0", f"{key}.pointwise.1", perm)

    def finish(self, where: str) -> dict[str, torch.Tensor]:
        unused = sorted(set(self.tf) - self.used)
        if unused:
            more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            raise CheckpointError(f"{where}: variables atrous does not know: {unused[:5]}{more}")
        unset = [k for k in self.target if k not in self.out and "num_batches" not in k]
        if unset:
            raise CheckpointError(f"{where}: nothing in the checkpoint sets {unset[:5]}")
        return dict(self.out)


def _roll(total: int, first: int) -> np.ndarray:
    """atrous channel i of a concatenation = TF channel (i + first) % total: TF's first
    ``first`` channels come last in atrous's order."""
    return (np.arange(total) + first) % total


def _xception_units() -> Iterator[tuple[str, str]]:
    """(TF scope, atrous key) of every Xception-65 unit, in order."""
    for b in range(3):
        yield f"entry_flow/block{b + 1}/unit_1", f"entry.{b}"
    for u in range(16):
        yield f"middle_flow/block1/unit_{u + 1}", f"middle.{u}"
    for b in range(2):
        yield f"exit_flow/block{b + 1}/unit_1", f"exit.{b}"


def _map_xception(m: _Mapper) -> None:
    for i in (1, 2):
        scope = f"xception_65/entry_flow/conv1_{i}"
        m.conv_bn(scope, f"backbone.stem.{i - 1}.0", f"backbone.stem.{i - 1}.1")
    for tf_unit, pt_unit in _xception_units():
        module = f"xception_65/{tf_unit}/xception_module"
        for j in range(3):
            m.separable(f"{module}/separable_conv{j + 1}", f"backbone.{pt_unit}.convs.{j}")
        if f"{module}/shortcut/weights" in m.tf:
            m.conv_bn(
                f"{module}/shortcut", f"backbone.{pt_unit}.skip.0", f"backbone.{pt_unit}.skip.1"
            )


def _map_resnet_beta(m: _Mapper, depth: int) -> None:
    root = f"resnet_v1_{depth}"
    for i in range(3):
        m.conv_bn(f"{root}/conv1_{i + 1}", f"backbone.stem.{i}.0", f"backbone.stem.{i}.1")
    for b, n in enumerate(DEPTHS[depth]):
        for u in range(n):
            scope = f"{root}/block{b + 1}/unit_{u + 1}/bottleneck_v1"
            key = f"backbone.layer{b + 1}.{u}"
            for j in (1, 2, 3):
                m.conv_bn(f"{scope}/conv{j}", f"{key}.conv{j}", f"{key}.bn{j}")
            if f"{scope}/shortcut/weights" in m.tf:
                m.conv_bn(f"{scope}/shortcut", f"{key}.downsample.0", f"{key}.downsample.1")


def _map_mobilenetv2(m: _Mapper) -> None:
    m.conv_bn("MobilenetV2/Conv", "backbone.features.0.0", "backbone.features.0.1")
    for k in range(17):
        scope = "MobilenetV2/expanded_conv" + (f"_{k}" if k else "")
        key = f"backbone.features.{k + 1}.conv"
        i = 0
        if f"{scope}/expand/weights" in m.tf:
            m.conv_bn(f"{scope}/expand", f"{key}.0.0", f"{key}.0.1")
            i = 1
        m.depthwise(f"{scope}/depthwise", f"{key}.{i}.0")
        m.bn(f"{scope}/depthwise", f"{key}.{i}.1")
        m.conv_bn(f"{scope}/project", f"{key}.{i + 1}", f"{key}.{i + 2}")


def _map_head(m: _Mapper, model: TFModel) -> None:
    aspp = "head.aspp"
    m.conv_bn("aspp0", f"{aspp}.convs.0.0", f"{aspp}.convs.0.1")
    for i in range(model.aspp_branches):
        m.separable(f"aspp{i + 1}", f"{aspp}.convs.{i + 1}")
    branches = 1 + model.aspp_branches
    perm = None
    if model.image_pooling:
        pool = f"{aspp}.convs.{branches}"
        m.conv_bn("image_pooling", f"{pool}.1", f"{pool}.2")
        channels = m.tf["image_pooling/weights"].shape[-1]
        perm = _roll((branches + 1) * channels, channels)
    m.conv_bn("concat_projection", f"{aspp}.project.0", f"{aspp}.project.1", perm)
    if model.decoder:
        m.conv_bn("decoder/feature_projection0", "head.project.0", "head.project.1")
        aspp_c = m.tf["concat_projection/weights"].shape[-1]
        low_c = m.tf["decoder/feature_projection0/weights"].shape[-1]
        m.separable("decoder/decoder_conv0", "head.fuse.0", _roll(aspp_c + low_c, aspp_c))
        m.separable("decoder/decoder_conv1", "head.fuse.1")
    m.conv("logits/semantic", "head.classifier")


def convert_tf(
    tensors: Mapping[str, np.ndarray],
    target: Mapping[str, torch.Tensor],
    where: str = "checkpoint",
    reshape_ok: bool = False,
) -> dict[str, torch.Tensor]:
    """TF DeepLab variables (``global_step`` and optimizer slots already dropped) → a state
    dict for ``target`` (the state dict of the model :func:`tf_build_options` builds).
    ``reshape_ok`` lets tensors whose shape differs from the target's through (a model
    built with another ``num_classes``, whose classifier the caller re-initializes)."""
    model = detect_tf({k: np.shape(v) for k, v in tensors.items()}, where)
    m = _Mapper(tensors, target, reshape_ok)
    mappers = {
        "xception65": _map_xception,
        "mobilenetv2": _map_mobilenetv2,
        "resnet50_beta": lambda m: _map_resnet_beta(m, 50),
        "resnet101_beta": lambda m: _map_resnet_beta(m, 101),
    }
    mappers[model.backbone](m)
    _map_head(m, model)
    return m.finish(where)
