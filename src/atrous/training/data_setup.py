"""A training run's data: the training and validation sets, the class count and names they
imply, the loss's class weights, the training transforms and the stream of training batches.

The sets are built untransformed: the training transforms need the model's normalization
(:func:`training_transforms`, attached once the model exists), and validation images go to
the Segmenter as uint8, as in ``atrous eval``. The class rules: the dataset's count and
names, or the config's ``num_classes`` where it agrees (or ``allow_num_classes_mismatch``
and the masks stay in range). Names, palette and labels that disagree with the count are
errors, not placeholder names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from atrous.constants import IGNORE_INDEX
from atrous.data import build_dataset, collate, train_transforms
from atrous.data.consistency import check_label_range
from atrous.losses import class_weights_from_counts
from atrous.training.config import ON_ERROR, TrainConfig
from atrous.training.interrupt import ignore_sigint
from atrous.training.sampler import EpochSampler

__all__ = [
    "TrainingData",
    "build_training_data",
    "class_weights",
    "resolve_classes",
    "train_batches",
    "training_transforms",
]

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainingData:
    """The datasets of a run (untransformed), its classes and its bad-sample policy."""

    train_set: Any
    val_set: Any | None
    num_classes: int
    class_names: list[str]
    on_error: str  # "skip" | "raise", for training and validation samples


def build_training_data(cfg: TrainConfig, world: int, log: Log) -> TrainingData:
    """The training and validation sets of ``cfg``, their classes (:func:`resolve_classes`,
    reported through ``log``), and a check that one global batch fits the training split."""
    on_error, train_opts, val_opts = _dataset_options(cfg)
    train_set = build_dataset(
        cfg.dataset, cfg.data_root, cfg.train_split, None, seed=cfg.seed, **train_opts
    )
    val_set = None
    if cfg.val_split:
        val_set = build_dataset(cfg.dataset, cfg.data_root, cfg.val_split, None, **val_opts)
    num_classes, class_names = resolve_classes(cfg, train_set, log)
    if len(train_set) < cfg.batch_size * world:
        raise ValueError(
            f"the {cfg.train_split!r} split has {len(train_set)} images, fewer than "
            f"batch_size × processes = {cfg.batch_size * world}"
        )
    return TrainingData(train_set, val_set, num_classes, class_names, on_error)


def _dataset_options(cfg: TrainConfig) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(on_error, training set options, validation set options)``.
    ``dataset_options.on_error`` takes precedence over the config's ``on_error``."""
    opts = dict(cfg.dataset_options)
    if cfg.dataset.lower() == "synthetic":  # the synthetic set has nothing to skip
        return cfg.on_error, opts, opts
    on_error = opts.pop("on_error", cfg.on_error)
    if on_error not in ON_ERROR:
        raise ValueError(f"dataset_options.on_error={on_error!r}: must be 'skip' or 'raise'")
    # Training samples are always served under "skip", so that a bad file's record travels
    # out of the DataLoader worker; the trainer applies "raise" itself.
    return on_error, {**opts, "on_error": "skip"}, {**opts, "on_error": on_error}


