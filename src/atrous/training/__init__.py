"""Training: DeepLab's recipe (poly LR, SGD momentum, random scale/crop/flip) as a
resumable, DDP-ready loop; see :class:`Trainer` and :class:`TrainConfig`.

>>> from atrous.training import Trainer, load_config
>>> Trainer(load_config("configs/synthetic_demo.json"), "runs/demo").train()  # doctest: +SKIP
"""

from __future__ import annotations

from atrous.failures import TrainingError
from atrous.training.batchnorm import freeze_batchnorm
from atrous.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from atrous.training.config import TrainConfig, apply_overrides, load_config, packaged_configs
from atrous.training.distributed import distributed_session
from atrous.training.optim import PolyLR, build_optimizer, param_groups, poly_factor
from atrous.training.sampler import EpochSampler
from atrous.training.trainer import Trainer
from atrous.training.validation import validate_model

__all__ = [
    "EpochSampler",
    "PolyLR",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "apply_overrides",
    "build_optimizer",
    "distributed_session",
    "freeze_batchnorm",
    "load_checkpoint",
    "load_config",
    "packaged_configs",
    "param_groups",
    "poly_factor",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "validate_model",
]
