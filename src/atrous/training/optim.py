"""DeepLab's optimization recipe: SGD with momentum, per-group learning rates and the
"poly" learning-rate policy (DeepLab v2 §4.1, v3 §4), optionally after a linear warm-up."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

# Modules whose parameters are normalization scales/shifts (not decayed on request).
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def poly_factor(
    iteration: int,
    max_iterations: int,
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_factor: float = 0.1,
) -> float:
    """LR multiplier at ``iteration``: (1 - it/max)^power (DeepLab v2 §4.1), multiplied during
    the first ``warmup_iters`` by a linear ramp from ``warmup_factor`` to 1 (Goyal et al.
    2017, used by DeepLab v3+ reimplementations for large batches)."""
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}")
    it = min(max(int(iteration), 0), max_iterations)
    factor = (1.0 - it / max_iterations) ** power
    if warmup_iters > 0 and it < warmup_iters:
        factor *= warmup_factor + (1.0 - warmup_factor) * it / warmup_iters
    return factor


class PolyLR(LRScheduler):
    """Per-iteration poly schedule over every parameter group (each keeps its own base LR,
    so the head's multiplier survives). Its state is plain numbers (``weights_only`` safe)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iterations: int,
        power: float = 0.9,
        warmup_iters: int = 0,
        warmup_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.max_iterations, self.power = int(max_iterations), float(power)
        self.warmup_iters, self.warmup_factor = int(warmup_iters), float(warmup_factor)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        f = poly_factor(
            self.last_epoch, self.max_iterations, self.power, self.warmup_iters, self.warmup_factor
        )
        return [base * f for base in self.base_lrs]


def _is_backbone(name: str) -> bool:
    return name.startswith(("backbone.", "module.backbone."))


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 1.0,
    no_decay_norm_bias: bool = False,
) -> list[dict[str, Any]]:
    """Parameter groups: backbone at ``lr``; head and auxiliary head at ``lr * head_lr_mult``
    (DeepLab v2 trains the new classifier at 10×). With ``no_decay_norm_bias`` the
    normalization parameters and biases get no weight decay. Frozen parameters are left out;
    empty groups are dropped."""
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters()
    }
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = no_decay_norm_bias and (id(p) in norm_params or name.endswith(".bias"))
        groups.setdefault((_is_backbone(name), no_decay), []).append(p)
    out = []
    for (backbone, no_decay), params in sorted(
        groups.items(), key=lambda kv: (not kv[0][0], kv[0][1])
    ):
        out.append(
            {
                "params": params,
                "lr": lr if backbone else lr * head_lr_mult,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{'backbone' if backbone else 'head'}{'_no_decay' if no_decay else ''}",
            }
        )
    if not out:
        raise ValueError("the model has no trainable parameters")
    return out


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    head_lr_mult: float = 1.0,
    no_decay_norm_bias: bool = False,
    kind: str = "sgd",
) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 over :func:`param_groups` (DeepLab v2 §4.1, v3 §4), or AdamW
    (decoupled weight decay, Loshchilov & Hutter 2019) with ``kind="adamw"``: not the papers'
    choice, but it gets further in a short from-scratch budget."""
    groups = param_groups(model, lr, weight_decay, head_lr_mult, no_decay_norm_bias)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {kind!r}")
