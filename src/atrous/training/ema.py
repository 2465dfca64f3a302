"""Exponential moving average of a model's weights (Polyak averaging; the EMA weights that
timm and most segmentation codebases validate and ship).

After each optimizer step the average moves toward the live weights,
``avg = d * avg + (1 - d) * w``, with the decay warmed up as ``min(decay, (1 + n) / (10 + n))``
after ``n`` updates so the first, random weights are forgotten quickly. BatchNorm running
statistics are averaged the same way; integer buffers (``num_batches_tracked``) are copied.
A short schedule from scratch ends with weights that swing from step to step on a small
dataset; their average is steadier, and is what validation sees and ``model.safetensors``
holds.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """An averaged copy of ``model`` (kept in eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights (call after each step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # state_dict() tensors share storage with the modules: lerp_/copy_ update them
        live = model.state_dict()
        avg = self.module.state_dict()
        floats = [name for name, a in avg.items() if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([avg[k] for k in floats], [live[k] for k in floats], 1.0 - d)
        for name, a in avg.items():
            if not a.is_floating_point():
                a.copy_(live[name])
