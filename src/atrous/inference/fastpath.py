"""The eager fast path of :func:`~atrous.inference.optimize`: BatchNorm folded into the
convolution before it (:func:`fold_batchnorm`), channels-last (NHWC) tensors, which oneDNN's
convolutions run without reordering, in float32 or bfloat16 (:class:`OptimizedModel`)."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import Tensor, nn

from atrous.models.layers import FrozenBatchNorm2d

__all__ = ["OptimizedModel", "eager_fast_model", "fold_batchnorm"]

_BN = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _fold(conv: nn.Conv2d, bn: nn.Module) -> None:
    """``bn(conv(x))`` as one convolution: w' = w * g / s, b' = (b - mu) * g / s + beta."""
    var, mean = bn.running_var, bn.running_mean
    gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
    conv.weight = nn.Parameter(w, requires_grad=False)
    conv.bias = nn.Parameter((b - mean) * scale + beta.detach(), requires_grad=False)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm (eval statistics) into the convolution registered just before it
    in the same module (a Sequential's order, or torchvision's ``conv1``/``bn1`` pairs), in
    place, the BatchNorm replaced by Identity; returns the number folded. Group norm is left
    as it is (it has no fixed statistics)."""
    n = 0
    for module in list(model.modules()):
        children = list(module.named_children())
        for (_, a), (name_b, b) in itertools.pairwise(children):
            if (
                isinstance(a, nn.Conv2d)
                and isinstance(b, _BN)
                and a.out_channels == len(b.running_mean)
            ):
                _fold(a, b)
                setattr(module, name_b, nn.Identity())
                n += 1
    return n


class OptimizedModel(nn.Module):
    """A network run channels-last in ``dtype`` under inference mode, logits returned as
    contiguous float32; ``config`` and ``metadata`` are the original model's (with
    ``metadata["precision"]``)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, config: dict, metadata: dict) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.config = config
        self.metadata = metadata

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.net(x)
        logits = out["out"] if isinstance(out, dict) else out
        return {"out": logits.float().contiguous()}


def eager_fast_model(net: nn.Module, precision: str, config: dict, metadata: dict) -> nn.Module:
    """A copy of ``net`` (a network without a CRF layer) BatchNorm-folded, channels-last, in
    ``precision`` (``fp32`` or ``bf16``), without training's auxiliary head."""
    net = copy.deepcopy(net).eval()
    if getattr(net, "aux_classifier", None) is not None:
        net.aux_classifier = None  # training's auxiliary head: the contract returns "out" only
    fold_batchnorm(net)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    net = net.to(dtype).to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    return OptimizedModel(net, dtype, config, metadata).eval()
