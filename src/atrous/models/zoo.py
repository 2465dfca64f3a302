"""The model zoo: one table of configurations, read like the papers' tables.

Each row names a backbone, a head, the output stride and the atrous rates (given at the
output stride ``rates_os`` and scaled with the actual one: (6, 12, 18) at 16 becomes
(12, 24, 36) at 8 and (3, 6, 9) at 32). :func:`build` turns a row plus options into a
:class:`~.deeplab.DeepLab`; every builder function is :func:`build` with its row's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .backbone import Backbone
from .decoder import DeepLabV3PlusHead
from .deeplab import DeepLab
from .heads import ASPPSumHead, DeepLabV3Head, FCNHead, LargeFOVHead
from .layers import NORM_KINDS, make_norm
from .mobilenetv2 import MobileNetV2
from .mobilenetv3 import MobileNetV3Large
from .multigrid import CascadeHead
from .resnet import ResNet
from .vgg import VGG16
from .xception import Xception65


@dataclass(frozen=True)
class ModelSpec:
    """One configuration of the family (see DEEPLAB.md for each paper's definition)."""

    name: str
    version: str
    backbone: str
    head: str  # "largefov" | "aspp_sum" | "aspp" | "cascade" | "decoder"
    output_stride: int
    rates: tuple[int, ...]
    rates_os: int
    multi_grid: tuple[int, ...] | None = None
    separable: bool = False
    norm: str = "bn"
    paper: str = ""


_V3 = "DeepLab v3 (Chen et al. 2017, arXiv:1706.05587)"
_V3P = "DeepLab v3+ (Chen et al., ECCV 2018)"

MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("deeplabv1_vgg16", "v1", "vgg16", "largefov", 8, (12,), 8, norm="none",
                  paper="DeepLab v1 LargeFOV (Chen et al., ICLR 2015), 70.3% VOC12 test with CRF"),
        ModelSpec("deeplabv2_resnet101", "v2", "resnet101", "aspp_sum", 8, (6, 12, 18, 24), 8,
                  multi_grid=(1, 1, 1), norm="frozen_bn",
                  paper="DeepLab v2 ASPP-L (Chen et al., TPAMI 2017), 79.7% VOC12 test with CRF"),
        ModelSpec("deeplabv3_resnet50", "v3", "resnet50", "aspp", 16, (6, 12, 18), 16,
                  multi_grid=(1, 2, 4), paper=_V3),
        ModelSpec("deeplabv3_resnet101", "v3", "resnet101", "aspp", 16, (6, 12, 18), 16,
                  multi_grid=(1, 2, 4), paper=_V3 + ", 77.21% VOC12 val (OS 16, single scale)"),
        ModelSpec("deeplabv3_mobilenetv2", "v3", "mobilenetv2", "aspp", 16, (6, 12, 18), 16,
                  paper=_V3),
        ModelSpec("deeplabv3_mobilenetv3_large", "v3", "mobilenetv3_large", "aspp", 16,
                  (6, 12, 18), 16, paper=_V3),
        ModelSpec("deeplabv3plus_resnet50", "v3+", "resnet50", "decoder", 16, (6, 12, 18), 16,
                  paper=_V3P),
        ModelSpec("deeplabv3plus_resnet101", "v3+", "resnet101", "decoder", 16, (6, 12, 18), 16,
                  paper=_V3P),
        ModelSpec("deeplabv3plus_mobilenetv2", "v3+", "mobilenetv2", "decoder", 16,
                  (6, 12, 18), 16, paper=_V3P),
        ModelSpec("deeplabv3plus_mobilenetv3_large", "v3+", "mobilenetv3_large", "decoder", 16,
                  (6, 12, 18), 16, paper=_V3P),
        ModelSpec("deeplabv3plus_xception65", "v3+", "xception65", "decoder", 16, (6, 12, 18),
                  16, separable=True, paper=_V3P + ", 89.0% VOC12 test (JFT pre-training)"),
    )
}  # fmt: skip

