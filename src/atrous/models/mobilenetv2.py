"""Atrous MobileNetV2 (Sandler et al. 2018), the mobile backbone of DeepLab v3/v3+.

Module names equal torchvision's ``MobileNetV2.features`` (``features.0``…``features.17``),
which VainF/DeepLabV3Plus-Pytorch also uses. The final 1×1 conv to 1280 channels
(``features.18``) and the classifier are not built: DeepLab heads take the 320-channel
output, as VainF does. Dilation follows VainF: once the output stride is reached, a stage's
first block keeps the previous rate at stride 1 and the following blocks use the new rate.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import FeatureInfo, SequentialBackbone, init_conv_weights, stage_strides
from .layers import ConvNormAct, NormLayer, to_same_conv

# "zeros": symmetric (torchvision); "vainf": VainF's explicit input padding; "same":
# TensorFlow's SAME (slim's MobileNetV2, the TF DeepLab model zoo), asymmetric when strided.
PADDINGS = ("zeros", "vainf", "same")

# expansion t, channels c, repeats n, stride s (MobileNetV2 Table 2)
SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10%."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    """Expand 1×1 → depthwise 3×3 (stride, dilation) → linear 1×1 project, with residual."""

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        dilation: int,
        expand: int,
        norm_layer: NormLayer,
        pad_input: bool = False,
    ) -> None:
        super().__init__()
        hidden = round(inp * expand)
        self.use_residual = stride == 1 and inp == oup
        self.input_padding = dilation if pad_input else 0
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvNormAct(inp, hidden, 1, norm_layer=norm_layer, activation=nn.ReLU6))
        dw = ConvNormAct(hidden, hidden, 3, stride, dilation, hidden, norm_layer, nn.ReLU6)
        if pad_input:
            dw[0].padding = (0, 0)
        layers += [
            dw,
            nn.Conv2d(hidden, oup, 1, bias=False),
            norm_layer(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        p = self.input_padding
        y = self.conv(F.pad(x, (p, p, p, p)) if p else x)
        return x + y if self.use_residual else y


class MobileNetV2(SequentialBackbone):
    """Atrous MobileNetV2; ``forward`` returns features after blocks 1, 3, 6, 13 and 17."""

    def __init__(
        self,
        output_stride: int = 16,
        width_mult: float = 1.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.output_stride = output_stride
        vainf = padding == "vainf"
        first = make_divisible(32 * width_mult)
        stem = ConvNormAct(3, first, 3, 2, norm_layer=norm_layer, activation=nn.ReLU6)
        if vainf:
            stem[0].padding = (0, 0)
        layers: list[nn.Module] = [stem]
        strides, before, after = stage_strides([s for *_, s in SETTINGS], output_stride, start=2)
        stage_end, stride, inp = {}, 2, first
        for i, (t, c, n, _) in enumerate(SETTINGS):
            oup = make_divisible(c * width_mult)
            stride *= strides[i]
            for j in range(n):
                s, d = (strides[i], before[i]) if j == 0 else (1, after[i])
                layers.append(InvertedResidual(inp, oup, s, d, t, norm_layer, vainf))
                inp = oup
            stage_end[len(layers) - 1] = (oup, stride)
        self.features = nn.Sequential(*layers)
        if padding == "same":
            use_same_padding(self.features)
        keep = (1, 3, 6, 13, 17)
        self.feature_info = [FeatureInfo(str(k), *stage_end[k]) for k in keep]
        self.roles = {"out": "17", "low_level": "3", "aux": "13"}

        init_conv_weights(self)


def use_same_padding(module: nn.Module) -> None:
    """Give every strided conv under ``module`` TensorFlow's SAME padding (stride-1 convs
    pad symmetrically under either rule)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1:
            setattr(module, name, to_same_conv(child))
        else:
            use_same_padding(child)
