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


def make_segmenter(model: nn.Module, num_classes: int, scales: tuple[float, ...]) -> Any:
    """The :class:`atrous.inference.Segmenter` validation uses: batch 1 at ``scales``; a
    CRF-as-RNN model's learned CRF runs once on the scale-averaged probabilities, as in
    ``atrous eval``."""
    from atrous.crf.rnn_model import split_crf
    from atrous.inference import Segmenter

    net, crf = split_crf(model)
    device = next(model.parameters()).device
    return Segmenter(
        net, num_classes=num_classes, scales=scales, batch_size=1, device=device, crf=crf
    )


def validate_model(
    model: nn.Module,
    dataset: Any,
    num_classes: int,
    scales: tuple[float, ...] = (1.0,),
    class_names: list[str] | None = None,
    limit: int | None = None,
) -> Any:
    """Evaluate ``model`` on ``dataset`` (items with uint8 "image" and "mask", untransformed)
    the way ``atrous eval`` does: :class:`atrous.inference.Segmenter` at ``scales``, scored
    against the full-resolution labels with :class:`atrous.evaluation.ConfusionMatrix`
    (ignore 255). Returns an :class:`atrous.evaluation.EvalResult`; the model is left in
    eval mode."""
    from atrous.evaluation import evaluate

    seg = make_segmenter(model, num_classes, scales)
    return evaluate(
        seg, dataset, num_classes, class_names=class_names, trimap_widths=None, limit=limit
    )


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


