"""Tiny training configs shared by the training tests."""

from __future__ import annotations

from typing import Any

from atrous.training import TrainConfig


def tiny_config(**overrides: Any) -> TrainConfig:
    """A MobileNetV2-0.5 DeepLab v3 (GroupNorm) on 6 synthetic 40 px images, 33 px crops."""
    base: dict[str, Any] = dict(
        model="deeplabv3_mobilenetv2",
        model_options={"norm": "gn", "width_mult": 0.5},
        dataset="synthetic",
        dataset_options={"length": 6, "size": 40},
        crop_size=33,
        scale_range=[0.75, 1.25],
        batch_size=2,
        iterations=4,
        lr=0.01,
        num_workers=0,
        deterministic=True,
        log_every=1,
        val_every=1000,
        val_max_images=2,
        ckpt_every=1000,
        device="cpu",
    )
    base.update(overrides)
    return TrainConfig(**base).validate()
