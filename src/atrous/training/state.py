"""What a training checkpoint holds and how a resume puts it back: the model (and its EMA),
optimizer, scheduler, grad scaler, RNG states, the run's counters, the config and the class
names. :mod:`atrous.training.checkpoint` writes and reads the file."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from atrous.data import SkipReport
from atrous.training.checkpoint import rng_state, set_rng_state
from atrous.training.config import TrainConfig
from atrous.training.ema import WeightEMA
from atrous.training.optim import PolyLR
from atrous.training.run_log import RunLog
from atrous.training.time_budget import RunClock

__all__ = ["Resumable", "restore_training_state", "training_state"]


class Resumable(Protocol):
    """The public side of a :class:`~atrous.training.Trainer` that a checkpoint covers."""

    cfg: TrainConfig
    model: nn.Module
    ema: WeightEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: PolyLR
    scaler: torch.amp.GradScaler
    iteration: int
    total_iterations: int
    batches_per_epoch: int
    best_miou: float
    clock: RunClock
    skips: SkipReport
    class_names: list[str]
    log: RunLog
    val_every: int  # the intervals a time_limit plan set
    ckpt_every: int
    validator: Any  # its ``planned`` images

    def set_total_iterations(self, total: int) -> None: ...


def training_state(run: Resumable) -> dict[str, Any]:
    """Everything an exact resume of ``run`` needs, as tensors and plain values."""
    ema = {}
    if run.ema is not None:
        ema = {"model_ema": run.ema.module.state_dict(), "ema_updates": run.ema.updates}
    return {
        **ema,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rng_state(),
        "iteration": run.iteration,
        "total_iterations": run.total_iterations,
        "plan": {
            "val_every": run.val_every,
            "ckpt_every": run.ckpt_every,
            "val_images": run.validator.planned,
        },
        "epoch": run.iteration * run.cfg.grad_accum // run.batches_per_epoch,
        "best_miou": run.best_miou,
        "elapsed": run.clock.seconds(),
        "skipped": dict(run.skips.skipped),
        "config": run.cfg.to_dict(),
        "class_names": run.class_names,
    }


def restore_training_state(run: Resumable, state: dict[str, Any]) -> None:
    """Put :func:`training_state`'s ``state`` back into ``run`` (the RNG states last)."""
    run.model.load_state_dict(state["model"])
    _restore_ema(run, state)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.iteration = int(state["iteration"])
    run.best_miou = float(state.get("best_miou", -1.0))
    run.clock.before = float(state.get("elapsed", 0.0))
    run.skips.update(state.get("skipped", {}).items())
    # The schedule length follows the (possibly overridden) config; a time_limit run keeps
    # the length it had planned (checkpoints before 0.2 kept it in the config).
    if run.cfg.time_limit is not None:
        planned = state.get("total_iterations", state["config"]["iterations"])
        run.set_total_iterations(max(int(planned), run.iteration))
        plan = state.get("plan") or {}  # the same validation subset and intervals go on
        run.val_every = int(plan.get("val_every", run.val_every))
        run.ckpt_every = int(plan.get("ckpt_every", run.ckpt_every))
        run.validator.planned = plan.get("val_images")
    else:
        run.set_total_iterations(run.cfg.iterations)
    set_rng_state(state["rng"])


def _restore_ema(run: Resumable, state: dict[str, Any]) -> None:
    if run.ema is None:
        return
    if "model_ema" in state:
        run.ema.module.load_state_dict(state["model_ema"])
        run.ema.updates = int(state["ema_updates"])
    else:  # a run without EMA resumed with it: the average starts from here
        run.ema = WeightEMA(run.model, run.ema.decay)
        run.log.text("the checkpoint holds no EMA weights: averaging starts now")
