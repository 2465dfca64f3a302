"""Input normalization, the one implementation: what training crops, inference
(:class:`~atrous.inference.Segmenter`) and CRF-as-RNN's RGB reconstruction all use.

``x = (rgb * input_scale - mean) / std`` per channel, on 0-255 pixel values, channels reordered
first if asked. torchvision / ImageNet style is RGB, ``input_scale = 1/255`` and the ImageNet
statistics; Caffe-era DeepLab v1/v2 weights use ``channel_order="BGR"``, ``input_scale=1``,
their BGR mean and ``std=(1, 1, 1)``. A model's weights carry theirs in ``model.metadata``
(``mean``/``std``), read by :meth:`Normalization.of`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from atrous.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["Normalization"]


@dataclass(frozen=True)
class Normalization:
    """Per-channel normalization of 0-255 pixels (channel dimension -3: (3, H, W) or
    (N, 3, H, W))."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_scale: float = 1.0 / 255.0
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        mean, std = tuple(self.mean), tuple(self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {list(mean)}, {list(std)}")
        if any(not (float(s) > 0 and math.isfinite(float(s))) for s in std):
            raise ValueError(f"std values must be positive, got {list(std)}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if not float(self.input_scale) > 0:
            raise ValueError(f"input_scale must be positive, got {self.input_scale}")
        object.__setattr__(self, "mean", tuple(float(m) for m in mean))
        object.__setattr__(self, "std", tuple(float(s) for s in std))
        object.__setattr__(self, "input_scale", float(self.input_scale))

    @classmethod
    def of(cls, metadata: Mapping[str, Any] | None, **overrides: Any) -> Normalization:
        """The normalization a model's weights expect (``model.metadata`` mean/std; ImageNet
        where they say nothing); ``overrides`` (None values ignored) win."""
        meta = metadata or {}
        kw = {k: meta[k] for k in ("mean", "std") if k in meta}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        return mean, std

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """0-255 pixels (uint8 or float) -> normalized float32, a new tensor."""
        x = pixels.float() if pixels.dtype != torch.float32 else pixels.clone()
        if self.channel_order == "BGR":
            x = x.flip(-3)
        mean, std = self._stats(x)
        return x.mul_(self.input_scale).sub_(mean).div_(std)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized input -> the 0-255 RGB pixels behind it, float32, rounded (which undoes
        the float error of the normalization: uint8 colours, as at inference)."""
        mean, std = self._stats(x)
        rgb = (x.float() * std + mean).mul_(1.0 / self.input_scale)
        if self.channel_order == "BGR":
            rgb = rgb.flip(-3)
        return rgb.round_().clamp_(0.0, 255.0)

    def config(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_scale": self.input_scale,
            "channel_order": self.channel_order,
        }
