"""Segmentation heads: each maps the backbone's feature dict to class scores at the
feature resolution.

* :class:`LargeFOVHead` — DeepLab v1 §4.1 "DeepLab-LargeFOV": fc6 as a 3×3 conv at rate 12
  with 1024 channels, fc7 1×1 1024, dropout 0.5 after each, fc8 1×1 to classes.
* :class:`ASPPSumHead` — DeepLab v2 §3.3 (see :class:`~.aspp.ASPPSum`).
* :class:`DeepLabV3Head` — DeepLab v3 §3.3: ASPP → 1×1 conv to classes.
  ``head_conv=True`` adds torchvision's and VainF's extra 3×3 conv 256 + BN + ReLU.
* :class:`CascadeHead` — DeepLab v3 §3.2, Fig. 3b: block5–block7, copies of block4 at
  doubling rates with multi-grid, → 1×1 conv to classes.
* :class:`FCNHead` — the auxiliary head of torchvision (3×3 conv to in/4, BN, ReLU,
  dropout 0.1, 1×1 conv), on the stage before the last.

The v3+ decoder head is in :mod:`.decoder`. Channel counts the backbone dictates come first
and positionally; every other argument is keyword-only and named as the build option of
:func:`atrous.models.build` that sets it (``atrous_rates``, ``aspp_dropout``, ``head_conv``,
``multi_grid``, ``cascade_blocks``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .aspp import ASPP, ASPPSum
from .layers import ConvNormAct, NormLayer
from .multigrid import multi_grid_rates
from .resnet import Bottleneck, make_stage

ASPP_L_RATES = (6, 12, 18, 24)  # DeepLab v2 §3.3 ASPP-L at output stride 8


class LargeFOVHead(nn.Module):
    """fc6 (3×3, rate, 1024) → ReLU → dropout → fc7 (1×1, 1024) → ReLU → dropout → fc8."""

    def __init__(
        self, in_channels: int, num_classes: int, *, rate: int = 12, channels: int = 1024
    ) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(in_channels, channels, 3, padding=rate, dilation=rate)
        self.fc7 = nn.Conv2d(channels, channels, 1)
        self.fc8 = nn.Conv2d(channels, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(0.5)
        nn.init.normal_(self.fc8.weight, std=0.01)  # DeepLab v1's fc8 initialization
        nn.init.zeros_(self.fc8.bias)
        self.rate = rate

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = self.dropout(self.relu(self.fc6(features["out"])))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.fc8(x)


class ASPPSumHead(nn.Module):
    """DeepLab v2: summed per-rate class scores of :class:`~.aspp.ASPPSum`."""

    def __init__(
        self, in_channels: int, num_classes: int, *, atrous_rates: Sequence[int] = ASPP_L_RATES
    ) -> None:
        super().__init__()
        self.aspp = ASPPSum(in_channels, num_classes, atrous_rates)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.aspp(features["out"])


class DeepLabV3Head(nn.Module):
    """ASPP (with image pooling) → [3×3 conv 256 + BN + ReLU] → 1×1 conv to classes."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        atrous_rates: Sequence[int] = (6, 12, 18),
        image_pooling: bool = True,
        separable: bool = False,
        aspp_dropout: float = 0.1,
        head_conv: bool = False,
        channels: int = 256,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(
            in_channels,
            atrous_rates,
            channels,
            image_pooling=image_pooling,
            separable=separable,
            dropout=aspp_dropout,
            norm_layer=norm_layer,
        )
        self.conv = ConvNormAct(channels, channels, 3, norm_layer=norm_layer) if head_conv else None
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = self.aspp(features["out"])
        if self.conv is not None:
            x = self.conv(x)
        return self.classifier(x)


class CascadeHead(nn.Module):
    """block5…block(4+n): bottleneck stages of block4's shape at doubling rates → classes.

    ``block_rate`` is block4's rate (``32 // output_stride``); block5 gets twice that, and
    each unit of a block multiplies its block's rate by the ``multi_grid`` unit rates.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        block_rate: int,
        multi_grid: Sequence[int] = (1, 2, 4),
        cascade_blocks: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        planes = in_channels // Bottleneck.expansion
        blocks, rate = [], block_rate
        for _ in range(cascade_blocks):
            rate *= 2
            blocks.append(
                make_stage(in_channels, planes, 1, multi_grid_rates(rate, multi_grid), norm_layer)
            )
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)
        self.rates = tuple(tuple(b[i].dilation for i in range(len(b))) for b in blocks)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.classifier(self.blocks(features["out"]))


class FCNHead(nn.Sequential):
    """torchvision's auxiliary FCN head; names ``0``, ``1``, ``4`` match its checkpoints."""

    def __init__(
        self, in_channels: int, num_classes: int, *, norm_layer: NormLayer = nn.BatchNorm2d
    ) -> None:
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            norm_layer(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )

    def forward(self, features: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        return super().forward(features["aux"])
