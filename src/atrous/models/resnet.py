"""Atrous ResNet-50/101/152 (He et al. 2016) for DeepLab v2/v3/v3+.

State-dict names equal torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1``…``layer4``,
and ``fc`` when built with ``num_classes``), so torchvision's ImageNet checkpoints load with
``load_state_dict``. The stride sits on the 3×3 conv (ResNet v1.5), as in torchvision.

Two dilation schemes for an output stride below 32 (DeepLab v3 sec. 3.1 defines the output
stride):

* ``multi_grid=None`` — torchvision/VainF: a dilated stage's first block keeps the previous
  rate, the following blocks use the stage's rate. Needed for their checkpoints.
* ``multi_grid=(r1, r2, r3)`` — the papers (DeepLab v2 §3.1, v3 §3.2 "Multi-grid"): every
  block of a dilated stage uses the stage's rate, and block4's three units multiply it by
  the unit rates, e.g. (1, 2, 4) at rate 2 gives (2, 4, 8).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .backbone import Backbone, FeatureInfo, stage_strides
from .layers import NormLayer
from .multigrid import multi_grid_rates

DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride, dilation) → 1×1 residual unit, expansion 4 (torchvision names)."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = norm_layer(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


def make_stage(
    in_channels: int,
    planes: int,
    stride: int,
    dilations: Sequence[int],
    norm_layer: NormLayer,
) -> nn.Sequential:
    """A stage of ``len(dilations)`` bottlenecks; the first one strides and projects."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out, 1, stride, bias=False), norm_layer(out)
        )
    blocks = [Bottleneck(in_channels, planes, stride, dilations[0], downsample, norm_layer)]
    blocks += [Bottleneck(out, planes, 1, d, None, norm_layer) for d in dilations[1:]]
    return nn.Sequential(*blocks)


class ResNet(Backbone):
    """Atrous ResNet. ``forward`` returns ``{"stem", "layer1", …, "layer4"}`` features.

    Args:
        depth: 50, 101 or 152.
        output_stride: 8, 16 or 32 (stride of ``layer4``'s output).
        multi_grid: unit rates of layer4 (paper scheme), or None for torchvision's scheme.
        norm_layer: factory for the normalization layers.
        num_classes: if given, also build the ImageNet classifier (``avgpool``, ``fc``), so
            that torchvision's ImageNet checkpoints load with a strict ``load_state_dict``;
            ``forward`` still returns the feature dict.
    """

    def __init__(
        self,
        depth: int = 101,
        output_stride: int = 16,
        multi_grid: Sequence[int] | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        layers = DEPTHS[depth]
        if multi_grid is not None and len(multi_grid) != layers[3]:
            raise ValueError(
                f"multi_grid needs {layers[3]} unit rates (one per block of layer4), "
                f"got {tuple(multi_grid)}"
            )
        self.depth = depth
        self.output_stride = output_stride
        self.multi_grid = tuple(multi_grid) if multi_grid is not None else None

        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        strides, before, after = stage_strides([1, 2, 2, 2], output_stride, start=4)
        channels, running = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            if self.multi_grid is None:
                dil = [before[i]] + [after[i]] * (n - 1)
            else:
                dil = list(multi_grid_rates(after[i], self.multi_grid if i == 3 else (1,) * n))
            self.add_module(
                f"layer{i + 1}", make_stage(running, planes, strides[i], dil, norm_layer)
            )
            running = planes * Bottleneck.expansion
            channels.append(running)

        stride, infos = 4, [FeatureInfo("stem", 64, 4)]
        for i, c in enumerate(channels):
            stride *= strides[i]
            infos.append(FeatureInfo(f"layer{i + 1}", c, stride))
        self.feature_info = infos
        self.roles = {"out": "layer4", "low_level": "layer1", "aux": "layer3"}

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(running, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = {"stem": x}
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats[f"layer{i}"] = x
        return feats
