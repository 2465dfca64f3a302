"""Atrous VGG-16 for DeepLab v1 (Chen et al., ICLR 2015, §3.1 and §4.1).

Convolutions keep torchvision's ``VGG.features`` indices (``features.0`` … ``features.28``)
so its ImageNet conv weights load. DeepLab's changes: max-pools are 3×3 with padding 1;
pools past the output stride keep stride 1 and the convs after them are dilated (at OS 8:
pool4 and pool5 at stride 1, conv5 at rate 2). The LargeFOV fc6/fc7 live in the head.
"""

from __future__ import annotations

from torch import nn

from .backbone import FeatureInfo, SequentialBackbone, stage_strides

# conv channels per block; each block ends with a pool
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16(SequentialBackbone):
    """Atrous VGG-16 (no normalization, as in the paper); features after each pool."""

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__()
        self.output_stride = output_stride
        strides, _, after = stage_strides([2] * 5, output_stride, start=1)
        layers: list[nn.Module] = []
        infos, inp, stride, rate = [], 3, 1, 1
        for b, channels in enumerate(BLOCKS):
            for c in channels:
                layers += [nn.Conv2d(inp, c, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True)]
                inp = c
            layers.append(nn.MaxPool2d(3, strides[b], 1))
            stride *= strides[b]
            rate = after[b]
            infos.append(FeatureInfo(str(len(layers) - 1), inp, stride))
        self.features = nn.Sequential(*layers)
        self.feature_info = infos
        self.roles = {"out": infos[4].name, "low_level": infos[1].name, "aux": infos[3].name}
