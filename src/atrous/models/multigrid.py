"""Multi-grid unit rates and the cascaded atrous blocks of DeepLab v3 §3.2.

Multi-grid: the units of block4 (and of the cascade's copies) get rates
``unit_rates × block rate``, e.g. (1, 2, 4) × 2 = (2, 4, 8) at output stride 16. The
backbones apply it to their last stage (``multi_grid=`` of :class:`~.resnet.ResNet` and
:class:`~.xception.Xception65`); :class:`CascadeHead` applies it to block5–block7, the
copies of block4 whose strides are replaced by doubling rates (Fig. 3b: rates 4, 8, 16
after block4's 2 at output stride 16), followed by a 1×1 conv to class scores.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .layers import NormLayer
from .resnet import Bottleneck, make_stage


def multi_grid_rates(block_rate: int, unit_rates: Sequence[int]) -> tuple[int, ...]:
    """The dilation of each unit of a block: ``block_rate × unit rate`` (v3 §3.2)."""
    if any(r < 1 for r in unit_rates):
        raise ValueError(f"multi-grid unit rates must be >= 1, got {tuple(unit_rates)}")
    return tuple(block_rate * r for r in unit_rates)


class CascadeHead(nn.Module):
    """block5…block(4+n): bottleneck stages of block4's shape at doubling rates → classes."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        block_rate: int,
        multi_grid: Sequence[int] = (1, 2, 4),
        num_blocks: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        planes = in_channels // Bottleneck.expansion
        blocks, rate = [], block_rate
        for _ in range(num_blocks):
            rate *= 2
            blocks.append(
                make_stage(in_channels, planes, 1, multi_grid_rates(rate, multi_grid), norm_layer)
            )
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)
        self.rates = tuple(tuple(b[i].dilation for i in range(len(b))) for b in blocks)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.classifier(self.blocks(features["out"]))
