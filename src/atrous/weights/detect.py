"""What a state dict is, from its key names and shapes alone: the source that wrote it
(atrous, torchvision, VainF), the architecture, and for atrous files without metadata
the build options and class count."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from atrous.models import get_spec

from .errors import CheckpointError


def _has_prefix(keys: set[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def resnet_depth(sd: Mapping[str, Tensor], prefix: str) -> int:
    """50, 101 or 152 from the number of ``layer3`` blocks under ``prefix``; 0 if none fits."""
    blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"{prefix}layer3\.(\d+)\.", k))}
    n = max(blocks) + 1 if blocks else 0
    return {6: 50, 23: 101, 36: 152}.get(n, 0)


def detect(sd: Mapping[str, Tensor]) -> tuple[str, str]:
    """(source, arch) of a state dict, from its key names; raises if it is not recognized."""
    keys = set(sd)
    if _has_prefix(keys, "head.") and _has_prefix(keys, "backbone."):
        return "atrous", _atrous_arch(sd)
    found = _torchvision_arch(sd) or _vainf_arch(sd)
    if found:
        return found
    raise CheckpointError(
        "not a state dict of a known DeepLab (atrous, torchvision deeplabv3_resnet50/101 / "
        "deeplabv3_mobilenet_v3_large, or VainF deeplabv3[plus]_resnet50/101/mobilenet); "
        f"first keys: {sorted(keys)[:5]}"
    )


def _torchvision_arch(sd: Mapping[str, Tensor]) -> tuple[str, str] | None:
    keys = set(sd)
    if "classifier.4.weight" not in keys or not _has_prefix(keys, "classifier.0.convs."):
        return None
    if _has_prefix(keys, "backbone.layer4."):
        depth = resnet_depth(sd, "backbone.")
        if depth in (50, 101):
            return "torchvision", f"deeplabv3_resnet{depth}"
    if "backbone.16.0.weight" in keys:
        return "torchvision", "deeplabv3_mobilenetv3_large"
    return None


def _vainf_arch(sd: Mapping[str, Tensor]) -> tuple[str, str] | None:
    keys = set(sd)
    v3plus_aspp = _has_prefix(keys, "classifier.aspp.convs.")
    if not v3plus_aspp and not _has_prefix(keys, "classifier.classifier.0.convs."):
        return None
    plus = _has_prefix(keys, "classifier.aspp.")
    if _has_prefix(keys, "backbone.low_level_features."):
        backbone = "mobilenetv2"
    else:
        depth = resnet_depth(sd, "backbone.")
        if depth not in (50, 101):
            return None
        backbone = f"resnet{depth}"
    return "vainf", f"deeplabv3{'plus' if plus else ''}_{backbone}"


def _atrous_arch(sd: Mapping[str, Tensor]) -> str:
    keys = set(sd)
    if _has_prefix(keys, "backbone.layer4."):
        backbone = f"resnet{resnet_depth(sd, 'backbone.')}"
    elif _has_prefix(keys, "backbone.entry."):
        backbone = "xception65"
    elif _has_prefix(keys, "backbone.features.1.block."):
        backbone = "mobilenetv3_large"
    elif _has_prefix(keys, "backbone.features.17.conv."):
        backbone = "mobilenetv2"
    elif _has_prefix(keys, "backbone.features.28."):
        backbone = "vgg16"
    else:
        raise CheckpointError("atrous state dict with an unknown backbone")
    if _has_prefix(keys, "head.fc6."):
        return "deeplabv1_vgg16"
    if _has_prefix(keys, "head.aspp.branches."):
        return f"deeplabv2_{backbone}"
    return f"deeplabv3{'plus' if _has_prefix(keys, 'head.project.') else ''}_{backbone}"


def infer_atrous_options(sd: Mapping[str, Tensor], arch: str) -> dict[str, Any]:
    """Build options visible in an atrous state dict (for files without metadata)."""
    keys = set(sd)
    opts: dict[str, Any] = {"aux": _has_prefix(keys, "aux_classifier.")}
    spec = get_spec(arch)
    if spec.head not in ("aspp", "decoder"):
        return opts
    if _has_prefix(keys, "head.blocks."):
        opts["head"] = "cascade"
        return opts
    branches = {int(m.group(1)) for k in keys if (m := re.match(r"head\.aspp\.convs\.(\d+)\.", k))}
    opts["separable"] = any(".depthwise." in k for k in keys if k.startswith("head.aspp.convs."))
    last = max(branches)
    pool_conv = f"head.aspp.convs.{last}.1.weight"  # image pooling: GlobalAvgPool, then 1×1
    opts["image_pooling"] = last > 0 and pool_conv in keys and sd[pool_conv].shape[-1] == 1
    if spec.head == "aspp":
        opts["head_conv"] = "head.conv.0.weight" in keys
    else:
        fuse = {int(m.group(1)) for k in keys if (m := re.match(r"head\.fuse\.(\d+)\.", k))}
        opts["decoder_convs"] = len(fuse)
    return opts


# The final classifier layer of each naming, looked up in this order.
_CLASSIFIER_KEYS = (
    "head.classifier.weight",  # atrous v3, v3+, cascade
    "classifier.4.weight",  # torchvision
    "classifier.classifier.4.weight",  # VainF v3
    "classifier.classifier.3.weight",  # VainF v3+
)
_FINAL_LAYER = {"largefov": "fc8.weight", "aspp_sum": "branches.0.weight"}


def infer_num_classes(sd: Mapping[str, Tensor], head_prefix: str, arch: str) -> int:
    """The class count: the output channels of the head's final layer."""
    final = _FINAL_LAYER.get(get_spec(arch).head)
    for k, v in sd.items():
        if final and k.endswith(final) and k.startswith(head_prefix):
            return int(v.shape[0])
    for k in _CLASSIFIER_KEYS:
        if k in sd:
            return int(sd[k].shape[0])
    candidates = [
        v
        for k, v in sd.items()
        if k.endswith(".weight")
        and v.dim() == 4
        and v.shape[-1] == 1
        and k.startswith(head_prefix)
        and not k.startswith("aux")
    ]
    if not candidates:
        raise CheckpointError("cannot find the classifier layer to read num_classes from")
    return int(candidates[-1].shape[0])
