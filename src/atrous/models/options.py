"""Build options: which ones each row takes, their defaults, and their checks.

:func:`resolve_options` turns the keyword options of :func:`~.builder.build` into the
complete, checked option dict that is recorded in ``DeepLab.config`` (and so in every saved
weights file). :func:`resolve_head_kind` and :func:`resolve_rates` derive from it the head to
build and its atrous rates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .layers import NORM_KINDS
from .zoo import ASPP_S_RATES, ModelSpec, scale_rates

# Options every row takes. ``align_corners`` is the corner rule of the bilinear resizes of
# the logits and the decoder's input (True in TensorFlow DeepLab); ``backbone_eps`` the
# backbone's BatchNorm epsilon (None: the backbone's usual one, 1e-5, MobileNetV3 1e-3; the
# TF model zoo's Xception and MobileNetV2 use 1e-3).
COMMON_OPTIONS: dict[str, Any] = {"norm": None, "align_corners": False, "backbone_eps": None}
# Options per ModelSpec.head, with the default used when the caller does not set one.
HEAD_OPTIONS: dict[str, dict[str, Any]] = {
    "largefov": {},
    "aspp_sum": {"aspp": "L"},
    "aspp": {
        "image_pooling": True,
        "separable": None,
        "head_conv": False,
        "aspp_dropout": 0.1,
        "head": "aspp",
        "cascade_blocks": 3,
    },
    "decoder": {
        "image_pooling": True,
        "separable": None,
        "aspp_dropout": 0.1,
        "decoder_convs": 2,
        "low_level_channels": 48,
    },
}
# Options per ModelSpec.backbone.
BACKBONE_OPTIONS: dict[str, dict[str, Any]] = {
    "resnet50": {"multi_grid": None},
    "resnet101": {"multi_grid": None},
    "xception65": {"multi_grid": None},
    "resnet50_beta": {"multi_grid": None},
    "resnet101_beta": {"multi_grid": None},
    "mobilenetv2": {"width_mult": 1.0, "padding": "zeros"},
    "mobilenetv3_large": {},
    "vgg16": {},
}


def allowed_options(spec: ModelSpec) -> dict[str, Any]:
    """The options ``spec``'s row takes, each with its default."""
    return {**COMMON_OPTIONS, **HEAD_OPTIONS[spec.head], **BACKBONE_OPTIONS[spec.backbone]}


def resolve_output_stride(spec: ModelSpec, output_stride: int | None) -> int:
    """The output stride to build: the row's (as in its paper) unless given; 8, 16 or 32."""
    os_ = spec.output_stride if output_stride is None else int(output_stride)
    if os_ not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    return os_


def resolve_options(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against the row and completed with its defaults.

    Defaults that depend on the row are filled in: ``multi_grid`` (the paper's unit rates),
    ``separable`` (Xception-65's ASPP and decoder, v3+ §3.2) and ``norm``.
    """
    if "pretrained_backbone" in options:
        raise TypeError(
            "atrous.models.build does not read files; load an ImageNet backbone checkpoint "
            "with atrous.weights.build_pretrained(name, pretrained_backbone=PATH, ...)"
        )
    allowed = allowed_options(spec)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{spec.name} does not take option(s) {unknown}; it takes: {sorted(allowed)}"
        )
    opts = {**allowed, **options}
    if spec.multi_grid is not None and "multi_grid" in allowed and "multi_grid" not in options:
        opts["multi_grid"] = spec.multi_grid
    if opts.get("multi_grid") is not None:
        opts["multi_grid"] = tuple(int(r) for r in opts["multi_grid"])
    if "separable" in opts and opts["separable"] is None:
        opts["separable"] = spec.separable
    if "aspp" in opts and str(opts["aspp"]).upper() not in ("L", "S"):
        raise ValueError(f"aspp must be 'L' or 'S', got {opts['aspp']!r}")
    opts["norm"] = _resolve_norm(spec, opts["norm"])
    opts["align_corners"] = bool(opts["align_corners"])
    if opts["backbone_eps"] is not None:
        opts["backbone_eps"] = float(opts["backbone_eps"])
        if not 0 < opts["backbone_eps"] < 1:
            raise ValueError(f"backbone_eps must be in (0, 1), got {opts['backbone_eps']}")
    return opts


def _resolve_norm(spec: ModelSpec, norm: str | None) -> str:
    norm = norm or spec.norm
    if spec.norm == "none" and norm != "none":
        raise ValueError(f"{spec.name} has no normalization layers (DeepLab v1 §3); drop norm=")
    if norm != "none" and norm not in NORM_KINDS:
        raise ValueError(f"norm must be one of {NORM_KINDS}, got {norm!r}")
    return norm


def resolve_head_kind(spec: ModelSpec, opts: Mapping[str, Any]) -> str:
    """The head to build (a key of :data:`~.zoo.HEAD_KINDS`): the row's, except that a v3
    row takes ``head="cascade"`` (v3 §3.2) instead of its ASPP (§3.3)."""
    if spec.head != "aspp":
        return spec.head
    kind = opts.get("head", spec.head)
    if kind not in ("aspp", "cascade"):
        raise ValueError(f"head must be 'aspp' or 'cascade', got {kind!r}")
    return kind


def resolve_rates(
    spec: ModelSpec,
    head_kind: str,
    output_stride: int,
    atrous_rates: Sequence[int] | None,
    opts: Mapping[str, Any],
) -> tuple[int, ...]:
    """The head's atrous rates: ``atrous_rates`` if given, else the row's (or v2's ASPP-S
    with ``aspp="S"``) scaled to ``output_stride``. The cascade head has none of its own
    (its rates follow from the output stride and multi-grid)."""
    if head_kind == "cascade":
        return ()
    if atrous_rates is not None:
        rates = tuple(int(r) for r in atrous_rates)
    elif spec.head == "aspp_sum" and str(opts["aspp"]).upper() == "S":
        rates = scale_rates(ASPP_S_RATES, 8, output_stride)
    else:
        rates = scale_rates(spec.rates, spec.rates_os, output_stride)
    if any(r < 1 for r in rates):
        raise ValueError(f"atrous rates must be >= 1, got {rates}")
    return rates
