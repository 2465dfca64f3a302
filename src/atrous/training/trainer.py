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
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from atrous.constants import IGNORE_INDEX
from atrous.data import DatasetError, SkipReport, build_dataset, collate, train_transforms
from atrous.data.consistency import check_label_range
from atrous.data.palettes import palette_for
from atrous.failures import list_failures
from atrous.fileio import atomic_write_text
from atrous.inference.optimize import bf16_supported
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
from atrous.training.distributed import gather_skipped, global_mean, rank_and_world
from atrous.training.ema import WeightEMA
from atrous.training.model_setup import build_training_model, prepare_model
from atrous.training.optim import PolyLR, build_optimizer
from atrous.training.run_log import RunLog
from atrous.training.sampler import EpochSampler
from atrous.training.time_budget import TimeBudget, validation_share
from atrous.training.validation import (
    estimate_validation_seconds,
    prediction_strips,
    validate_model,
)

__all__ = ["Trainer"]


@contextmanager
def _quiet_dataset_skips() -> Iterator[None]:
    """Silence the datasets' own "skipping ..." warnings (DataLoader workers forked inside
    inherit the filter): the trainer reports each skipped sample itself, in one line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="skipping ", category=UserWarning)
        yield


def _preview(names: Iterable[str], limit: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


class Trainer:
    """Train a DeepLab model per a :class:`TrainConfig`, writing into ``out_dir``:
    ``last.pt`` / ``best.pt`` (resumable), ``model.safetensors`` (final weights),
    ``metrics.jsonl``, ``config.json`` and, when a call of :meth:`train` ends,
    ``summary.json`` (iterations, best mIoU and the ``skipped`` samples).

    A bad sample (training or validation) follows ``on_error``: ``"skip"`` reports it once
    (``atrous train: skipped PATH: PROBLEM``), trains on and lists it in :attr:`skips` and
    the summary; ``"raise"`` stops with a :class:`TrainingError` naming the file.

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
        with _quiet_dataset_skips():
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
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.criterion = SegmentationLoss(
            weight=weights,
            ohem_top_k=cfg.ohem_top_k if cfg.loss == "ohem" else None,
            region=cfg.region_loss,
            region_weight=cfg.region_weight,
            aux_weight=cfg.aux_weight,
            label_smoothing=cfg.label_smoothing,
        ).to(self.device)
        self._build_optimization()
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, self.rank, self.world)
        self.batches_per_epoch = self.sampler.per_rank // cfg.batch_size
        if self.resume_path is not None:
            self._load_state(load_checkpoint(self.resume_path))

    def _build_datasets(self) -> None:
        """Training and validation sets, untransformed (the training transforms need the
        model's normalization; validation images go to the Segmenter as uint8, as in
        ``atrous eval``); the class count and names, checked against the dataset."""
        cfg = self.cfg
        opts = dict(cfg.dataset_options)
        self.on_error = cfg.on_error
        train_opts = val_opts = opts
        if cfg.dataset.lower() != "synthetic":  # the synthetic set has nothing to skip
            self.on_error = opts.pop("on_error", cfg.on_error)
            if self.on_error not in ("skip", "raise"):
                raise ValueError(
                    f"dataset_options.on_error={self.on_error!r}: must be 'skip' or 'raise'"
                )
            # Training samples are always served under "skip", so that a bad file's record
            # travels out of the DataLoader worker; the trainer applies "raise" itself.
            train_opts = {**opts, "on_error": "skip"}
            val_opts = {**opts, "on_error": self.on_error}
        self.train_set = build_dataset(
            cfg.dataset, cfg.data_root, cfg.train_split, None, seed=cfg.seed, **train_opts
        )
        self.val_set = None
        if cfg.val_split:
            self.val_set = build_dataset(
                cfg.dataset, cfg.data_root, cfg.val_split, None, **val_opts
            )
        self.num_classes, self.class_names = self._classes()
        if len(self.train_set) < cfg.batch_size * self.world:
            raise ValueError(
                f"the {cfg.train_split!r} split has {len(self.train_set)} images, fewer than "
                f"batch_size × processes = {cfg.batch_size * self.world}"
            )

    def _classes(self) -> tuple[int, list[str]]:
        """The class count and names to train with: the dataset's, or the config's
        ``num_classes`` when it agrees with the dataset (or ``allow_num_classes_mismatch``
        and the masks stay in range). Names, palette and labels that disagree with the
        count are errors, not placeholder names."""
        cfg, ds = self.cfg, self.train_set
        opts = cfg.dataset_options
        where = f"the {cfg.dataset} dataset" + (f" at {cfg.data_root}" if cfg.data_root else "")
        ds_n = getattr(ds, "num_classes", None)
        names = list(getattr(ds, "class_names", []) or [])
        given = opts.get("class_names")
        if given is not None and "num_classes" in opts and len(given) != opts["num_classes"]:
            raise ValueError(
                f"dataset_options: class_names has {len(given)} names but num_classes is "
                f"{opts['num_classes']}; give one name per class"
            )
        if given is not None and cfg.num_classes and len(given) != cfg.num_classes:
            raise ValueError(
                f"dataset_options.class_names has {len(given)} names for num_classes="
                f"{cfg.num_classes}; give one name per class (or remove num_classes)"
            )
        if given is not None and ds_n:
            found = check_label_range(ds, ds_n)
            if not found.ok:
                raise ValueError(
                    f"dataset_options.class_names has {len(given)} names but {where} has "
                    f"{found.message()}; give one name per class"
                )
        palette = getattr(ds, "palette", None)
        if palette is not None and ds_n and len(np.asarray(palette).reshape(-1, 3)) < ds_n:
            raise ValueError(
                f"{where}: its palette has {len(np.asarray(palette).reshape(-1, 3))} colours "
                f"for {ds_n} classes; give one colour per class (dataset_options.palette)"
            )
        n = cfg.num_classes or ds_n
        if not n:
            raise ValueError(f"num_classes is not set and {where} does not say it; set it")
        if ds_n and n != ds_n:
            if not cfg.allow_num_classes_mismatch:
                raise ValueError(
                    f"num_classes={n} but {where} has {ds_n} classes ({_preview(names)}); "
                    "remove num_classes to use the dataset's, or set "
                    "allow_num_classes_mismatch: true"
                )
            if n < ds_n:
                found = check_label_range(ds, n)
                if not found.ok:
                    raise ValueError(
                        f"num_classes={n} (allow_num_classes_mismatch) but {where} has "
                        f"{found.message()}: those pixels would not be learned; use "
                        f"num_classes={ds_n} or map those labels to {IGNORE_INDEX}"
                    )
                names = names[:n]
                self.log.text(f"training {n} of the dataset's {ds_n} classes "
                              f"(allow_num_classes_mismatch): {_preview(names)}")  # fmt: skip
            else:
                extra = [f"class_{i}" for i in range(ds_n, n)]
                self.log.text(
                    f"num_classes={n} is more than the {ds_n} classes of {where} "
                    f"(allow_num_classes_mismatch): {_preview(extra)} never appear in its masks"
                )
                names = names + extra
        if len(names) != n:  # a dataset that gives no names
            names = [f"class_{i}" for i in range(n)]
            self.log.text(f"{where} names no classes: the model's are {_preview(names)}")
        elif getattr(ds, "placeholder_names", False):
            self.log.text(
                f"{where} names no classes (num_classes only): the model's are "
                f"{_preview(names)}; give dataset_options.class_names or a classes.txt"
            )
        return n, names

    def _train_transforms(self, model: nn.Module) -> Any:
        """DeepLab's random scale / crop / flip (+ jitter), normalized by the model's
        weights (``model.metadata`` mean/std)."""
        cfg = self.cfg
        scale = tuple(cfg.scale_range) if cfg.scale_range else None
        mean, std = model.metadata["mean"], model.metadata["std"]
        return train_transforms(
            cfg.crop_size, scale, cfg.flip, cfg.color_jitter, mean, std,
            class_balance=cfg.crop_class_balance, blur=cfg.blur,
        )  # fmt: skip

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
            sample = self.train_set[i]
            self._skipped(sample.get("skipped") or ())
            m = np.asarray(sample["mask"]).ravel()
            c = np.bincount(m[m < self.num_classes], minlength=self.num_classes)
            counts += c
            image_px += (c > 0) * m.size
        w = class_weights_from_counts(
            counts, cw, image_counts=image_px, cap=self.cfg.class_weight_cap
        ).tolist()
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
        if self.amp_dtype is torch.bfloat16 and self.device.type == "cpu" and not bf16_supported():
            self.log.text(
                f"amp={cfg.amp}: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so the "
                "bf16 step may be slower than fp32 here; measure, or set amp=none"
            )

    # ------------------------------------------------------------------ state
    @property
    def eval_model(self) -> nn.Module:
        """The weights validation sees and :meth:`export` writes: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        ema = {} if self.ema is None else {
            "model_ema": self.ema.module.state_dict(), "ema_updates": self.ema.updates,
        }  # fmt: skip
        return {
            **ema,
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
        if self.ema is not None:
            if "model_ema" in state:
                self.ema.module.load_state_dict(state["model_ema"])
                self.ema.updates = int(state["ema_updates"])
            else:  # a run without EMA resumed with it: the average starts from here
                self.ema = WeightEMA(self.model, self.ema.decay)
                self.log.text("the checkpoint holds no EMA weights: averaging starts now")
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
        self._skipped(batch.get("skipped") or ())
        return batch

    def _skipped(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Bad samples met (``(path, problem)``): under ``on_error: raise`` the first one
        stops training; under ``skip`` each is recorded and reported once."""
        for path, problem in pairs:
            if self.on_error == "raise":
                self._stop_bad_sample(path, problem)
            if self.skips.add(path, problem):
                self.log.text(f"atrous train: skipped {path}: {problem}")

    def _stop_bad_sample(self, path: str, problem: str) -> None:
        raise TrainingError(
            f"{path}: {problem}; training stopped (on_error: raise): fix or remove the file, "
            "or set on_error: skip to train without it"
        )

    def skip_summary(self) -> str:
        """One line listing the skipped samples (at most 20), "" when none."""
        n = len(self.skips)
        if not n:
            return ""
        where = f" (all in {self.out / 'summary.json'})" if self.main else ""
        listed = list_failures(self.skips.skipped.items())
        return f"atrous train: {n} bad sample(s) skipped{where}: {listed}"

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
        if self.ema is not None:
            self.ema.update(self.model)
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
        with self._val_samples():
            result = validate_model(
                self.eval_model, self.val_set, self.num_classes, tuple(self.cfg.eval_scales),
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
            with self._val_samples():
                strips = prediction_strips(
                    self.eval_model, self.val_set, self.cfg.eval_scales, palette, self.cfg.tb_images
                )
                for i, strip in strips:
                    self.log.image(f"val/{i}", strip, self.iteration)
        self._train_mode()
        return metrics

    @contextmanager
    def _val_samples(self) -> Iterator[None]:
        """Around a pass over the validation set: its bad items, skipped by the dataset
        (which serves the next good one), are counted and reported; under ``on_error:
        raise`` the dataset's error stops training as a one-line TrainingError."""
        try:
            with _quiet_dataset_skips():
                yield
        except DatasetError as e:
            self._stop_bad_sample(e.path, e.problem)
        report = getattr(self.val_set, "skip_report", None)
        if report is not None:
            self._skipped(list(report.skipped.items()))

    def _estimate_val_seconds(self) -> float:
        if self.val_set is None or not self.main:
            return 0.0
        with self._val_samples():
            seconds = estimate_validation_seconds(
                self.eval_model, self.val_set, self.cfg.eval_scales, self.cfg.val_max_images
            )
        self._train_mode()
        return seconds

    def val_images(self) -> int:
        """Images in one validation (``val_max_images`` of the validation split)."""
        if self.val_set is None:
            return 0
        n = len(self.val_set)
        return min(n, self.cfg.val_max_images) if self.cfg.val_max_images else n

    # ------------------------------------------------------------------ the loop
    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run until :attr:`total_iterations` (or ``stop_at``, to simulate an interruption),
        the ``time_limit`` or a Ctrl-C (which saves ``last.pt`` to ``--resume`` from);
        returns the last logged record."""
        with _quiet_dataset_skips():
            record = self._train(stop_at)
        if self.skips and self.main:
            self.log.text(self.skip_summary())
        return record

    def _train(self, stop_at: int | None) -> dict[str, Any]:
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
        self.skips.update(gather_skipped(self.skips.skipped).items())  # every rank's
        complete = self.iteration >= self.total_iterations and not self._stop_requested
        if complete:
            self.export()
            if self.cfg.val_split:
                self.plot_curve()
        self.write_summary(loop.record, complete)
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
    def write_summary(self, record: dict[str, Any], complete: bool) -> Path | None:
        """``summary.json``: how the run (so far) went, with the bad samples skipped (over
        all resumed segments) as ``skipped: [{"item": path, "problem": ...}]``."""
        if not self.main:
            return None
        summary = {
            "complete": complete,
            "iterations": self.iteration,
            "total_iterations": self.total_iterations,
            "elapsed_s": round(self._elapsed(), 1),
            "best_val_miou": self.best_miou if self.best_miou >= 0 else None,
            "last": record,
            "skipped": [{"item": p, "problem": why} for p, why in self.skips.skipped.items()],
        }
        return atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")

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
            self.eval_model, Path(path) if path else self.out / "model.safetensors",
            class_names=self.class_names,
            extra={"training_iterations": str(self.iteration),
                   "best_val_miou": str(self.best_miou),
                   "inference_scales": json.dumps([float(x) for x in self.cfg.eval_scales])},
        )  # fmt: skip


class _LoopState:
    """What :meth:`Trainer.train` tracks between steps in one process: the smoothed loss, the
    progress bar, the speed and data-wait of the current log interval, time spent validating,
    and the time budget.

    The bar counts iterations; under ``time_limit`` it counts the budget's seconds instead
    (the iteration count is re-planned as the run goes, shown as ``it 120/873``), so its ETA
    is the budget left."""

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
        self.val_seconds = trainer._estimate_val_seconds()
        self.val_said = not trainer.main or trainer.val_set is None or self.val_seconds <= 0
        self.bar = None
        if trainer.main and trainer.progress:
            self.bar = self._make_bar()
            trainer.log.bar = self.bar

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        t = self.t
        if self.budget is None:
            return tqdm(total=t.total_iterations, initial=t.iteration, desc="train", unit="it")
        total = self.budget.seconds
        return tqdm(
            total=total, initial=min(t.elapsed, total), desc="train", unit="s",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
            "[{elapsed}<{remaining}{postfix}]",
        )  # fmt: skip

    def end(self) -> int:
        """The iteration this call of ``train`` stops at."""
        return min(self.t.total_iterations, self.stop_at or self.t.total_iterations)

    def _train_seconds(self) -> float:
        """Training seconds of this process so far, validation excluded."""
        return time.perf_counter() - self.t._t_start - self.t_val

    def after_step(self, loss: float) -> None:
        """Smooth the loss, re-plan the time budget, advance the bar."""
        t = self.t
        self.loss = loss
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        it = t.iteration
        if self.budget is not None and (it % t.cfg.log_every == 0 or it - self.first <= 5):
            total = self.budget.fit(self._train_seconds(), it, t._elapsed(), self.val_seconds)
            if total is not None:
                t._set_total(total)
        if not self.val_said and it - self.first >= 5:
            self.say_validation()
        if self.bar is not None:
            lr = t.scheduler.get_last_lr()[0]
            post = {"loss": f"{self.smooth:.4f}", "lr": f"{lr:.2e}"}
            if self.budget is None:
                self.bar.update(1)
            else:
                post = {"it": f"{it}/{t.total_iterations}", **post}
                self.bar.update(min(t._elapsed(), self.budget.seconds) - self.bar.n)
            self.bar.set_postfix(post)

    def say_validation(self) -> None:
        """Log what validation will cost: its images, interval, the estimated seconds of one
        and its share of the run at the speed measured so far (once, before the first
        validation)."""
        t = self.t
        self.val_said = True
        done = t.iteration - self.first
        if done <= 0:
            return
        per_it = self._train_seconds() / done
        budget_left = self.budget.seconds - t._elapsed() if self.budget is not None else None
        share = validation_share(self.val_seconds, per_it, t.iteration, t.total_iterations,
                                 t.cfg.val_every, budget_left)  # fmt: skip
        s = self.val_seconds
        secs = f"{s:.0f}" if s >= 10 else f"{s:.2g}"
        t.log.text(
            f"validation: ~{t.val_images()} images every {t.cfg.val_every} iterations, "
            f"estimated ~{secs} s each ({100 * share:.0f}% of the run)"
        )

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
        if not self.val_said:
            self.say_validation()
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
            self.t.log.bar = None
