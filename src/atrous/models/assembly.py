"""The parts of a DeepLab from resolved build options: one small builder per backbone kind
(:data:`BACKBONE_BUILDERS`, keyed by ``ModelSpec.backbone``) and per head kind
(:data:`HEAD_BUILDERS`, keyed by :data:`~.zoo.HEAD_KINDS`).

Every builder gets the options :func:`~.options.resolve_options` completed, so none of them
has a default or a check of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import nn

from .backbone import Backbone
from .decoder import DeepLabV3PlusHead
from .heads import ASPPSumHead, CascadeHead, DeepLabV3Head, FCNHead, LargeFOVHead
from .layers import NormLayer, make_norm
from .mobilenetv2 import MobileNetV2
from .mobilenetv3 import MobileNetV3Large
from .resnet import ResNet
from .resnet_beta import ResNetBeta
from .vgg import VGG16
from .xception import Xception65

BackboneBuilder = Callable[[int, str, Mapping[str, Any]], Backbone]
HeadBuilder = Callable[[Backbone, int, tuple[int, ...], Mapping[str, Any], NormLayer], nn.Module]


# --------------------------------------------------------------------------- backbones
def _vgg16(output_stride: int, norm: str, opts: Mapping[str, Any]) -> Backbone:
    return VGG16(output_stride)  # DeepLab v1 has no normalization layers


def _backbone_norm(norm: str, opts: Mapping[str, Any], eps: float = 1e-5, **kw: Any) -> NormLayer:
    """The backbone's norm factory, with the ``backbone_eps`` option over its usual ``eps``."""
    return make_norm(norm, eps=opts.get("backbone_eps") or eps, **kw)


def _resnet(depth: int, output_stride: int, norm: str, opts: Mapping[str, Any]) -> Backbone:
    return ResNet(depth, output_stride, opts["multi_grid"], _backbone_norm(norm, opts))


def _resnet_beta(depth: int, output_stride: int, norm: str, opts: Mapping[str, Any]) -> Backbone:
    return ResNetBeta(depth, output_stride, opts["multi_grid"], _backbone_norm(norm, opts))


def _xception65(output_stride: int, norm: str, opts: Mapping[str, Any]) -> Backbone:
    return Xception65(output_stride, opts["multi_grid"], _backbone_norm(norm, opts))


def _mobilenetv2(output_stride: int, norm: str, opts: Mapping[str, Any]) -> Backbone:
    norm_layer = _backbone_norm(norm, opts)
    return MobileNetV2(output_stride, opts["width_mult"], norm_layer, opts["padding"])


def _mobilenetv3_large(output_stride: int, norm: str, opts: Mapping[str, Any]) -> Backbone:
    # torchvision's MobileNetV3 BatchNorm: eps 0.001, momentum 0.01.
    batch_stats = {"momentum": 0.01} if norm in ("bn", "syncbn") else {}
    return MobileNetV3Large(output_stride, _backbone_norm(norm, opts, 0.001, **batch_stats))


BACKBONE_BUILDERS: dict[str, BackboneBuilder] = {
    "vgg16": _vgg16,
    "resnet50": partial(_resnet, 50),
    "resnet101": partial(_resnet, 101),
    "resnet50_beta": partial(_resnet_beta, 50),
    "resnet101_beta": partial(_resnet_beta, 101),
    "xception65": _xception65,
    "mobilenetv2": _mobilenetv2,
    "mobilenetv3_large": _mobilenetv3_large,
}


def make_backbone(kind: str, output_stride: int, norm: str, opts: Mapping[str, Any]) -> Backbone:
    """The backbone ``kind`` (a ``ModelSpec.backbone``) at ``output_stride``."""
    return BACKBONE_BUILDERS[kind](output_stride, norm, opts)


# --------------------------------------------------------------------------- heads
def _largefov(
    backbone: Backbone,
    num_classes: int,
    rates: tuple[int, ...],
    opts: Mapping[str, Any],
    norm_layer: NormLayer,
) -> nn.Module:
    if len(rates) != 1:
        raise ValueError(f"LargeFOV has one rate (fc6), got {rates}")
    return LargeFOVHead(backbone.info("out").channels, num_classes, rate=rates[0])


def _aspp_sum(
    backbone: Backbone,
    num_classes: int,
    rates: tuple[int, ...],
    opts: Mapping[str, Any],
    norm_layer: NormLayer,
) -> nn.Module:
    return ASPPSumHead(backbone.info("out").channels, num_classes, atrous_rates=rates)


def _aspp(
    backbone: Backbone,
    num_classes: int,
    rates: tuple[int, ...],
    opts: Mapping[str, Any],
    norm_layer: NormLayer,
) -> nn.Module:
    return DeepLabV3Head(
        backbone.info("out").channels,
        num_classes,
        atrous_rates=rates,
        image_pooling=opts["image_pooling"],
        separable=opts["separable"],
        aspp_dropout=opts["aspp_dropout"],
        head_conv=opts["head_conv"],
        norm_layer=norm_layer,
    )


def _cascade(
    backbone: Backbone,
    num_classes: int,
    rates: tuple[int, ...],
    opts: Mapping[str, Any],
    norm_layer: NormLayer,
) -> nn.Module:
    return CascadeHead(
        backbone.info("out").channels,
        num_classes,
        block_rate=32 // backbone.output_stride,  # block4's rate
        multi_grid=opts.get("multi_grid") or (1, 1, 1),
        cascade_blocks=opts["cascade_blocks"],
        norm_layer=norm_layer,
    )


def _decoder(
    backbone: Backbone,
    num_classes: int,
    rates: tuple[int, ...],
    opts: Mapping[str, Any],
    norm_layer: NormLayer,
) -> nn.Module:
    return DeepLabV3PlusHead(
        backbone.info("out").channels,
        backbone.info("low_level").channels,
        num_classes,
        atrous_rates=rates,
        image_pooling=opts["image_pooling"],
        separable=opts["separable"],
        aspp_dropout=opts["aspp_dropout"],
        low_level_channels=opts["low_level_channels"],
        decoder_convs=opts["decoder_convs"],
        norm_layer=norm_layer,
        align_corners=opts["align_corners"],
    )


HEAD_BUILDERS: dict[str, HeadBuilder] = {
    "largefov": _largefov,
    "aspp_sum": _aspp_sum,
    "aspp": _aspp,
    "cascade": _cascade,
    "decoder": _decoder,
}


def head_norm_layer(norm: str) -> NormLayer:
    """The heads' norm factory; BatchNorm where the model has none (v1's LargeFOV uses no
    norm layer, but its aux head would)."""
    return make_norm(norm) if norm != "none" else nn.BatchNorm2d


def make_head(
    kind: str,
    backbone: Backbone,
    num_classes: int,
    rates: tuple[int, ...],
    opts: Mapping[str, Any],
) -> nn.Module:
    """The head ``kind`` (one of :data:`~.zoo.HEAD_KINDS`) on ``backbone``'s features."""
    return HEAD_BUILDERS[kind](backbone, num_classes, rates, opts, head_norm_layer(opts["norm"]))


def make_aux_head(backbone: Backbone, num_classes: int, opts: Mapping[str, Any]) -> nn.Module:
    """torchvision's auxiliary FCN head on the backbone's ``aux`` stage."""
    return FCNHead(
        backbone.info("aux").channels, num_classes, norm_layer=head_norm_layer(opts["norm"])
    )
