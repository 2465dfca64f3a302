"""The DeepLab v3+ decoder (§3.1, Fig. 2): the encoder-decoder head.

Low-level features at stride 4 → 1×1 conv to ``low_level_channels`` (48) + BN + ReLU; the
ASPP output upsampled bilinearly to their size and concatenated; ``decoder_convs`` (two in
the paper) 3×3 convs of 256 (+BN+ReLU, optionally depthwise-separable); a 1×1 conv to
classes. ``decoder_convs=1`` reproduces VainF/DeepLabV3Plus-Pytorch, whose decoder has a
single 3×3 conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .aspp import ASPP
from .layers import ConvNormAct, NormLayer, conv_block, upsample_to


class DeepLabV3PlusHead(nn.Module):
    """ASPP encoder head + decoder; consumes the ``out`` and ``low_level`` features.

    Args:
        in_channels: channels of the backbone's ``out`` feature.
        low_level_in_channels: channels of the backbone's ``low_level`` feature (stride 4).
        num_classes: number of output classes.
        atrous_rates: rates of the ASPP's 3×3 branches.
        image_pooling, separable, aspp_dropout: the ASPP's options (see :class:`~.aspp.ASPP`);
            ``separable`` also makes the decoder's 3×3 convs depthwise-separable (§3.2).
        low_level_channels: channels the low-level feature is projected to (48, §4.1).
        decoder_convs: number of 3×3 convs after the concatenation (2 in the paper).
        channels: width of the ASPP and the decoder convs.
        norm_layer: factory for the normalization layers.
        align_corners: the corner rule of the ASPP output's upsampling (True in TensorFlow
            DeepLab's ``refine_by_decoder``).
    """

    def __init__(
        self,
        in_channels: int,
        low_level_in_channels: int,
        num_classes: int,
        *,
        atrous_rates: Sequence[int] = (6, 12, 18),
        image_pooling: bool = True,
        separable: bool = False,
        aspp_dropout: float = 0.1,
        low_level_channels: int = 48,
        decoder_convs: int = 2,
        channels: int = 256,
        norm_layer: NormLayer = nn.BatchNorm2d,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        if decoder_convs < 1:
            raise ValueError(f"decoder_convs must be >= 1, got {decoder_convs}")
        self.aspp = ASPP(
            in_channels,
            atrous_rates,
            channels,
            image_pooling=image_pooling,
            separable=separable,
            dropout=aspp_dropout,
            norm_layer=norm_layer,
        )
        self.project = ConvNormAct(
            low_level_in_channels, low_level_channels, 1, norm_layer=norm_layer
        )
        fuse, c = [], channels + low_level_channels
        for _ in range(decoder_convs):
            fuse.append(conv_block(c, channels, 1, separable, norm_layer))
            c = channels
        self.fuse = nn.Sequential(*fuse)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        low = self.project(features["low_level"])
        x = upsample_to(self.aspp(features["out"]), low.shape[-2:], self.align_corners)
        return self.classifier(self.fuse(torch.cat([low, x], dim=1)))
