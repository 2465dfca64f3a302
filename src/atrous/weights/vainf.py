"""VainF/DeepLabV3Plus-Pytorch checkpoints (``deeplabv3[plus]_resnet50/101/mobilenet``):
their names and the configuration they were built with (REFERENCES.md).

VainF's v3 head is ``classifier.classifier.0`` (ASPP), ``.1``/``.2`` (3×3 conv + BN),
``.4`` (classifier); its v3+ head has ``classifier.project`` (low-level projection),
``classifier.aspp`` and a decoder of one 3×3 conv (``classifier.classifier.0``/``.1``) before
the classifier (``.3``). Its MobileNetV2 splits ``features`` into ``low_level_features`` and
``high_level_features`` and pads each depthwise input itself (``padding="vainf"``).
"""

from __future__ import annotations

from typing import Any

from atrous.models import ModelSpec

RenameRules = tuple[tuple[str, str], ...]

_V3_HEAD: RenameRules = (
    (r"^classifier\.classifier\.0\.", "head.aspp."),
    (r"^classifier\.classifier\.1\.", "head.conv.0."),
    (r"^classifier\.classifier\.2\.", "head.conv.1."),
    (r"^classifier\.classifier\.4\.", "head.classifier."),
)
_V3PLUS_HEAD: RenameRules = (
    (r"^classifier\.project\.", "head.project."),
    (r"^classifier\.aspp\.", "head.aspp."),
    (r"^classifier\.classifier\.0\.", "head.fuse.0.0."),
    (r"^classifier\.classifier\.1\.", "head.fuse.0.1."),
    (r"^classifier\.classifier\.3\.", "head.classifier."),
)
_MOBILENETV2: RenameRules = ((r"^backbone\.(low|high)_level_features\.", "backbone.features."),)
# Per (backbone family, DeepLab version): regex → replacement, the first match renames a key.
RENAME_RULES: dict[tuple[str, str], RenameRules] = {
    ("resnet", "v3"): _V3_HEAD,
    ("resnet", "v3+"): _V3PLUS_HEAD,
    ("mobilenetv2", "v3"): _MOBILENETV2 + _V3_HEAD,
    ("mobilenetv2", "v3+"): _MOBILENETV2 + _V3PLUS_HEAD,
}
# Per DeepLab version: the build options that reproduce VainF's model.
BUILD_OPTIONS: dict[str, dict[str, Any]] = {
    "v3": {
        "output_stride": 16,
        "atrous_rates": (6, 12, 18),
        "head_conv": True,
        "aspp_dropout": 0.1,
    },
    "v3+": {
        "output_stride": 16,
        "atrous_rates": (6, 12, 18),
        "decoder_convs": 1,
        "aspp_dropout": 0.1,
    },
}


def _family(spec: ModelSpec) -> str:
    return "resnet" if spec.backbone.startswith("resnet") else spec.backbone


def rename_rules(spec: ModelSpec) -> RenameRules | None:
    """The renaming of VainF's keys to atrous's for ``spec``; None if it has none."""
    return RENAME_RULES.get((_family(spec), spec.version))


def build_options(spec: ModelSpec) -> dict[str, Any]:
    """The build options of VainF's model of ``spec`` (KeyError if it has none)."""
    opts = dict(BUILD_OPTIONS[spec.version])
    if spec.backbone.startswith("resnet"):
        opts["multi_grid"] = None  # VainF dilates torchvision's way
    if spec.backbone == "mobilenetv2":
        opts["padding"] = "vainf"
    return opts
