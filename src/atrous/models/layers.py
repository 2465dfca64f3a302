"""Building blocks shared by every model: norm-layer factory, conv-norm-act, separable conv.

One place decides how a norm layer is made, so every backbone and head honours the
``norm`` option the same way (BatchNorm, SyncBatchNorm, GroupNorm, frozen BatchNorm).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]

NORM_KINDS = ("bn", "syncbn", "gn", "frozen_bn")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (DeepLab v2 §4: BN frozen).

    State-dict compatible with ``nn.BatchNorm2d`` (and torchvision's FrozenBatchNorm2d):
    ``weight``, ``bias``, ``running_mean``, ``running_var``; ``num_batches_tracked`` is
    accepted on load and ignored.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def group_norm(num_channels: int, max_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides the channels."""
    return nn.GroupNorm(math.gcd(num_channels, max_groups), num_channels, eps=eps)


def make_norm(kind: str = "bn", eps: float = 1e-5, momentum: float = 0.1) -> NormLayer:
    """A factory ``channels -> norm module`` for one of :data:`NORM_KINDS`.

    ``syncbn`` builds ``nn.SyncBatchNorm`` (synchronised statistics under DDP on CUDA);
    ``gn`` GroupNorm (32 groups where the channels allow); ``frozen_bn`` fixed statistics.
    """
    if kind == "bn":
        return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)
    if kind == "syncbn":
        return partial(nn.SyncBatchNorm, eps=eps, momentum=momentum)
    if kind == "gn":
        return partial(group_norm, eps=eps)
    if kind == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    raise ValueError(f"norm must be one of {NORM_KINDS}, got {kind!r}")


def is_batch_norm(module: nn.Module) -> bool:
    """True for norm layers that compute batch statistics in training mode."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


class ConvNormAct(nn.Sequential):
    """conv → norm → activation, named ``0``, ``1``, ``2`` as torchvision's blocks are."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        activation: Callable[..., nn.Module] | None = nn.ReLU,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=norm_layer is None,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SeparableConv2d(nn.Module):
    """Depthwise-separable conv (DeepLab v3+ §3.2): 3×3 depthwise at ``dilation`` → norm →
    ReLU → 1×1 pointwise → norm → ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(
            in_channels, in_channels, kernel_size, stride, dilation, in_channels, norm_layer
        )
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def conv_block(
    in_channels: int,
    out_channels: int,
    dilation: int,
    separable: bool,
    norm_layer: NormLayer,
) -> nn.Module:
    """A 3×3 conv-norm-ReLU at ``dilation``, plain or depthwise-separable."""
    if separable:
        return SeparableConv2d(in_channels, out_channels, 3, 1, dilation, norm_layer)
    return ConvNormAct(in_channels, out_channels, 3, 1, dilation, norm_layer=norm_layer)


def upsample_to(
    x: Tensor, size: tuple[int, int] | torch.Size, align_corners: bool = False
) -> Tensor:
    """Bilinear resize, ``align_corners=False`` as torchvision and VainF upsample logits, or
    ``True`` as TensorFlow DeepLab does (``tf.image.resize_bilinear(..., align_corners=True)``
    in ``model.py``, for the decoder's input and the final logits).

    Equal sizes return ``x`` as it is (the resize would be an exact copy, with either corner
    rule), but only for concrete sizes: under ``torch.export`` they are symbols, and comparing
    them would tie the exported graph to a relation between input sizes."""
    shapes = (*x.shape[-2:], *size)
    if all(isinstance(s, int) for s in shapes) and tuple(x.shape[-2:]) == tuple(size):
        return x
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def same_padding(size: Any, kernel: int, stride: int, dilation: int = 1) -> tuple[Any, Any]:
    """TensorFlow's ``SAME`` padding of one axis: (before, after).

    The output has ``ceil(size / stride)`` positions and the padding is split with the odd
    pixel after: a stride-2 3×3 conv on an even size pads 0 before and 1 after, where
    PyTorch's symmetric ``padding=1`` would sample the grid one pixel earlier. Written with
    ``%`` and ``//`` only where the kernel spans the stride, so that ``torch.export`` keeps
    the size symbolic."""
    effective = (kernel - 1) * dilation + 1
    total = (-size) % stride + effective - stride  # = (ceil(size/stride) - 1) * stride + ...
    if effective < stride:  # e.g. a strided 1×1: TF pads nothing
        total = max(total, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``SAME`` padding (:func:`same_padding`), computed from
    each input's size; parameter names are ``nn.Conv2d``'s, so state dicts are unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = same_padding(x.shape[-2], kh, sh, dh)
        left, right = same_padding(x.shape[-1], kw, sw, dw)
        x = nn.functional.pad(x, (left, right, top, bottom))
        return nn.functional.conv2d(
            x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


def to_same_conv(conv: nn.Conv2d) -> SameConv2d:
    """A :class:`SameConv2d` with ``conv``'s shape and parameters (shared, not copied)."""
    same = SameConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        0,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    same.weight = conv.weight
    if conv.bias is not None:
        same.bias = conv.bias
    return same


class SameMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with TensorFlow's ``SAME`` padding (padded cells never win)."""

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size, self.stride
        top, bottom = same_padding(x.shape[-2], k, s)
        left, right = same_padding(x.shape[-1], k, s)
        x = nn.functional.pad(x, (left, right, top, bottom), value=float("-inf"))
        return nn.functional.max_pool2d(x, k, s)
