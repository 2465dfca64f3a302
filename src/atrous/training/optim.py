"""DeepLab's optimization recipe: SGD with momentum, per-group learning rates and the
"poly" learning-rate policy (DeepLab v2 §4.1, v3 §4), optionally after a linear warm-up; and
the loss, optimizer and schedule a :class:`~atrous.training.TrainConfig` sets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from atrous.losses import SegmentationLoss

if TYPE_CHECKING:
    from atrous.training.config import TrainConfig

__all__ = [
    "PolyLR",
    "build_optimizer",
    "loss_from_config",
    "optimizer_and_schedule",
    "param_groups",
    "poly_factor",
]

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

    def replan(self, max_iterations: int, warmup_iters: int | None = None) -> None:
        """A new schedule length (and warm-up) from this iteration on: the next step's learning
        rates follow it at once (a time budget re-plans after every step)."""
        self.max_iterations = int(max_iterations)
        if warmup_iters is not None:
            self.warmup_iters = int(warmup_iters)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


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


def optimizer_and_schedule(
    model: nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, PolyLR]:
    """The optimizer (:func:`build_optimizer`: SGD/AdamW with the head LR multiplier) and the
    poly LR schedule with warm-up over ``cfg.iterations``, as a run's config sets them."""
    optimizer = build_optimizer(
        model,
        cfg.lr,
        cfg.momentum,
        cfg.weight_decay,
        cfg.head_lr_mult,
        cfg.no_decay_norm_bias,
        cfg.optimizer,
    )
    scheduler = PolyLR(optimizer, cfg.iterations, cfg.lr_power, cfg.warmup_iters, cfg.warmup_factor)
    return optimizer, scheduler


def loss_from_config(cfg: TrainConfig, weight: list[float] | None) -> SegmentationLoss:
    """The configured loss (cross-entropy or OHEM, label smoothing, an optional region term,
    the auxiliary head's weight) with the class weights ``weight``."""
    return SegmentationLoss(
        weight=weight,
        ohem_top_k=cfg.ohem_top_k if cfg.loss == "ohem" else None,
        region=cfg.region_loss,
        region_weight=cfg.region_weight,
        aux_weight=cfg.aux_weight,
        label_smoothing=cfg.label_smoothing,
    )
