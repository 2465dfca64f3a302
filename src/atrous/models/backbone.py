"""The contract every backbone honours, so heads never special-case a backbone.

A backbone is an ``nn.Module`` whose ``forward(x)`` returns a dict ``stage name → feature``
and that describes itself with :attr:`Backbone.feature_info` (channels and stride of each
stage, after dilation) and :attr:`Backbone.roles` (which stage is the head's input
``"out"``, the v3+ decoder's ``"low_level"`` input at stride 4, and the aux head's
``"aux"`` input). Strides are the real ones: an atrous backbone at output stride 8 says so.
The dilation rules the backbones share live here too: :func:`stage_strides` (atrous
convolution past the output stride) and :func:`multi_grid_rates` (multi-grid unit rates).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

ROLES = ("out", "low_level", "aux")


@dataclass(frozen=True)
class FeatureInfo:
    """One stage's output: its name, channel count and stride w.r.t. the input."""

    name: str
    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: subclasses set ``feature_info`` and ``roles`` and implement ``forward``."""

    feature_info: list[FeatureInfo]
    roles: dict[str, str]
    output_stride: int

    def info(self, role: str) -> FeatureInfo:
        """The :class:`FeatureInfo` of the stage that plays ``role`` (see :data:`ROLES`)."""
        if role not in self.roles:
            raise KeyError(f"{type(self).__name__} has no {role!r} feature; roles: {self.roles}")
        name = self.roles[role]
        for f in self.feature_info:
            if f.name == name:
                return f
        raise KeyError(name)  # pragma: no cover - construction guarantees it

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def stage_strides(
    strides: list[int], output_stride: int, start: int = 1
) -> tuple[list[int], list[int], list[int]]:
    """Turn nominal per-stage strides into (stride, rate before, rate after) per stage.

    Atrous convolution (DeepLab v2 §3.1): once the running stride reaches
    ``output_stride``, a stage keeps stride 1 and multiplies the dilation rate by the stride
    it gave up. ``rate_before`` is the rate in force when the stage starts (torchvision and
    VainF give it to the stage's first block), ``rate_after`` the stage's own rate.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    current, rate = start, 1
    out_strides, before, after = [], [], []
    for s in strides:
        before.append(rate)
        if current * s > output_stride:
            rate *= s
            out_strides.append(1)
        else:
            current *= s
            out_strides.append(s)
        after.append(rate)
    return out_strides, before, after


class SequentialBackbone(Backbone):
    """A backbone that is one ``nn.Sequential`` named ``features`` (torchvision's VGG and
    MobileNets): its stages are the outputs of the children named in ``feature_info``."""

    features: nn.Sequential

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        keep = {f.name for f in self.feature_info}
        feats = {}
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in keep:
                feats[name] = x
        return feats


def init_conv_weights(module: nn.Module, nonlinearity: str = "relu") -> None:
    """Kaiming-normal (fan-out) conv weights and zero conv biases, as torchvision initializes."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
