"""Atrous Spatial Pyramid Pooling.

* :class:`ASPP` — DeepLab v3 §3.3: a 1×1 conv, three 3×3 atrous convs (rates (6, 12, 18) at
  output stride 16), and image-level pooling (global average → 1×1 conv → broadcast), each
  256 channels + BN + ReLU; concatenated and projected by a 1×1 conv 256 + BN + ReLU.
  DeepLab v3+ §3.2 makes the 3×3 branches depthwise-separable (``separable=True``).
  Module names equal torchvision's ``ASPP`` (``convs.N``, ``project``).
* :class:`ASPPSum` — DeepLab v2 §3.3: parallel 3×3 atrous convs straight to class scores,
  summed (ASPP-L rates (6, 12, 18, 24), ASPP-S (2, 4, 8, 12) at output stride 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .layers import ConvNormAct, NormLayer, conv_block, is_batch_norm


class GlobalAvgPool(nn.Module):
    """Mean over H, W keeping dims: like AdaptiveAvgPool2d(1) but exports with dynamic shapes."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3), keepdim=True)


class ASPPPooling(nn.Sequential):
    """Image-level features (DeepLab v3 §3.3): pool → 1×1 conv → norm → ReLU → broadcast."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer) -> None:
        super().__init__(
            GlobalAvgPool(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1 and is_batch_norm(self[2]):
            raise ValueError(
                "ASPP image pooling gives one value per channel, and BatchNorm in training mode "
                "cannot normalize a batch of 1: train with batch size >= 2, or build the model "
                "with norm='frozen_bn' or norm='gn', or call model.eval() for inference"
            )
        size = x.shape[-2:]
        y = super().forward(x)
        # Bilinear upsampling of a 1×1 map is a broadcast; expand is exact and cheaper.
        return y.expand(-1, -1, size[0], size[1])


class ASPP(nn.Module):
    """DeepLab v3 ASPP with optional image pooling and separable 3×3 branches."""

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        out_channels: int = 256,
        *,
        image_pooling: bool = True,
        separable: bool = False,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer)
        ]
        branches += [conv_block(in_channels, out_channels, r, separable, norm_layer) for r in rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels, norm_layer))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.rates = tuple(rates)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class ASPPSum(nn.Module):
    """DeepLab v2 ASPP: one 3×3 atrous conv per rate to class scores, outputs summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)  # DeepLab v2 Caffe init of fc1_*
            nn.init.zeros_(conv.bias)
        self.rates = tuple(rates)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out