# Names used by torchvision and VainF/DeepLabV3Plus-Pytorch, accepted as aliases.
ALIASES: dict[str, str] = {
    "deeplabv3_mobilenet_v3_large": "deeplabv3_mobilenetv3_large",
    "deeplabv3_mobilenet": "deeplabv3_mobilenetv2",
    "deeplabv3plus_mobilenet": "deeplabv3plus_mobilenetv2",
    "deeplabv3plus_xception": "deeplabv3plus_xception65",
    "deeplabv2_resnet101_aspp_l": "deeplabv2_resnet101",
}

# Build options each head accepts, with the default when the row does not set one.
_COMMON = {"norm": None, "pretrained_backbone": None}
_OPTIONS: dict[str, dict[str, Any]] = {
    "largefov": {},
    "aspp_sum": {"aspp": "L"},
    "aspp": {"image_pooling": True, "separable": None, "head_conv": False, "aspp_dropout": 0.1,
             "head": "aspp", "cascade_blocks": 3},
    "decoder": {"image_pooling": True, "separable": None, "aspp_dropout": 0.1,
                "decoder_convs": 2, "low_level_channels": 48},
}  # fmt: skip
_BACKBONE_OPTIONS = {
    "resnet50": {"multi_grid": None},
    "resnet101": {"multi_grid": None},
    "xception65": {"multi_grid": None},
    "mobilenetv2": {"width_mult": 1.0, "padding": "zeros"},
    "mobilenetv3_large": {},
    "vgg16": {},
}
ASPP_S_RATES = (2, 4, 8, 12)  # DeepLab v2 ASPP-S at output stride 8


