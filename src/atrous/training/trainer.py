"""The training loop of ``atrous train``: DeepLab's recipe in one process, DDP-ready.

One iteration = ``grad_accum`` batches of ``batch_size`` crops, one SGD step and one poly LR
step. Data order is a function of (seed, epoch) only and every RNG is checkpointed, so a run
resumed from ``last.pt`` reproduces the uninterrupted one. torch.distributed is used only
when a process group is initialized (torchrun): each rank reads its shard of every epoch,
gradients are averaged by DDP, and rank 0 alone logs and writes files.
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
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from atrous.losses import SegmentationLoss, class_weights_from_counts
from atrous.training.checkpoint import (
    TrainingError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from atrous.training.config import TrainConfig
from atrous.training.optim import PolyLR, build_optimizer


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation drawn from ``seed + epoch`` (as
    ``DistributedSampler``), padded to a multiple of ``world`` and sharded by ``rank``,
    starting at position ``start`` of this rank's shard (to resume mid-epoch)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        perm += perm[: self.per_rank * self.world - self.n]
        return iter(perm[self.rank :: self.world][self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _validate(model: nn.Module, loader: DataLoader, num_classes: int) -> dict[str, float]:
    """mIoU and pixel accuracy over ``loader`` (full-resolution images, batch 1) from a
    confusion matrix, ignoring label 255. Kept tiny so atrous.evaluation can replace it."""
    device = next(model.parameters()).device
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            pred = model(batch["image"].to(device).float())["out"].argmax(1).cpu()
            gt = batch["mask"]
            keep = gt != 255
            idx = gt[keep] * num_classes + pred[keep]
            conf += torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)
    model.train(was_training)
    tp = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - tp
    present = union > 0
    iou = tp[present] / union[present]
    total = conf.sum().item()
    return {
        "miou": float(iou.mean()) if present.any() else 0.0,
        "pixel_acc": float(tp.sum() / total) if total else 0.0,
    }


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm in eval mode with frozen affine parameters (DeepLab v2 §4, v3 §4
    second stage); returns how many were frozen. Call again after each ``model.train()``."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            n += 1
    return n


class Trainer:
    """Train a DeepLab model per a :class:`TrainConfig`, writing into ``out_dir``:
    ``last.pt`` / ``best.pt`` (resumable), ``model.safetensors`` (final weights),
    ``metrics.jsonl`` and ``config.json``."""

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
        self.rank, self.world = _dist_info()
        self.main = self.rank == 0
        self.device = self._device()
        self.resume_path: Path | None = None
        if resume:
            self.resume_path = self.out / "last.pt" if resume is True else Path(resume)
            if not self.resume_path.is_file():
                raise FileNotFoundError(f"{self.resume_path}: no checkpoint to resume from")
        self.iteration = 0
        self.best_miou = -1.0
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
        from atrous.data import build_dataset, eval_transforms, train_transforms

        scale = tuple(cfg.scale_range) if cfg.scale_range else None
        tt = train_transforms(cfg.crop_size, scale, cfg.flip, cfg.color_jitter)
        self.train_set = build_dataset(
            cfg.dataset, cfg.data_root, cfg.train_split, tt, seed=cfg.seed, **cfg.dataset_options
        )
        self.val_set: Dataset | None = None
        if cfg.val_split:
            self.val_set = build_dataset(
                cfg.dataset, cfg.data_root, cfg.val_split, eval_transforms(), **cfg.dataset_options
            )
        self.class_names = list(getattr(self.train_set, "class_names", []) or [])
        self.num_classes = cfg.num_classes or getattr(self.train_set, "num_classes", None)
        if not self.num_classes:
            raise ValueError("num_classes is not set and the dataset does not say it")
        if len(self.class_names) != self.num_classes:
            self.class_names = [f"class_{i}" for i in range(self.num_classes)]
        if len(self.train_set) < cfg.batch_size * self.world:
            raise ValueError(
                f"the {cfg.train_split!r} split has {len(self.train_set)} images, fewer than "
                f"batch_size × processes = {cfg.batch_size * self.world}"
            )

        from atrous.crf.rnn_model import with_crf_rnn

        # crf_rnn: the CRF-as-RNN layer is part of the model (loss on its output; exported).
        self.model = with_crf_rnn(self._build_model(), cfg.crf_rnn).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.freeze_bn:
            freeze_batchnorm(self.model)
        self.ddp_model: nn.Module = self.model
        if self.world > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.criterion = SegmentationLoss(
            weight=self._class_weights(),
            ohem_top_k=cfg.ohem_top_k if cfg.loss == "ohem" else None,
            region=cfg.region_loss,
            region_weight=cfg.region_weight,
            aux_weight=cfg.aux_weight,
        ).to(self.device)
        self.optimizer = build_optimizer(
            self.model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.head_lr_mult,
            cfg.no_decay_norm_bias,
        )  # fmt: skip
        self.scheduler = PolyLR(
            self.optimizer, cfg.iterations, cfg.lr_power, cfg.warmup_iters, cfg.warmup_factor
        )
        fp16 = cfg.amp == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            self.amp_dtype = torch.bfloat16  # CPU autocast has no fp16 loss scaling

        self.sampler = EpochSampler(len(self.train_set), cfg.seed, self.rank, self.world)
        self.batches_per_epoch = self.sampler.per_rank // cfg.batch_size
        if self.resume_path is not None:
            self._load_state(load_checkpoint(self.resume_path))

    def _build_model(self) -> nn.Module:
        from atrous.models import build

        cfg = self.cfg
        kw: dict[str, Any] = {"num_classes": self.num_classes, "aux": cfg.aux}
        if cfg.output_stride:
            kw["output_stride"] = cfg.output_stride
        if cfg.weights:
            from atrous.weights import load

            model = load(cfg.weights, arch=cfg.model, strict=False, **kw, **cfg.model_options)
            self.log_text(
                f"fine-tuning from {cfg.weights}: re-initialized {model.metadata['reinitialized']},"
                f" missing {len(model.metadata['missing_keys'])} key(s), unexpected "
                f"{len(model.metadata['unexpected_keys'])}"
            )
            return model.train()
        opts = dict(cfg.model_options)
        if cfg.pretrained_backbone:
            opts["pretrained_backbone"] = cfg.pretrained_backbone
        return build(cfg.model, **kw, **opts)

    def _class_weights(self) -> list[float] | None:
        cw = self.cfg.class_weights
        if cw is None or isinstance(cw, list):
            if cw is not None and len(cw) != self.num_classes:
                raise ValueError(
                    f"class_weights has {len(cw)} values for {self.num_classes} classes"
                )
            return cw
        # Frequencies from the untransformed masks of (a prefix of) the training split.
        from atrous.data import build_dataset

        ds = build_dataset(
            self.cfg.dataset, self.cfg.data_root, self.cfg.train_split, **self.cfg.dataset_options
        )
        counts = np.zeros(self.num_classes, np.float64)
        image_px = np.zeros(self.num_classes, np.float64)
        for i in range(min(len(ds), self.cfg.class_weight_samples)):
            m = np.asarray(ds[i]["mask"]).ravel()
            c = np.bincount(m[m < self.num_classes], minlength=self.num_classes)
            counts += c
            image_px += (c > 0) * m.size
        w = class_weights_from_counts(counts, cw, image_counts=image_px).tolist()
        self.log_text(f"class weights ({cw}): {[round(x, 3) for x in w]}")
        return w

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "iteration": self.iteration,
            "epoch": self.iteration * self.cfg.grad_accum // self.batches_per_epoch,
            "best_miou": self.best_miou,
            "config": self.cfg.to_dict(),
            "class_names": self.class_names,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # The schedule length follows the (possibly overridden) config, not the checkpoint.
        self.scheduler.max_iterations = self.cfg.iterations
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_miou = float(state.get("best_miou", -1.0))
        set_rng_state(state["rng"])
        self.last_good = self.resume_path
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop records logged after the checkpoint (a crash between a log and the next
        checkpoint): the resumed run logs those iterations again."""
        path = self.out / "metrics.jsonl"
        if not self.main or not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= self.iteration:
                    keep.append(line)
            except json.JSONDecodeError:  # a line cut by the crash
                continue
        path.write_text("".join(x + "\n" for x in keep))

    def save(self, name: str = "last.pt") -> Path | None:
        if not self.main:
            return None
        path = save_checkpoint(self.state_dict(), self.out / name)
        if name == "last.pt":
            self.last_good = path
        return path

    # ------------------------------------------------------------------ logging
    def log_text(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)

    def log_metrics(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[dict[str, Any]]:
        """Batches from the current position (iteration × grad_accum) onwards, forever."""
        from atrous.data import collate

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

    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_bn:
            freeze_batchnorm(self.model)

    def _step(self, batches: Iterator[dict[str, Any]]) -> float:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            x = batch["image"].to(self.device, non_blocking=True).float()
            y = batch["mask"].to(self.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sync = (
                self.ddp_model.no_sync()
                if self.world > 1 and micro < cfg.grad_accum - 1
                else nullcontext()
            )
            with sync:
                with autocast:
                    out = self.ddp_model(x)
                loss = self.criterion(out, y) / cfg.grad_accum
                value = self._global_mean(loss.detach())
                if not math.isfinite(value):
                    self._stop_non_finite(value)
                self.scaler.scale(loss).backward()
            total += value
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return total

    def _global_mean(self, value: torch.Tensor) -> float:
        """The loss averaged over processes: what a single process with the global batch
        would log, and the same non-finite verdict on every rank."""
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world
        return float(value)

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

    def _val_loader(self) -> DataLoader | None:
        if self.val_set is None:
            return None
        from atrous.data import collate

        ds: Dataset = self.val_set
        if self.cfg.val_max_images:
            ds = torch.utils.data.Subset(ds, range(min(len(ds), self.cfg.val_max_images)))
        return DataLoader(ds, 1, shuffle=False, num_workers=0, collate_fn=collate)

    def validate(self) -> dict[str, float]:
        loader = self._val_loader()
        if loader is None:
            return {}
        metrics = _validate(self.model, loader, self.num_classes)
        self._train_mode()
        return metrics

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run until ``cfg.iterations`` (or ``stop_at``, to simulate an interruption);
        returns the last logged record."""
        cfg = self.cfg
        end = min(cfg.iterations, stop_at or cfg.iterations)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        self._train_mode()
        batches = self._batches()
        bar = None
        if self.main and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="train", unit="it")
        record: dict[str, Any] = {}
        t0, it0, smooth = time.perf_counter(), self.iteration, None
        while self.iteration < end:
            loss = self._step(batches)
            smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
            lr = self.scheduler.get_last_lr()[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{lr:.2e}")
            it = self.iteration
            if it % cfg.log_every == 0 or it == end:
                dt = time.perf_counter() - t0
                ips = (it - it0) * cfg.batch_size * cfg.grad_accum * self.world / max(dt, 1e-9)
                record = {"iteration": it, "loss": loss, "lr": lr, "images_per_s": ips,
                          **{f"loss_{k}": v for k, v in self.criterion.parts.items()}}  # fmt: skip
                self.log_metrics(record)
            if it % cfg.val_every == 0 or it == cfg.iterations:
                metrics = self.validate() if self.main else {}
                if metrics:
                    record = {"iteration": it, **{f"val_{k}": v for k, v in metrics.items()}}
                    self.log_metrics(record)
                    self.log_text(f"iteration {it}: val mIoU {metrics['miou']:.4f}")
                    if metrics["miou"] > self.best_miou:
                        self.best_miou = metrics["miou"]
                        self.save("best.pt")
            if it % cfg.ckpt_every == 0 or it == end:
                self.save("last.pt")
        if bar is not None:
            bar.close()
        if self.iteration >= cfg.iterations:
            self.export()
        return record

    def export(self, path: str | os.PathLike | None = None) -> Path | None:
        """Final weights as safetensors with class names (:func:`atrous.weights.save`)."""
        if not self.main:
            return None
        from atrous.weights import save

        return save(
            self.model, Path(path) if path else self.out / "model.safetensors",
            class_names=self.class_names,
            extra={"training_iterations": str(self.iteration),
                   "best_val_miou": str(self.best_miou)},
        )  # fmt: skip