# ---------------------------------------------------------------------- classes
def _preview(names: Iterable[str], limit: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _where(cfg: TrainConfig) -> str:
    return f"the {cfg.dataset} dataset" + (f" at {cfg.data_root}" if cfg.data_root else "")


def resolve_classes(cfg: TrainConfig, dataset: Any, log: Log) -> tuple[int, list[str]]:
    """The class count and names to train with (see the module docstring); what is
    inferred or left unnamed is reported through ``log``."""
    where = _where(cfg)
    ds_n = getattr(dataset, "num_classes", None)
    names = list(getattr(dataset, "class_names", []) or [])
    _check_given_names(cfg)
    if cfg.dataset_options.get("class_names") is not None and ds_n:
        _check_names_cover_labels(cfg, dataset, ds_n, where)
    _check_palette(dataset, ds_n, where)
    n = cfg.num_classes or ds_n
    if not n:
        raise ValueError(f"num_classes is not set and {where} does not say it; set it")
    if ds_n and n != ds_n:
        names = _mismatched_names(cfg, dataset, n, ds_n, names, where, log)
    return n, _model_names(dataset, n, names, where, log)


def _check_given_names(cfg: TrainConfig) -> None:
    """``dataset_options.class_names`` gives one name per class of the configured count."""
    opts = cfg.dataset_options
    given = opts.get("class_names")
    if given is None:
        return
    if "num_classes" in opts and len(given) != opts["num_classes"]:
        raise ValueError(
            f"dataset_options: class_names has {len(given)} names but num_classes is "
            f"{opts['num_classes']}; give one name per class"
        )
    if cfg.num_classes and len(given) != cfg.num_classes:
        raise ValueError(
            f"dataset_options.class_names has {len(given)} names for num_classes="
            f"{cfg.num_classes}; give one name per class (or remove num_classes)"
        )


def _check_names_cover_labels(cfg: TrainConfig, dataset: Any, ds_n: int, where: str) -> None:
    """The masks hold no label beyond the names given."""
    found = check_label_range(dataset, ds_n)
    if not found.ok:
        given = cfg.dataset_options["class_names"]
        raise ValueError(
            f"dataset_options.class_names has {len(given)} names but {where} has "
            f"{found.message()}; give one name per class"
        )


def _check_palette(dataset: Any, ds_n: int | None, where: str) -> None:
    """The dataset's palette (where it has one) has a colour per class."""
    palette = getattr(dataset, "palette", None)
    if palette is None or not ds_n:
        return
    colours = len(np.asarray(palette).reshape(-1, 3))
    if colours < ds_n:
        raise ValueError(
            f"{where}: its palette has {colours} colours for {ds_n} classes; give one colour "
            "per class (dataset_options.palette)"
        )


def _mismatched_names(
    cfg: TrainConfig, dataset: Any, n: int, ds_n: int, names: list[str], where: str, log: Log
) -> list[str]:
    """The names of ``n`` classes where the dataset has ``ds_n``: allowed only by
    ``allow_num_classes_mismatch``, and fewer only when the masks stay below ``n``."""
    if not cfg.allow_num_classes_mismatch:
        raise ValueError(
            f"num_classes={n} but {where} has {ds_n} classes ({_preview(names)}); "
            "remove num_classes to use the dataset's, or set allow_num_classes_mismatch: true"
        )
    if n < ds_n:
        found = check_label_range(dataset, n)
        if not found.ok:
            raise ValueError(
                f"num_classes={n} (allow_num_classes_mismatch) but {where} has "
                f"{found.message()}: those pixels would not be learned; use "
                f"num_classes={ds_n} or map those labels to {IGNORE_INDEX}"
            )
        names = names[:n]
        log(
            f"training {n} of the dataset's {ds_n} classes (allow_num_classes_mismatch): "
            f"{_preview(names)}"
        )
        return names
    extra = [f"class_{i}" for i in range(ds_n, n)]
    log(
        f"num_classes={n} is more than the {ds_n} classes of {where} "
        f"(allow_num_classes_mismatch): {_preview(extra)} never appear in its masks"
    )
    return names + extra


def _model_names(dataset: Any, n: int, names: list[str], where: str, log: Log) -> list[str]:
    """``names``, or ``class_i`` placeholders (reported) for a dataset that names none."""
    if len(names) != n:
        names = [f"class_{i}" for i in range(n)]
        log(f"{where} names no classes: the model's are {_preview(names)}")
    elif getattr(dataset, "placeholder_names", False):
        log(
            f"{where} names no classes (num_classes only): the model's are "
            f"{_preview(names)}; give dataset_options.class_names or a classes.txt"
        )
    return names


# ---------------------------------------------------------------------- class weights
def class_weights(
    cfg: TrainConfig,
    train_set: Any,
    num_classes: int,
    log: Log,
    on_skipped: Callable[[Iterable[tuple[str, str]]], None],
) -> list[float] | None:
    """The loss's class weights: the config's list, or computed (``median``...) from the
    masks of the first ``class_weight_samples`` training images (untransformed); the bad
    samples met on the way go to ``on_skipped``."""
    cw = cfg.class_weights
    if cw is None or isinstance(cw, list):
        if cw is not None and len(cw) != num_classes:
            raise ValueError(f"class_weights has {len(cw)} values for {num_classes} classes")
        return cw
    samples = min(len(train_set), cfg.class_weight_samples)
    counts, image_px = _label_counts(train_set, samples, num_classes, on_skipped)
    w = class_weights_from_counts(
        counts, cw, image_counts=image_px, cap=cfg.class_weight_cap
    ).tolist()
    log(f"class weights ({cw}): {[round(x, 3) for x in w]}")
    return w


def _label_counts(
    dataset: Any,
    samples: int,
    num_classes: int,
    on_skipped: Callable[[Iterable[tuple[str, str]]], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Per class: its pixels, and the pixels of the images it appears in, over the first
    ``samples`` items of ``dataset``."""
    counts = np.zeros(num_classes, np.float64)
    image_px = np.zeros(num_classes, np.float64)
    for i in range(samples):
        sample = dataset[i]
        on_skipped(sample.get("skipped") or ())
        m = np.asarray(sample["mask"]).ravel()
        c = np.bincount(m[m < num_classes], minlength=num_classes)
        counts += c
        image_px += (c > 0) * m.size
    return counts, image_px


# ---------------------------------------------------------------------- transforms, batches
def training_transforms(cfg: TrainConfig, model: nn.Module) -> Any:
    """DeepLab's random scale / crop / flip (+ jitter), normalized by the model's weights
    (``model.metadata`` mean/std)."""
    scale = tuple(cfg.scale_range) if cfg.scale_range else None
    mean, std = model.metadata["mean"], model.metadata["std"]
    return train_transforms(
        cfg.crop_size,
        scale,
        cfg.flip,
        cfg.color_jitter,
        mean,
        std,
        class_balance=cfg.crop_class_balance,
        blur=cfg.blur,
    )


def train_batches(
    cfg: TrainConfig,
    train_set: Any,
    sampler: EpochSampler,
    iteration: int,
    pin_memory: bool = False,
) -> Iterator[dict[str, Any]]:
    """Batches from ``iteration`` (× ``grad_accum``) onwards, forever: the data order is a
    function of (seed, epoch) only, so a resumed run reads what the uninterrupted one did."""
    batches_per_epoch = sampler.per_rank // cfg.batch_size
    epoch, offset = divmod(iteration * cfg.grad_accum, batches_per_epoch)
    # An explicit generator keeps DataLoader from drawing on torch's global RNG, which the
    # model's dropout uses: that draw would differ between a run and its resume.
    gen = torch.Generator().manual_seed(cfg.seed)
    while True:
        sampler.set_epoch(epoch, offset * cfg.batch_size)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            collate_fn=collate,
            generator=gen,
            pin_memory=pin_memory,
            worker_init_fn=ignore_sigint,  # Ctrl-C is the main process's to handle
        )
        yield from loader
        epoch, offset = epoch + 1, 0
