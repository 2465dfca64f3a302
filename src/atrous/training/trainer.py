"""The training loop of ``atrous train``: DeepLab's recipe in one process, DDP-ready.

One iteration = ``grad_accum`` batches of ``batch_size`` crops, one SGD step and one poly LR
step. Data order is a function of (seed, epoch) only and every RNG is checkpointed, so a run
resumed from ``last.pt`` reproduces the uninterrupted one. torch.distributed is used only
when a process group is initialized (torchrun): each rank reads its shard of every epoch,
gradients are averaged by DDP, and rank 0 alone logs and writes files.

The loop (:meth:`Trainer.train`) reads like torchvision's reference ``train_one_epoch``: a
training step, then logging, validation and checkpointing when their intervals come round,
and the time budget re-planned. The pieces live beside it: the data and class rules in
:mod:`~atrous.training.data_setup`, mixed precision in :mod:`~atrous.training.amp`, the
checkpoint's contents in :mod:`~atrous.training.state`, the progress bar, speed and time
budget in :mod:`~atrous.training.progress`, validation passes in
:mod:`~atrous.training.validator`, Ctrl-C in :mod:`~atrous.training.interrupt`, and the
bad-sample policy in :mod:`atrous.failures`. The configuration is never modified: the
planned run length (``time_limit``) is the trainer's :attr:`total_iterations`, saved in the
checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atrous.data import SkipReport
from atrous.data.palettes import palette_for
from atrous.failures import BadSamples, non_finite_loss, quiet_dataset_skips
from atrous.training.amp import autocast, mixed_precision
from atrous.training.batchnorm import freeze_batchnorm
from atrous.training.checkpoint import load_checkpoint, save_checkpoint
from atrous.training.config import TrainConfig
from atrous.training.curve import plot_learning_curve, pyplot
from atrous.training.data_setup import (
    build_training_data,
    class_weights,
    train_batches,
    training_transforms,
)
from atrous.training.distributed import (
    gather_skipped,
    global_mean,
    global_min,
    rank_and_world,
    training_device,
)
from atrous.training.ema import WeightEMA
from atrous.training.interrupt import StopOnInterrupt
from atrous.training.model_setup import build_training_model, prepare_model
from atrous.training.optim import loss_from_config, optimizer_and_schedule
from atrous.training.progress import TrainingProgress
from atrous.training.run_log import RunLog
from atrous.training.sampler import EpochSampler
from atrous.training.state import restore_training_state, training_state
from atrous.training.time_budget import BudgetPlan, RunClock
from atrous.training.validator import Validator

__all__ = ["Trainer"]


class Trainer:
    """Train a DeepLab model per a :class:`TrainConfig`, writing into ``out_dir``:
    ``last.pt`` / ``best.pt`` (resumable), ``model.safetensors`` (final weights),
    ``metrics.jsonl``, ``config.json`` and, when a call of :meth:`train` ends,
    ``summary.json`` (iterations, best mIoU and the ``skipped`` samples).

    A bad sample (training or validation) follows ``on_error``
    (:class:`~atrous.failures.BadSamples`): ``"skip"`` reports it once (``atrous train:
    skipped PATH: PROBLEM``), trains on and lists it in :attr:`skips` and the summary;
    ``"raise"`` stops with a :class:`TrainingError` naming the file.

    Set-up order matters: the datasets (class count and names), then the model, whose
    weights' ``metadata`` mean/std is the one source of the input normalization for the
    training crops, validation (:class:`~atrous.inference.Segmenter`) and CRF-as-RNN."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | os.PathLike,
        resume: str | os.PathLike | bool = False,
        progress: bool = True,
        started: float | None = None,
    ) -> None:
        # the run's wall time starts with its set-up (``started``: an earlier perf_counter(),
        # e.g. the command's start), so a time_limit covers everything the user waits for
        self._started: float | None = time.perf_counter() if started is None else started
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.progress = progress
        self.rank, self.world = rank_and_world()
        self.main = self.rank == 0
        self.device = training_device(self.cfg.device, self.rank, self.world)
        self.resume_path: Path | None = None
        if resume:
            self.resume_path = self.out / "last.pt" if resume is True else Path(resume)
            if not self.resume_path.is_file():
                raise FileNotFoundError(f"{self.resume_path}: no checkpoint to resume from")
        self.log = RunLog(self.out, enabled=self.main, tensorboard=self.cfg.tensorboard)
        self.iteration = 0
        self.total_iterations = self.cfg.iterations  # re-planned under time_limit
        self.val_every, self.ckpt_every = self.cfg.val_every, self.cfg.ckpt_every  # likewise
        if self.cfg.time_limit is not None:  # no validation before the plan says it fits
            self.val_every = 0
        self._progress: TrainingProgress | None = None  # during train()
        self.clock = RunClock()  # training wall time, over all resumed segments
        self.best_miou = -1.0
        self.skips = SkipReport()  # bad samples met in any DataLoader worker (path -> problem)
        self.interrupt = StopOnInterrupt(self.log.text)  # Ctrl-C: stop and save last.pt
        self.interrupted = False  # the last call of train() ended on a Ctrl-C
        self.resume_hint = f"Trainer(cfg, {str(self.out)!r}, resume=True)"  # said on Ctrl-C
        self._data_wait = 0.0  # seconds spent waiting for batches since the last log
        self.last_good: Path | None = None
        self.last_good_iteration = 0  # the iteration last_good holds
        with quiet_dataset_skips():
            self._setup()

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        data = build_training_data(cfg, self.world, self.log.text)
        self.train_set, self.val_set = data.train_set, data.val_set
        self.num_classes, self.class_names = data.num_classes, data.class_names
        self.on_error = data.on_error
        self.bad_samples = BadSamples(self.on_error, self.skips, self.log.text)
        self.validator = Validator(cfg, self.val_set, self.class_names, self.bad_samples)
        weights = class_weights(  # from the untransformed training masks
            cfg, self.train_set, self.num_classes, self.log.text, self.bad_samples.met
        )
        model = build_training_model(cfg, self.num_classes, self.log.text)
        self.train_set.transforms = training_transforms(cfg, model)
        self.model, self.ddp_model = prepare_model(model, cfg, self.device, self.world)
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.criterion = loss_from_config(cfg, weights).to(self.device)
        self.optimizer, self.scheduler = optimizer_and_schedule(self.model, cfg)
        self.scaler, self.amp_dtype = mixed_precision(cfg.amp, self.device, self.log.text)
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, self.rank, self.world)
        self.batches_per_epoch = self.sampler.per_rank // cfg.batch_size
        if self.resume_path is not None:
            restore_training_state(self, load_checkpoint(self.resume_path))
            self.last_good, self.last_good_iteration = self.resume_path, self.iteration
            self.log.truncate_after(self.iteration)
            self.log.text(self._resuming_line())

    def _resuming_line(self) -> str:
        """Where a resumed run starts: the checkpoint, its iteration, the budget left."""
        line = f"resuming {self.resume_path} at iteration {self.iteration} of "
        line += str(self.total_iterations)
        if self.cfg.time_limit is not None:
            limit = f"{self.cfg.time_limit:g} min time budget"
            left = int(self.cfg.time_limit * 60 - self.elapsed)
            if left > 0:
                line += f"; {left // 60} min {left % 60} s of the {limit} left"
            else:
                line += f"; the {limit} is spent"
        return line

    # ------------------------------------------------------------------ state
    @property
    def eval_model(self) -> nn.Module:
        """The weights validation sees and :meth:`export` writes: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def elapsed(self) -> float:
        """Training wall time so far, over all resumed segments (seconds)."""
        return self.clock.seconds()

    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` holds (:func:`atrous.training.state.training_state`)."""
        return training_state(self)

    def set_total_iterations(self, total: int) -> None:
        """Re-plan the run's length (``time_limit``); the poly schedule follows."""
        self.total_iterations = int(total)
        self.scheduler.max_iterations = self.total_iterations

    def apply_plan(self, plan: BudgetPlan) -> BudgetPlan:
        """Follow a ``time_limit`` plan (the shortest over the ranks, so that all stop at
        the same iteration): its length, warm-up, intervals and validation images."""
        budget = self._progress.budget if self._progress is not None else None
        if self.world > 1 and budget is not None:
            plan = budget.agree(plan, global_min(plan.total, self.device))
        self.total_iterations = plan.total
        self.scheduler.replan(plan.total, plan.warmup)
        self.val_every, self.ckpt_every = plan.val_every, plan.ckpt_every
        self.validator.planned = plan.val_images
        return plan

    def take_data_wait(self) -> float:
        """Seconds spent waiting for batches since the last call."""
        wait, self._data_wait = self._data_wait, 0.0
        return wait

    def save(self, name: str = "last.pt") -> Path | None:
        if not self.main:
            return None
        timing = self._progress.checkpointing() if self._progress else nullcontext()
        with timing:
            path = save_checkpoint(self.state_dict(), self.out / name)
        if name == "last.pt":
            self.last_good, self.last_good_iteration = path, self.iteration
        return path

    def skip_summary(self) -> str:
        """One line listing the skipped samples (at most 20), "" when none."""
        return self.bad_samples.summary(str(self.out / "summary.json") if self.main else None)

    # ------------------------------------------------------------------ one step
    def _next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next batch; bad samples the workers skipped are recorded here, in the main
        process (a DataLoader worker's own records die with it)."""
        t = time.perf_counter()
        batch = next(batches)
        self._data_wait += time.perf_counter() - t
        self.bad_samples.met(batch.get("skipped") or ())
        return batch

    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_bn:
            freeze_batchnorm(self.model)

    def _step(self, batches: Iterator[dict[str, Any]]) -> float:
        """One optimizer step over ``grad_accum`` batches; returns the mean loss."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        amp = autocast(self.device, self.amp_dtype)
        for micro in range(cfg.grad_accum):
            batch = self._next_batch(batches)
            x = batch["image"].to(self.device, non_blocking=True).float()
            y = batch["mask"].to(self.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            last = micro == cfg.grad_accum - 1
            sync = self.ddp_model.no_sync() if self.world > 1 and not last else nullcontext()
            with sync:
                with amp:
                    out = self.ddp_model(x)
                loss = self.criterion(out, y) / cfg.grad_accum
                value = global_mean(loss.detach())
                if not math.isfinite(value):
                    lr = self.scheduler.get_last_lr()[0]
                    raise non_finite_loss(value, self.iteration + 1, lr, self.last_good)
                self.scaler.scale(loss).backward()
            total += value
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        return total

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Validation mIoU with the evaluation module's confusion matrix at ``eval_scales``
        against full-resolution labels (what ``atrous eval`` reports), plus sample
        predictions for TensorBoard."""
        if self.val_set is None:
            return {}
        metrics = self.validator.run(self.eval_model)
        if self.log.writer(self.iteration) is not None and self.cfg.tb_images:
            palette = palette_for(self.num_classes, getattr(self.train_set, "palette", None))
            self.validator.log_strips(self.eval_model, palette, self.log, self.iteration)
        self._train_mode()
        return metrics

    def estimate_val_seconds(self) -> float:
        """The estimated seconds of one validation (its images and TensorBoard strips); 0
        where this process validates nothing. What a first validation would load (the
        TensorBoard writer, matplotlib for the curve) is loaded now, so that its seconds are
        not a surprise at the end of a time-budgeted run."""
        if self.val_set is None or not self.main:
            return 0.0
        self.log.writer(self.iteration)
        pyplot()
        per_image = self.validator.estimate_seconds(self.eval_model) / max(self.val_images(), 1)
        self._train_mode()
        return per_image * self.val_cost_images()

    def val_images(self, full: bool = False) -> int:
        """Images in one validation: ``val_max_images`` of the validation split (``full``),
        or the evenly spaced subset a ``time_limit`` plan chose."""
        return self.validator.full_images() if full else self.validator.images()

    def val_cost_images(self) -> int:
        """Images one validation segments: its own and the TensorBoard strips'."""
        strips = min(self.cfg.tb_images, self.val_images()) if self.log.tensorboard else 0
        return self.val_images() + strips

    # ------------------------------------------------------------------ the loop
    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run until :attr:`total_iterations` (or ``stop_at``, to simulate an interruption),
        the ``time_limit`` or a Ctrl-C (which saves ``last.pt`` to ``--resume`` from);
        returns the last logged record."""
        with quiet_dataset_skips():
            record = self._train(stop_at)
        if self.skips and self.main:
            self.log.text(self.skip_summary())
        return record

    def _train(self, stop_at: int | None) -> dict[str, Any]:
        self.interrupted = False
        setup = self._begin()
        progress = TrainingProgress(self, stop_at, self.main and self.progress, setup)
        self._progress = progress
        batches = train_batches(
            self.cfg, self.train_set, self.sampler, self.iteration, self.device.type == "cuda"
        )
        try:
            while self.iteration < progress.end():
                try:
                    loss = self._step(batches)
                except Exception:
                    if self.interrupt.requested:  # a DataLoader worker killed by the same Ctrl-C
                        self._say_interrupted(None)
                        break
                    raise
                progress.after_step(loss)
                self._at_intervals(progress)
                if self.interrupt.requested:
                    self._say_interrupted(self.save("last.pt"))
                    break
        except KeyboardInterrupt:
            if self.interrupt.aborted:  # a second Ctrl-C: nothing more is written
                self.interrupted = True
                self.log.text(f"aborted at iteration {self._at()}: nothing saved (second Ctrl-C)")
            raise
        finally:
            self._end(progress)
        self.skips.update(gather_skipped(self.skips.skipped).items())  # every rank's
        complete = self.iteration >= self.total_iterations and not self.interrupt.requested
        times = progress.final_split
        if complete:
            t0 = time.perf_counter()
            self.export()
            if self.cfg.val_split:
                self.plot_curve()
            times["export"] = round(time.perf_counter() - t0, 2)
        times["total"] = round(time.perf_counter() - self._segment_start, 2)
        self.write_summary(progress.record, complete, times)
        return progress.record

    def _at(self) -> str:
        return f"{self.iteration}/{self.total_iterations}"

    def _say_interrupted(self, saved: Path | None) -> None:
        """After a Ctrl-C: say exactly what was written (``saved``, or nothing) and how to
        go on; :attr:`interrupted` is set."""
        self.interrupted = True
        if saved is not None:
            what = f"saved {saved}"
        elif self.last_good is not None:
            what = f"nothing saved now; {self.last_good} holds iteration {self.last_good_iteration}"
        else:
            what = "nothing saved"
        resume = f" (resume: {self.resume_hint})" if saved or self.last_good else ""
        self.log.text(f"interrupted at iteration {self._at()}: {what}{resume}")

    def _at_intervals(self, progress: TrainingProgress) -> None:
        """Log, validate and checkpoint when their intervals come round (and at the end)."""
        it, end, cfg = self.iteration, progress.end(), self.cfg
        if it % cfg.log_every == 0 or it == end:
            progress.log_training()
        if (self.val_every and it % self.val_every == 0) or it == self.total_iterations:
            self._validation_step(progress)
        if it % self.ckpt_every == 0 or it == end:
            self.save("last.pt")

    def _validation_step(self, progress: TrainingProgress) -> None:
        """Validate (rank 0), log, keep ``best.pt`` and the curve; excluded from speed."""
        with progress.validating(self.val_cost_images() if self.main else 0):
            metrics = self.validate() if self.main else {}
            if metrics:
                progress.log_validation(metrics)
                if metrics["miou"] > self.best_miou:
                    self.best_miou = metrics["miou"]
                    self.save("best.pt")
                self.plot_curve()

    def _begin(self) -> float:
        """Write config.json (rank 0), enter train mode, catch Ctrl-C, start the clock (at
        the set-up's start on the first call); returns the set-up's seconds."""
        self.log.write_json("config.json", self.cfg.to_dict())
        self._train_mode()
        if self.world == 1:
            self.interrupt.install()
        now = time.perf_counter()
        self._segment_start = self._started if self._started is not None else now
        self._started = None
        self.clock.start(at=self._segment_start)
        return now - self._segment_start

    def _end(self, progress: TrainingProgress) -> None:
        self.interrupt.remove()
        progress.close()
        self._progress = None
        self.clock.stop()
        self.log.flush()

    # ------------------------------------------------------------------ outputs
    def write_summary(
        self, record: dict[str, Any], complete: bool, times: dict[str, float] | None = None
    ) -> Path | None:
        """``summary.json``: how the run (so far) went, with the bad samples skipped (over
        all resumed segments) as ``skipped: [{"item": path, "problem": ...}]`` and where
        this process's seconds went (``seconds``: setup, training, validation, checkpoint,
        export, total)."""
        if not self.main:
            return None
        summary = {
            "complete": complete,
            "iterations": self.iteration,
            "total_iterations": self.total_iterations,
            "elapsed_s": round(self.elapsed, 1),
            "best_val_miou": self.best_miou if self.best_miou >= 0 else None,
            "last": record,
            "skipped": [{"item": p, "problem": why} for p, why in self.skips.skipped.items()],
            "seconds": times or {},
        }
        return self.log.write_json("summary.json", summary)

    def plot_curve(self) -> Path | None:
        """``learning_curve.png``: training loss and validation mIoU against iterations."""
        if not self.main or not self.log.metrics_path.is_file():
            return None
        png = self.out / "learning_curve.png"
        return plot_learning_curve(self.log.metrics_path, png, self.val_images())

    def export(self, path: str | os.PathLike | None = None) -> Path | None:
        """Final weights as safetensors with class names and the dataset's palette
        (:func:`atrous.weights.save`), so that every drawing uses the dataset's colours."""
        if not self.main:
            return None
        from atrous.weights import save

        extra = {
            "training_iterations": str(self.iteration),
            "best_val_miou": str(self.best_miou),
            "inference_scales": json.dumps([float(x) for x in self.cfg.eval_scales]),
        }
        path = Path(path) if path else self.out / "model.safetensors"
        palette = getattr(self.train_set, "palette", None)
        if palette is None:  # a dataset without colours: those of the fine-tuned weights
            palette = self.eval_model.metadata.get("palette")
        palette = palette_for(self.num_classes, palette)
        names = self.class_names
        return save(self.eval_model, path, class_names=names, palette=palette, extra=extra)
