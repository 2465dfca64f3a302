"""The training loop of ``atrous train``: DeepLab's recipe in one process, DDP-ready.

One iteration = ``grad_accum`` batches of ``batch_size`` crops, one SGD step and one poly LR
step. Data order is a function of (seed, epoch) only and every RNG is checkpointed, so a run
resumed from ``last.pt`` reproduces the uninterrupted one. torch.distributed is used only
when a process group is initialized (torchrun): each rank reads its shard of every epoch,
gradients are averaged by DDP, and rank 0 alone logs and writes files.

The loop (:meth:`Trainer.train`) reads like torchvision's reference ``train_one_epoch``: a
training step, then logging, validation and checkpointing when their intervals come round,
and the time budget re-planned; each is a small method below. The configuration is never
modified: the planned run length (``time_limit``) is the trainer's :attr:`total_iterations`,
saved in the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from atrous.data import SkipReport, build_dataset, collate, train_transforms
from atrous.data.palettes import palette_for
from atrous.losses import SegmentationLoss, class_weights_from_counts
from atrous.training.batchnorm import freeze_batchnorm
from atrous.training.checkpoint import (
    TrainingError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from atrous.training.config import TrainConfig
from atrous.training.curve import plot_learning_curve
from atrous.training.distributed import global_mean, rank_and_world
from atrous.training.model_setup import build_training_model, prepare_model
from atrous.training.optim import PolyLR, build_optimizer
from atrous.training.run_log import RunLog
from atrous.training.sampler import EpochSampler
from atrous.training.time_budget import TimeBudget
from atrous.training.validation import (
    estimate_validation_seconds,
    prediction_strips,
    validate_model,
)

__all__ = ["Trainer"]


class Trainer:
    """Train a DeepLab model per a :class:`TrainConfig`, writing into ``out_dir``:
    ``last.pt`` / ``best.pt`` (resumable), ``model.safetensors`` (final weights),
    ``metrics.jsonl`` and ``config.json``.

    Set-up order matters: the datasets (class count and names), then the model, whose
    weights' ``metadata`` mean/std is the one source of the input normalization for the
    training crops, validation (:class:`~atrous.inference.Segmenter`) and CRF-as-RNN."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | os.PathLike,
        resume: str | os.PathLike | bool = False,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.progress = progress
        self.rank, self.world = rank_and_world()
        self.main = self.rank == 0
        self.device = self._device()
        self.resume_path: Path | None = None
        if resume:
            self.resume_path = self.out / "last.pt" if resume is True else Path(resume)
            if not self.resume_path.is_file():
                raise FileNotFoundError(f"{self.resume_path}: no checkpoint to resume from")
        self.log = RunLog(self.out, enabled=self.main, tensorboard=self.cfg.tensorboard)
        self.iteration = 0
        self.total_iterations = self.cfg.iterations  # re-planned under time_limit
        self.elapsed = 0.0  # training seconds before this process (time_limit runs)
        self._t_start: float | None = None  # perf_counter() when this process's loop began
        self.best_miou = -1.0
        self.skips = SkipReport()  # bad samples met in any DataLoader worker (path -> problem)
        self._stop_requested = False
        self._data_wait = 0.0  # seconds spent waiting for batches since the last log
        self.last_good: Path | None = None
        self._setup()

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        d = self.cfg.device
        if d == "auto":
            d = "cuda" if torch.cuda.is_available() else "cpu"
        if d.startswith("cuda") and self.world > 1:
            d = f"cuda:{int(os.environ.get('LOCAL_RANK', self.rank))}"
        return torch.device(d)

    def _setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self._build_datasets()
        weights = self._class_weights()  # from the untransformed training masks
        model = build_training_model(cfg, self.num_classes, self.log.text)
        self.train_set.transforms = self._train_transforms(model)
        self.model, self.ddp_model = prepare_model(model, cfg, self.device, self.world)
        self.criterion = SegmentationLoss(
            weight=weights,
            ohem_top_k=cfg.ohem_top_k if cfg.loss == "ohem" else None,
            region=cfg.region_loss,
            region_weight=cfg.region_weight,
            aux_weight=cfg.aux_weight,
        ).to(self.device)
        self._build_optimization()
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, self.rank, self.world)
        self.batches_per_epoch = self.sampler.per_rank // cfg.batch_size
        if self.resume_path is not None:
            self._load_state(load_checkpoint(self.resume_path))

    def _build_datasets(self) -> None:
        """Training and validation sets, untransformed (the training transforms need the
        model's normalization; validation images go to the Segmenter as uint8, as in
        ``atrous eval``); the class count and names."""
        cfg = self.cfg
        opts = cfg.dataset_options
        self.train_set = build_dataset(
            cfg.dataset, cfg.data_root, cfg.train_split, None, seed=cfg.seed, **opts
        )
        self.val_set = None
        if cfg.val_split:
            self.val_set = build_dataset(cfg.dataset, cfg.data_root, cfg.val_split, None, **opts)
        self.num_classes = cfg.num_classes or getattr(self.train_set, "num_classes", None)
        if not self.num_classes:
            raise ValueError("num_classes is not set and the dataset does not say it")
        names = list(getattr(self.train_set, "class_names", []) or [])
        if len(names) != self.num_classes:
            names = [f"class_{i}" for i in range(self.num_classes)]
        self.class_names = names
        if len(self.train_set) < cfg.batch_size * self.world:
            raise ValueError(
                f"the {cfg.train_split!r} split has {len(self.train_set)} images, fewer than "
                f"batch_size × processes = {cfg.batch_size * self.world}"
            )

    def _train_transforms(self, model: nn.Module) -> Any:
        """DeepLab's random scale / crop / flip (+ jitter), normalized by the model's
        weights (``model.metadata`` mean/std)."""
        cfg = self.cfg
        scale = tuple(cfg.scale_range) if cfg.scale_range else None
        mean, std = model.metadata["mean"], model.metadata["std"]
        return train_transforms(cfg.crop_size, scale, cfg.flip, cfg.color_jitter, mean, std)

    def _class_weights(self) -> list[float] | None:
        """The loss's class weights: the config's list, or computed (``median_freq``...) from
        the masks of the first ``class_weight_samples`` training images."""
        cw = self.cfg.class_weights
        if cw is None or isinstance(cw, list):
            if cw is not None and len(cw) != self.num_classes:
                raise ValueError(
                    f"class_weights has {len(cw)} values for {self.num_classes} classes"
                )
            return cw
        counts = np.zeros(self.num_classes, np.float64)
        image_px = np.zeros(self.num_classes, np.float64)
        for i in range(min(len(self.train_set), self.cfg.class_weight_samples)):
            m = np.asarray(self.train_set[i]["mask"]).ravel()
            c = np.bincount(m[m < self.num_classes], minlength=self.num_classes)
            counts += c
            image_px += (c > 0) * m.size
        w = class_weights_from_counts(counts, cw, image_counts=image_px).tolist()
        self.log.text(f"class weights ({cw}): {[round(x, 3) for x in w]}")
        return w

    def _build_optimization(self) -> None:
        """SGD/AdamW with the head LR multiplier, poly LR with warm-up, AMP scaler."""
        cfg = self.cfg
        self.optimizer = build_optimizer(
            self.model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.head_lr_mult,
            cfg.no_decay_norm_bias, cfg.optimizer,
        )  # fmt: skip
        self.scheduler = PolyLR(
            self.optimizer, cfg.iterations, cfg.lr_power, cfg.warmup_iters, cfg.warmup_factor
        )
        fp16 = cfg.amp == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            self.amp_dtype = torch.bfloat16  # CPU autocast has no fp16 loss scaling

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "iteration": self.iteration,
            "total_iterations": self.total_iterations,
            "epoch": self.iteration * self.cfg.grad_accum // self.batches_per_epoch,
            "best_miou": self.best_miou,
            "elapsed": self._elapsed(),
            "skipped": dict(self.skips.skipped),
            "config": self.cfg.to_dict(),
            "class_names": self.class_names,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_miou = float(state.get("best_miou", -1.0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.skips.update(state.get("skipped", {}).items())
        # The schedule length follows the (possibly overridden) config; a time_limit run
        # keeps the length it had planned (checkpoints before 0.2 kept it in the config).
        if self.cfg.time_limit is not None:
            planned = state.get("total_iterations", state["config"]["iterations"])
            self._set_total(max(int(planned), self.iteration))
        else:
            self._set_total(self.cfg.iterations)
        set_rng_state(state["rng"])
        self.last_good = self.resume_path
        self.log.truncate_after(self.iteration)

    def _set_total(self, total: int) -> None:
        self.total_iterations = int(total)
        self.scheduler.max_iterations = self.total_iterations

    def save(self, name: str = "last.pt") -> Path | None:
        if not self.main:
            return None
        path = save_checkpoint(self.state_dict(), self.out / name)
        if name == "last.pt":
            self.last_good = path
        return path

    # ------------------------------------------------------------------ logging
    def log_text(self, msg: str) -> None:
        self.log.text(msg)

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.log.record(record)

    # ------------------------------------------------------------------ one step
    def _batches(self) -> Iterator[dict[str, Any]]:
        """Batches from the current position (iteration × grad_accum) onwards, forever."""
        consumed = self.iteration * self.cfg.grad_accum
        epoch, offset = divmod(consumed, self.batches_per_epoch)
        # An explicit generator keeps DataLoader from drawing on torch's global RNG, which
        # the model's dropout uses: that draw would differ between a run and its resume.
        gen = torch.Generator().manual_seed(self.cfg.seed)
        while True:
            self.sampler.set_epoch(epoch, offset * self.cfg.batch_size)
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(epoch)
            loader = DataLoader(
                self.train_set, self.cfg.batch_size, sampler=self.sampler, drop_last=True,
                num_workers=self.cfg.num_workers, collate_fn=collate, generator=gen,
                pin_memory=self.device.type == "cuda",
            )  # fmt: skip
            yield from loader
            epoch, offset = epoch + 1, 0

    def _next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next batch; bad samples the workers skipped are recorded here, in the main
        process (a DataLoader worker's own records die with it)."""
        t = time.perf_counter()
        batch = next(batches)
        self._data_wait += time.perf_counter() - t
        for path, problem in batch.get("skipped") or ():
            if self.skips.add(path, problem):
                self.log.text(f"skipped a bad sample: {path}: {problem}")
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
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        for micro in range(cfg.grad_accum):
            batch = self._next_batch(batches)
            x = batch["image"].to(self.device, non_blocking=True).float()
            y = batch["mask"].to(self.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            last = micro == cfg.grad_accum - 1
            sync = self.ddp_model.no_sync() if self.world > 1 and not last else nullcontext()
            with sync:
                with autocast:
                    out = self.ddp_model(x)
                loss = self.criterion(out, y) / cfg.grad_accum
                value = global_mean(loss.detach())
                if not math.isfinite(value):
                    self._stop_non_finite(value)
                self.scaler.scale(loss).backward()
            total += value
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return total

    def _stop_non_finite(self, value: float) -> None:
        where = (
            f"the last good checkpoint {self.last_good} is intact"
            if self.last_good
            else "no checkpoint was written yet"
        )
        raise TrainingError(
            f"loss is {value} at iteration {self.iteration + 1} (lr "
            f"{self.scheduler.get_last_lr()[0]:.3g}); stopped without saving: {where}. "
            "Lower lr, add warmup_iters, or check the data for bad labels."
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Validation mIoU with the evaluation module's confusion matrix at ``eval_scales``
        against full-resolution labels (what ``atrous eval`` reports), plus sample
        predictions for TensorBoard."""
        if self.val_set is None:
            return {}
        t0 = time.perf_counter()
        result = validate_model(
            self.model, self.val_set, self.num_classes, tuple(self.cfg.eval_scales),
            self.class_names, limit=self.cfg.val_max_images,
        )  # fmt: skip
        m = result.metrics
        metrics = {
            "miou": float(m.miou),
            "pixel_acc": float(m.pixel_accuracy),
            "mean_acc": float(m.mean_class_accuracy),
            "seconds": time.perf_counter() - t0,
        }
        for name, iou in zip(self.class_names, m.iou):
            if np.isfinite(iou):
                metrics[f"iou/{name}"] = float(iou)
        if self.log.writer(self.iteration) is not None and self.cfg.tb_images:
            palette = palette_for(self.num_classes, getattr(self.train_set, "palette", None))
            strips = prediction_strips(
                self.model, self.val_set, self.cfg.eval_scales, palette, self.cfg.tb_images
            )
            for i, strip in strips:
                self.log.image(f"val/{i}", strip, self.iteration)
        self._train_mode()
        return metrics

    def _estimate_val_seconds(self) -> float:
        if self.val_set is None or not self.main:
            return 0.0
        seconds = estimate_validation_seconds(
            self.model, self.val_set, self.cfg.eval_scales, self.cfg.val_max_images
        )
        self._train_mode()
        return seconds

    # ------------------------------------------------------------------ the loop
    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run until :attr:`total_iterations` (or ``stop_at``, to simulate an interruption),
        the ``time_limit`` or a Ctrl-C (which saves ``last.pt`` to ``--resume`` from);
        returns the last logged record."""
        loop = _LoopState(self, stop_at)
        batches = self._begin()
        try:
            while self.iteration < loop.end():
                try:
                    loss = self._step(batches)
                except Exception:
                    if self._stop_requested:  # a DataLoader worker killed by the same Ctrl-C
                        break
                    raise
                loop.after_step(loss)
                if self.iteration % self.cfg.log_every == 0 or self.iteration == loop.end():
                    loop.log_training()
                if (
                    self.iteration % self.cfg.val_every == 0
                    or self.iteration == self.total_iterations
                ):
                    loop.validate()
                if self.iteration % self.cfg.ckpt_every == 0 or self.iteration == loop.end():
                    self.save("last.pt")
                if self._stop_requested:
                    self.save("last.pt")
                    self.log.text(f"stopped at iteration {self.iteration}; resume with --resume")
                    break
        finally:
            self._end(loop)
        if self.iteration >= self.total_iterations and not self._stop_requested:
            self.export()
            if self.cfg.val_split:
                self.plot_curve()
        return loop.record

    def _begin(self) -> Iterator[dict[str, Any]]:
        """Write config.json (rank 0), enter train mode, catch Ctrl-C, start the clock."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.cfg.to_dict(), indent=2) + "\n"
            (self.out / "config.json").write_text(text)
        self._train_mode()
        self._old_sigint = None
        if self.world == 1 and threading.current_thread() is threading.main_thread():
            self._old_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        self._t_start = time.perf_counter()
        return self._batches()

    def _end(self, loop: _LoopState) -> None:
        if self._old_sigint is not None:
            signal.signal(signal.SIGINT, self._old_sigint)
        loop.close()
        self.elapsed, self._t_start = self._elapsed(), None
        self.log.flush()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self.log.text("\ninterrupt: finishing this iteration and saving last.pt "
                      "(press Ctrl-C again to abort without saving)")  # fmt: skip

    def _elapsed(self) -> float:
        """Training wall time so far, over all resumed segments (seconds)."""
        if self._t_start is None:
            return self.elapsed
        return self.elapsed + time.perf_counter() - self._t_start

    # ------------------------------------------------------------------ outputs
    def plot_curve(self) -> Path | None:
        """``learning_curve.png``: training loss and validation mIoU against iterations."""
        if not self.main or not self.log.metrics_path.is_file():
            return None
        return plot_learning_curve(self.log.metrics_path, self.out / "learning_curve.png")

    def export(self, path: str | os.PathLike | None = None) -> Path | None:
        """Final weights as safetensors with class names (:func:`atrous.weights.save`)."""
        if not self.main:
            return None
        from atrous.weights import save

        return save(
            self.model, Path(path) if path else self.out / "model.safetensors",
            class_names=self.class_names,
            extra={"training_iterations": str(self.iteration),
                   "best_val_miou": str(self.best_miou),
                   "inference_scales": json.dumps([float(x) for x in self.cfg.eval_scales])},
        )  # fmt: skip


class _LoopState:
    """What :meth:`Trainer.train` tracks between steps in one process: the smoothed loss, the
    progress bar, the speed and data-wait of the current log interval, time spent validating,
    and the time budget."""

    def __init__(self, trainer: Trainer, stop_at: int | None) -> None:
        self.t = trainer
        self.stop_at = stop_at
        self.record: dict[str, Any] = {}
        self.smooth: float | None = None
        self.first = trainer.iteration
        self.t_log, self.it_log = time.perf_counter(), trainer.iteration
        self.t_val = 0.0  # seconds spent validating in this process
        cfg = trainer.cfg
        self.budget = TimeBudget(cfg.time_limit, cfg.val_every) if cfg.time_limit else None
        self.val_seconds = trainer._estimate_val_seconds() if self.budget else 0.0
        self.bar = None
        if trainer.main and trainer.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.total_iterations, initial=trainer.iteration,
                            desc="train", unit="it")  # fmt: skip

    def end(self) -> int:
        """The iteration this call of ``train`` stops at."""
        return min(self.t.total_iterations, self.stop_at or self.t.total_iterations)

    def after_step(self, loss: float) -> None:
        """Smooth the loss, re-plan the time budget, advance the bar."""
        t = self.t
        self.loss = loss
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        it = t.iteration
        if self.budget is not None and (it % t.cfg.log_every == 0 or it - self.first <= 5):
            train_s = time.perf_counter() - t._t_start - self.t_val
            total = self.budget.fit(train_s, it, t._elapsed(), self.val_seconds)
            if total is not None:
                t._set_total(total)
                if self.bar is not None:
                    self.bar.total = total
        if self.bar is not None:
            self.bar.update(1)
            lr = t.scheduler.get_last_lr()[0]
            self.bar.set_postfix(loss=f"{self.smooth:.4f}", lr=f"{lr:.2e}")

    def log_training(self) -> None:
        """A metrics.jsonl record: loss (and its parts), LR, images/s, data-wait share."""
        t = self.t
        now = time.perf_counter()
        dt = max(now - self.t_log, 1e-9)
        cfg = t.cfg
        ips = (t.iteration - self.it_log) * cfg.batch_size * cfg.grad_accum * t.world / dt
        wait, t._data_wait = t._data_wait, 0.0
        self.t_log, self.it_log = now, t.iteration
        self.record = {
            "iteration": t.iteration, "loss": self.loss, "lr": t.scheduler.get_last_lr()[0],
            "images_per_s": ips, "data_wait_frac": wait / dt,
            "elapsed_s": round(t._elapsed(), 1),
            **{f"loss_{k}": v for k, v in t.criterion.parts.items()},
        }  # fmt: skip
        t.log.record(self.record)

    def validate(self) -> None:
        """Validate (rank 0), log, keep ``best.pt`` and the curve; excluded from speed."""
        t = self.t
        tv = time.perf_counter()
        metrics = t.validate() if t.main else {}
        if metrics:
            self.val_seconds = metrics.pop("seconds")
            self.record = {"iteration": t.iteration, "elapsed_s": round(t._elapsed(), 1),
                           **{f"val_{k}": v for k, v in metrics.items()}}  # fmt: skip
            t.log.record(self.record)
            t.log.text(f"iteration {t.iteration}: val mIoU {metrics['miou']:.4f}")
            if metrics["miou"] > t.best_miou:
                t.best_miou = metrics["miou"]
                t.save("best.pt")
            t.plot_curve()
        self.t_val += time.perf_counter() - tv
        self.t_log, self.it_log, t._data_wait = time.perf_counter(), t.iteration, 0.0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
