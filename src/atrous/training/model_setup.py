"""The model a training run optimizes: built from the zoo, fine-tuned from weights, or with an
ImageNet backbone; wrapped with CRF-as-RNN when configured; then placed (device, memory
format, frozen or synchronized BN, DDP, torch.compile)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from atrous.crf.rnn_model import with_crf_rnn
from atrous.training.batchnorm import freeze_batchnorm
from atrous.training.config import TrainConfig
from atrous.weights import build_pretrained, load

__all__ = ["build_training_model", "prepare_model"]


def build_training_model(
    cfg: TrainConfig, num_classes: int, log: Callable[[str], None] = print
) -> nn.Module:
    """The configured model for ``num_classes``, in train mode: from ``cfg.weights``
    (fine-tuning; mismatched classifier layers re-initialized, reported through ``log``),
    else built with ``cfg.pretrained_backbone``; with the CRF-as-RNN layer of ``cfg.crf_rnn``
    (the loss is then on its output, and it is exported with the weights)."""
    kw: dict[str, Any] = {"num_classes": num_classes, "aux": cfg.aux}
    if cfg.output_stride:
        kw["output_stride"] = cfg.output_stride
    if cfg.weights:
        model = _finetune_model(cfg, kw, log)
    else:
        model = build_pretrained(
            cfg.model, pretrained_backbone=cfg.pretrained_backbone, **kw, **cfg.model_options
        )
    return with_crf_rnn(model, cfg.crf_rnn).train()


def _finetune_model(cfg: TrainConfig, kw: dict[str, Any], log: Callable[[str], None]) -> nn.Module:
    model = load(cfg.weights, arch=cfg.model, strict=False, **kw, **cfg.model_options)
    meta = model.metadata
    n_model = len(model.state_dict())
    n_loaded = n_model - len(meta["reinitialized"]) - len(meta["missing_keys"])
    log(
        f"fine-tuning from {cfg.weights} ({meta['source']} format): loaded "
        f"{n_loaded}/{n_model} tensors; re-initialized for {kw['num_classes']} classes: "
        f"{meta['reinitialized'] or 'none'}; missing (left at init): "
        f"{meta['missing_keys'] or 'none'}; unexpected (ignored): "
        f"{meta['unexpected_keys'] or 'none'}"
    )
    return model


def prepare_model(
    model: nn.Module, cfg: TrainConfig, device: torch.device, world: int
) -> tuple[nn.Module, nn.Module]:
    """``(model, model to call)``: the model on ``device`` (channels_last, frozen BN,
    SyncBatchNorm as configured), and the DDP / torch.compile wrapper that training calls —
    it shares the parameters, and checkpoints keep the plain model's names."""
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.freeze_bn:
        freeze_batchnorm(model)
    if cfg.sync_bn:
        if device.type != "cuda":
            raise ValueError(
                "sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                "on CPU use model_options.norm=gn or freeze_bn=true"
            )
        if world > 1:  # one process: plain BatchNorm is the same thing
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    called: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        called = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        mode = cfg.compile if isinstance(cfg.compile, str) else None
        called = torch.compile(called, mode=mode, backend=cfg.compile_backend)
    return model, called
