"""Atrous MobileNetV3-Large (Howard et al. 2019), torchvision's mobile DeepLab v3 backbone.

Module names equal torchvision's ``MobileNetV3.features`` (``features.0``…``features.16``),
so its ImageNet checkpoint loads; BatchNorm uses eps 0.001 and momentum 0.01 as there.
As in torchvision, a block whose stride is replaced by dilation takes the new rate itself.
``forward`` returns, torchvision's way, the output of the first block of each new stride
(index 4 feeds the aux head) plus the low-level and final features.
"""

from __future__ import annotations

from torch import Tensor, nn

from .backbone import FeatureInfo, SequentialBackbone, init_conv_weights, stage_strides
from .layers import ConvNormAct, NormLayer, make_norm
from .mobilenetv2 import make_divisible

# in, kernel, expanded, out, squeeze-excite, activation, stride (MobileNetV3 Table 1)
LARGE = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)


class SqueezeExcitation(nn.Module):
    """Channel attention: pool → fc1 → ReLU → fc2 → hard-sigmoid → scale (torchvision names)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.hsigmoid = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.hsigmoid(self.fc2(self.relu(self.fc1(s))))


class InvertedResidualV3(nn.Module):
    """MobileNetV3 bottleneck: expand → depthwise (stride or dilation) → [SE] → project."""

    def __init__(
        self,
        inp: int,
        kernel: int,
        expanded: int,
        out: int,
        se: bool,
        act: str,
        stride: int,
        dilation: int,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        self.use_residual = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expanded != inp:
            layers.append(
                ConvNormAct(inp, expanded, 1, norm_layer=norm_layer, activation=activation)
            )
        layers.append(
            ConvNormAct(
                expanded, expanded, kernel, stride, dilation, expanded, norm_layer, activation
            )
        )
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8)))
        layers.append(ConvNormAct(expanded, out, 1, norm_layer=norm_layer, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3Large(SequentialBackbone):
    """Atrous MobileNetV3-Large; default norm is BatchNorm(eps=1e-3, momentum=0.01)."""

    def __init__(self, output_stride: int = 16, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        norm_layer = norm_layer or make_norm("bn", eps=0.001, momentum=0.01)
        self.output_stride = output_stride
        layers: list[nn.Module] = [
            ConvNormAct(3, 16, 3, 2, norm_layer=norm_layer, activation=nn.Hardswish)
        ]
        strides, _, after = stage_strides([c[-1] for c in LARGE], output_stride, start=2)
        infos, stride = [], 2
        for i, (inp, k, exp, out, se, act, _) in enumerate(LARGE):
            stride *= strides[i]
            # torchvision: a dilated block drops its stride and takes the new rate itself.
            layers.append(
                InvertedResidualV3(inp, k, exp, out, se, act, strides[i], after[i], norm_layer)
            )
            infos.append(FeatureInfo(str(i + 1), out, stride))
        layers.append(ConvNormAct(160, 960, 1, norm_layer=norm_layer, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        keep = {"3", "4", "16"}
        infos.append(FeatureInfo("16", 960, stride))
        self.feature_info = [f for f in infos if f.name in keep]
        self.roles = {"out": "16", "low_level": "3", "aux": "4"}

        init_conv_weights(self)
