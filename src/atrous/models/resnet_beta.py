"""ResNet-v1 "beta" (TF DeepLab's ``resnet_v1_beta``): the ResNet of the official model zoo.

It differs from torchvision's ResNet in three ways (``research/deeplab/core/resnet_v1_beta.py``):

* the root is three 3×3 convs (64, 64, 128 channels, the first at stride 2; the deep stem
  mmsegmentation calls ResNet-V1c) and a 3×3 max pool at stride 2 with TF ``SAME`` padding;
* each block's stride sits on its **last** unit (on the 3×3 ``conv2``); a unit whose depth
  does not change has an identity shortcut (subsampled ``[::2]`` when strided), so only the
  first unit of a block projects, at stride 1;
* past the output stride, units run at stride 1 and the rate multiplies by the stride given
  up (slim's ``stack_blocks_dense``); block4's units multiply their rate by ``multi_grid``.

The v3+ decoder's low-level feature is ``block1/unit_2``'s ``conv3`` + BN output, before the
shortcut is added (``feature_extractor.py``'s decoder end point), at stride 4.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .backbone import Backbone, FeatureInfo, init_conv_weights
from .layers import ConvNormAct, NormLayer, SameMaxPool2d
from .resnet import DEPTHS


class BetaBottleneck(nn.Module):
    """slim's ``bottleneck_v1``: 1×1 → 3×3 (stride, rate) → 1×1, then ReLU(shortcut + y)."""

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        dilation: int,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = norm_layer(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_channels != out:  # TF: a projection at the unit's stride
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride, bias=False), norm_layer(out)
            )
        self.stride = stride

    def forward(self, x: Tensor, return_residual: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if self.downsample is not None:
            shortcut = self.downsample(x)
        else:
            shortcut = x[..., :: self.stride, :: self.stride] if self.stride > 1 else x
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        out = self.relu(y + shortcut)
        return (out, y) if return_residual else out


class ResNetBeta(Backbone):
    """ResNet-50/101 beta at output stride 8/16/32; ``forward`` returns ``stem``,
    ``layer1_unit2`` (the decoder tap), ``layer1`` … ``layer4``."""

    def __init__(
        self,
        depth: int = 50,
        output_stride: int = 16,
        multi_grid: Sequence[int] | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if depth not in (50, 101):
            raise ValueError(f"ResNet-beta depth must be 50 or 101, got {depth}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        units = DEPTHS[depth]
        grid = tuple(multi_grid) if multi_grid is not None else (1,) * units[3]
        if len(grid) != units[3]:
            raise ValueError(f"multi_grid needs {units[3]} unit rates, got {grid}")
        self.output_stride = output_stride
        self.stem = nn.Sequential(
            ConvNormAct(3, 64, 3, 2, norm_layer=norm_layer),
            ConvNormAct(64, 64, 3, 1, norm_layer=norm_layer),
            ConvNormAct(64, 128, 3, 1, norm_layer=norm_layer),
        )
        self.maxpool = SameMaxPool2d(3, 2)
        self.feature_info = [FeatureInfo("stem", 128, 4), FeatureInfo("layer1_unit2", 256, 4)]
        self._build_layers(units, grid, norm_layer)
        self.roles = {"out": "layer4", "low_level": "layer1_unit2", "aux": "layer3"}
        init_conv_weights(self)

    def _build_layers(
        self, units: Sequence[int], grid: Sequence[int], norm_layer: NormLayer
    ) -> None:
        """``layer1`` … ``layer4`` by ``stack_blocks_dense``'s rule (see the module doc)."""
        current, rate, inp = 4, 1, 128
        for b, (planes, n) in enumerate(zip((64, 128, 256, 512), units)):
            blocks = []
            for u in range(n):
                stride = 2 if (u == n - 1 and b < 3) else 1
                unit_rate = grid[u] if b == 3 else 1
                if current == self.output_stride:
                    blocks.append(BetaBottleneck(inp, planes, 1, rate * unit_rate, norm_layer))
                    rate *= stride
                else:
                    blocks.append(BetaBottleneck(inp, planes, stride, unit_rate, norm_layer))
                    current *= stride
                inp = planes * 4
            self.add_module(f"layer{b + 1}", nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"layer{b + 1}", inp, current))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.stem(x))
        feats = {"stem": x}
        for i, unit in enumerate(self.layer1):
            if i == 1:
                x, feats["layer1_unit2"] = unit(x, return_residual=True)
            else:
                x = unit(x)
        feats["layer1"] = x
        for name in ("layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            feats[name] = x
        return feats