def _tb_tag(key: str) -> str:
    """metrics.jsonl key -> TensorBoard tag: ``val_miou`` -> ``val/miou``."""
    for prefix in ("val_", "loss_"):
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix) :]
    return "train/" + key


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
        self.elapsed = 0.0  # training seconds before this process (time_limit runs)
        self._t_start: float | None = None  # perf_counter() when this process's loop began
        self.best_miou = -1.0
        self._stop_requested = False
        self._tb: Any = None
        self._data_wait = 0.0  # seconds spent waiting for batches since the last log
        self._speed_hist: list[tuple[float, int]] = []  # (train seconds, iteration) samples
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
        from atrous.data import build_dataset, train_transforms

        scale = tuple(cfg.scale_range) if cfg.scale_range else None
        tt = train_transforms(cfg.crop_size, scale, cfg.flip, cfg.color_jitter)
        self.train_set = build_dataset(
            cfg.dataset, cfg.data_root, cfg.train_split, tt, seed=cfg.seed, **cfg.dataset_options
        )
        self.val_set: Dataset | None = None
        if cfg.val_split:  # untransformed: the Segmenter normalizes, as in ``atrous eval``
            self.val_set = build_dataset(
                cfg.dataset, cfg.data_root, cfg.val_split, None, **cfg.dataset_options
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
        if cfg.sync_bn:
            if self.device.type != "cuda":
                raise ValueError(
                    "sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                    "on CPU use model_options.norm=gn or freeze_bn=true"
                )
            if self.world > 1:  # one process: plain BatchNorm is the same thing
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.ddp_model: nn.Module = self.model
        if self.world > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            mode = cfg.compile if isinstance(cfg.compile, str) else None
            # compiled wrapper shares the parameters; checkpoints keep self.model's names
            self.ddp_model = torch.compile(self.ddp_model, mode=mode, backend=cfg.compile_backend)
        self.criterion = SegmentationLoss(
            weight=self._class_weights(),
            ohem_top_k=cfg.ohem_top_k if cfg.loss == "ohem" else None,
            region=cfg.region_loss,
            region_weight=cfg.region_weight,
            aux_weight=cfg.aux_weight,
        ).to(self.device)
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
            meta = model.metadata
            n_model = len(model.state_dict())
            n_loaded = n_model - len(meta["reinitialized"]) - len(meta["missing_keys"])
            self.log_text(
                f"fine-tuning from {cfg.weights} ({meta['source']} format): loaded "
                f"{n_loaded}/{n_model} tensors; re-initialized for {self.num_classes} classes: "
                f"{meta['reinitialized'] or 'none'}; missing (left at init): "
                f"{meta['missing_keys'] or 'none'}; unexpected (ignored): "
                f"{meta['unexpected_keys'] or 'none'}"
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
            "elapsed": self._elapsed(),
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
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.cfg.time_limit is not None:  # the re-estimated length, not the config's
            self.cfg.iterations = max(int(state["config"]["iterations"]), self.iteration)
            self.scheduler.max_iterations = self.cfg.iterations
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
            tb = self._writer()
            if tb is not None:
                it = record["iteration"]
                for k, v in record.items():
                    if k != "iteration" and isinstance(v, (int, float)):
                        tb.add_scalar(_tb_tag(k), v, it)

    def _writer(self) -> Any:
        """TensorBoard writer under ``<out>/tensorboard`` (rank 0, ``tensorboard: true``)."""
        if self._tb is None and self.main and self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.iteration + 1)
        return self._tb

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
            t_data = time.perf_counter()
            batch = next(batches)
            self._data_wait += time.perf_counter() - t_data
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
        self._tb_samples()
        self._train_mode()
        return metrics

    def _tb_samples(self) -> None:
        """Image | ground truth | prediction strips of the first ``tb_images`` val images."""
        tb = self._writer()
        if tb is None or not self.cfg.tb_images or self.val_set is None:
            return
        from atrous.data.palettes import colorize

        seg = make_segmenter(self.model, self.num_classes, tuple(self.cfg.eval_scales))
        palette = getattr(self.train_set, "palette", None)
        if palette is None:
            from atrous.data.palettes import voc_colormap

            palette = voc_colormap(max(self.num_classes, 1))
        for i in range(min(self.cfg.tb_images, len(self.val_set))):
            item = self.val_set[i]
            image = np.asarray(item["image"])
            pred = seg.predict(image)
            strip = np.concatenate(
                [image, colorize(np.asarray(item["mask"]), palette), colorize(pred, palette)],
                axis=1,
            )
            tb.add_image(f"val/{i}", strip, self.iteration, dataformats="HWC")

    def _elapsed(self) -> float:
        """Training wall time so far, over all resumed segments (seconds)."""
        if self._t_start is None:
            return self.elapsed
        return self.elapsed + time.perf_counter() - self._t_start

    def _fit_time_limit(self, t_train: float, val_seconds: float) -> None:
        """Re-estimate the run length so that training, the remaining validations and the
        final one end at ``time_limit``: the poly schedule then decays to zero on time.

        ``t_train`` is the training time so far in this process (validations excluded); the
        speed is taken over the most recent ~10 fits, so a slow start (another job on the
        machine, warm-up) does not shorten the whole run."""
        cfg = self.cfg
        hist = self._speed_hist
        hist.append((t_train, self.iteration))
        del hist[:-10]
        (t_a, it_a), (t_b, it_b) = hist[0], hist[-1]
        if cfg.time_limit is None or it_b - it_a < 5:
            return
        per_it = (t_b - t_a) / (it_b - it_a)
        left = cfg.time_limit * 60.0 - self._elapsed()
        # each remaining validation (and the final one) costs ~val_seconds
        n_val = 1 + (left / per_it) / cfg.val_every
        its = max(0.0, (left - n_val * val_seconds) / per_it)
        total = max(self.iteration + 1, self.iteration + int(its))
        cfg.iterations = total
        self.scheduler.max_iterations = total

    def _estimate_val_seconds(self) -> float:
        """Time of one validation, from one timed image (for planning a ``time_limit`` run
        before the first validation has been measured)."""
        if self.val_set is None or not self.main:
            return 0.0
        n = len(self.val_set)
        if self.cfg.val_max_images:
            n = min(n, self.cfg.val_max_images)
        seg = make_segmenter(self.model, self.num_classes, tuple(self.cfg.eval_scales))
        image = np.asarray(self.val_set[0]["image"])
        seg.predict(image)  # warm-up
        t = time.perf_counter()
        seg.predict(image)
        seconds = (time.perf_counter() - t) * n
        self._train_mode()
        return seconds

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self.log_text("\ninterrupt: finishing this iteration and saving last.pt "
                      "(press Ctrl-C again to abort without saving)")  # fmt: skip

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run until ``cfg.iterations`` (or ``stop_at``, to simulate an interruption), the
        ``time_limit`` or a Ctrl-C (which saves ``last.pt`` to ``--resume`` from); returns
        the last logged record."""
        import signal
        import threading

        cfg = self.cfg
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        self._train_mode()
        batches = self._batches()
        old_handler = None
        if self.world == 1 and threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        bar = None
        if self.main and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="train", unit="it")
        record: dict[str, Any] = {}
        self._t_start = time.perf_counter()
        it0, smooth = self.iteration, None
        t_log, it_log = self._t_start, self.iteration  # speed over the last log interval
        t_val = 0.0  # seconds spent validating in this process
        val_seconds = self._estimate_val_seconds() if cfg.time_limit is not None else 0.0
        try:
            while self.iteration < min(cfg.iterations, stop_at or cfg.iterations):
                try:
                    loss = self._step(batches)
                except Exception:
                    if self._stop_requested:  # a DataLoader worker killed by the same Ctrl-C
                        break
                    raise
                smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
                lr = self.scheduler.get_last_lr()[0]
                it = self.iteration
                if cfg.time_limit is not None and (it % cfg.log_every == 0 or it - it0 <= 5):
                    self._fit_time_limit(time.perf_counter() - self._t_start - t_val, val_seconds)
                    if bar is not None:
                        bar.total = cfg.iterations
                end = min(cfg.iterations, stop_at or cfg.iterations)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{lr:.2e}")
                if it % cfg.log_every == 0 or it == end:
                    now = time.perf_counter()
                    dt = max(now - t_log, 1e-9)
                    ips = (it - it_log) * cfg.batch_size * cfg.grad_accum * self.world / dt
                    wait, self._data_wait = self._data_wait, 0.0
                    t_log, it_log = now, it
                    record = {"iteration": it, "loss": loss, "lr": lr, "images_per_s": ips,
                              "data_wait_frac": wait / dt,
                              "elapsed_s": round(self._elapsed(), 1),
                              **{f"loss_{k}": v for k, v in self.criterion.parts.items()}}  # fmt: skip
                    self.log_metrics(record)
                if it % cfg.val_every == 0 or it == cfg.iterations:
                    tv = time.perf_counter()
                    metrics = self.validate() if self.main else {}
                    if metrics:
                        val_seconds = metrics.pop("seconds")
                        record = {"iteration": it, "elapsed_s": round(self._elapsed(), 1),
                                  **{f"val_{k}": v for k, v in metrics.items()}}  # fmt: skip
                        self.log_metrics(record)
                        self.log_text(f"iteration {it}: val mIoU {metrics['miou']:.4f}")
                        if metrics["miou"] > self.best_miou:
                            self.best_miou = metrics["miou"]
                            self.save("best.pt")
                        self.plot_curve()
                    t_val += time.perf_counter() - tv
                    t_log, it_log, self._data_wait = time.perf_counter(), it, 0.0
                if it % cfg.ckpt_every == 0 or it == end:
                    self.save("last.pt")
                if self._stop_requested:
                    self.save("last.pt")
                    self.log_text(f"stopped at iteration {it}; resume with --resume")
                    break
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if bar is not None:
                bar.close()
            self.elapsed, self._t_start = self._elapsed(), None
            if self._tb is not None:
                self._tb.flush()
        if self.iteration >= cfg.iterations and not self._stop_requested:
            self.export()
            if self.main and self.cfg.val_split:
                self.plot_curve()
        return record

    def plot_curve(self) -> Path | None:
        """``learning_curve.png``: training loss and validation mIoU against iterations."""
        if not self.main or not (self.out / "metrics.jsonl").is_file():
            return None
        from atrous.training.curve import plot_learning_curve

        return plot_learning_curve(self.out / "metrics.jsonl", self.out / "learning_curve.png")

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
