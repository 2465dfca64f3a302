"""torchvision's DeepLab v3 checkpoints (``deeplabv3_resnet50/101``,
``deeplabv3_mobilenet_v3_large``): their names and the configuration they were built with
(REFERENCES.md).

torchvision's ``DeepLabHead`` is ``classifier.0`` (ASPP), ``.1``/``.2`` (3×3 conv + BN, the
``head_conv``), ``.4`` (classifier); its MobileNetV3 backbone drops ``features.``.
"""

from __future__ import annotations

from typing import Any

from atrous.models import ModelSpec

RenameRules = tuple[tuple[str, str], ...]

_HEAD: RenameRules = (
    (r"^classifier\.0\.", "head.aspp."),
    (r"^classifier\.1\.", "head.conv.0."),
    (r"^classifier\.2\.", "head.conv.1."),
    (r"^classifier\.4\.", "head.classifier."),
)
# Per backbone family: regex → replacement, the first match renames a key.
RENAME_RULES: dict[str, RenameRules] = {
    "resnet": _HEAD,
    "mobilenetv3_large": ((r"^backbone\.(\d+)\.", r"backbone.features.\1."), *_HEAD),
}
# Per backbone family: the build options that reproduce torchvision's model.
BUILD_OPTIONS: dict[str, dict[str, Any]] = {
    "resnet": {
        "output_stride": 8,
        "atrous_rates": (12, 24, 36),
        "head_conv": True,
        "multi_grid": None,
        "aspp_dropout": 0.5,
    },
    "mobilenetv3_large": {
        "output_stride": 16,
        "atrous_rates": (12, 24, 36),
        "head_conv": True,
        "aspp_dropout": 0.5,
    },
}


def _family(spec: ModelSpec) -> str:
    return "resnet" if spec.backbone.startswith("resnet") else spec.backbone


def rename_rules(spec: ModelSpec) -> RenameRules | None:
    """The renaming of torchvision's keys to atrous's for ``spec``; None if it has none."""
    return RENAME_RULES.get(_family(spec))


def build_options(spec: ModelSpec) -> dict[str, Any]:
    """The build options of torchvision's model of ``spec`` (KeyError if it has none)."""
    return dict(BUILD_OPTIONS[_family(spec)])