def resolve_name(name: str) -> str:
    """The canonical atrous name for ``name`` (an atrous name or a reference alias)."""
    key = name.lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return key


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` row of ``name`` (aliases accepted)."""
    return MODELS[resolve_name(name)]


def list_models() -> list[str]:
    """The canonical model names, in table order."""
    return list(MODELS)


def scale_rates(rates: Sequence[int], rates_os: int, output_stride: int) -> tuple[int, ...]:
    """Atrous rates given at ``rates_os`` for ``output_stride`` (rates ∝ 1 / stride)."""
    return tuple(max(1, r * rates_os // output_stride) for r in rates)


def _make_backbone(kind: str, output_stride: int, norm: str, opts: dict[str, Any]) -> Backbone:
    if kind == "vgg16":
        return VGG16(output_stride)
    if kind == "mobilenetv3_large":
        eps_momentum = (
            {"eps": 0.001, "momentum": 0.01} if norm in ("bn", "syncbn") else {"eps": 0.001}
        )
        return MobileNetV3Large(output_stride, make_norm(norm, **eps_momentum))
    norm_layer = make_norm(norm)
    if kind.startswith("resnet"):
        return ResNet(int(kind[6:]), output_stride, opts["multi_grid"], norm_layer)
    if kind == "mobilenetv2":
        return MobileNetV2(output_stride, opts["width_mult"], norm_layer, opts["padding"])
    if kind == "xception65":
        return Xception65(output_stride, opts["multi_grid"], norm_layer)
    raise AssertionError(kind)  # pragma: no cover - the table only names these


def build(
    name: str,
    num_classes: int = 21,
    output_stride: int | None = None,
    aux: bool = False,
    atrous_rates: Sequence[int] | None = None,
    **options: Any,
) -> DeepLab:
    """Build a DeepLab model by name (see :func:`list_models`).

    Args:
        name: an atrous model name, or a torchvision/VainF alias.
        num_classes: number of output classes.
        output_stride: 8, 16 or 32 (default: the row's, as in its paper).
        aux: add torchvision's auxiliary FCN head on the stage before the last.
        atrous_rates: rates of the ASPP/LargeFOV head; default the row's, scaled to OS.
        **options: per-head/backbone options: ``norm`` (bn, syncbn, gn, frozen_bn),
            ``multi_grid`` (ResNet/Xception), ``image_pooling``, ``separable``,
            ``head`` ("aspp" or v3's "cascade"), ``head_conv`` (torchvision/VainF extra 3×3),
            ``aspp_dropout``, ``decoder_convs`` (2 in the paper, 1 in VainF),
            ``low_level_channels``, ``aspp`` ("L"/"S", v2), ``cascade_blocks``,
            ``width_mult`` and ``padding`` ("zeros" or VainF's "vainf") of MobileNetV2,
            ``pretrained_backbone`` (a local ImageNet
            checkpoint in torchvision's naming).

    Returns:
        a :class:`~.deeplab.DeepLab` whose ``config`` rebuilds it.
    """
    spec = get_spec(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    os_ = spec.output_stride if output_stride is None else int(output_stride)
    if os_ not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")

    allowed = {**_COMMON, **_OPTIONS[spec.head], **_BACKBONE_OPTIONS[spec.backbone]}
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
    norm = opts["norm"] or spec.norm
    if spec.norm == "none" and norm != "none":
        raise ValueError(f"{spec.name} has no normalization layers (DeepLab v1 §3); drop norm=")
    if norm != "none" and norm not in NORM_KINDS:
        raise ValueError(f"norm must be one of {NORM_KINDS}, got {norm!r}")
    opts["norm"] = norm

    backbone = _make_backbone(spec.backbone, os_, norm, opts)
    if opts["pretrained_backbone"]:
        from atrous.weights import load_backbone_weights

        load_backbone_weights(backbone, opts["pretrained_backbone"])
    out_c = backbone.info("out").channels
    norm_layer = make_norm(norm) if norm != "none" else nn.BatchNorm2d

    head_kind = opts.get("head", spec.head) if spec.head == "aspp" else spec.head
    if head_kind not in ("aspp", "cascade") and spec.head == "aspp":
        raise ValueError(f"head must be 'aspp' or 'cascade', got {head_kind!r}")
    if atrous_rates is not None:
        rates = tuple(int(r) for r in atrous_rates)
    elif spec.head == "aspp_sum" and opts.get("aspp", "L").upper() == "S":
        rates = scale_rates(ASPP_S_RATES, 8, os_)
    else:
        rates = scale_rates(spec.rates, spec.rates_os, os_)
    if spec.head == "aspp_sum" and opts["aspp"].upper() not in ("L", "S"):
        raise ValueError(f"aspp must be 'L' or 'S', got {opts['aspp']!r}")
    if any(r < 1 for r in rates):
        raise ValueError(f"atrous rates must be >= 1, got {rates}")

    head: nn.Module
    if head_kind == "largefov":
        if len(rates) != 1:
            raise ValueError(f"LargeFOV has one rate (fc6), got {rates}")
        head = LargeFOVHead(out_c, num_classes, rates[0])
    elif head_kind == "aspp_sum":
        head = ASPPSumHead(out_c, num_classes, rates)
    elif head_kind == "cascade":
        rates = ()
        head = CascadeHead(
            out_c, num_classes, 32 // os_, opts.get("multi_grid") or (1, 1, 1),
            opts["cascade_blocks"], norm_layer,
        )  # fmt: skip
    elif head_kind == "aspp":
        head = DeepLabV3Head(
            out_c, num_classes, rates, opts["image_pooling"], opts["separable"],
            opts["aspp_dropout"], opts["head_conv"], norm_layer=norm_layer,
        )  # fmt: skip
    else:
        head = DeepLabV3PlusHead(
            out_c, backbone.info("low_level").channels, num_classes, rates,
            opts["image_pooling"], opts["separable"], opts["aspp_dropout"],
            opts["low_level_channels"], opts["decoder_convs"], norm_layer=norm_layer,
        )  # fmt: skip

    aux_head = None
    if aux:
        aux_head = FCNHead(backbone.info("aux").channels, num_classes, norm_layer)
    opts.pop("pretrained_backbone")
    config = {
        "arch": spec.name,
        "num_classes": num_classes,
        "output_stride": os_,
        "atrous_rates": list(rates),
        "aux": bool(aux),
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(opts.items())},
    }
    return DeepLab(backbone, head, aux_head, config)


def _builder(name: str) -> Callable[..., DeepLab]:
    spec = MODELS[name]

    def builder(num_classes: int = 21, **kwargs: Any) -> DeepLab:
        return build(name, num_classes, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (
        f"{spec.paper}: {spec.backbone} backbone, {spec.head} head, output stride "
        f"{spec.output_stride}, rates {spec.rates} at OS {spec.rates_os}.\n\n"
        "Keyword arguments are those of :func:`atrous.models.build`."
    )
    return builder


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
