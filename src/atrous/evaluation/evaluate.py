"""Evaluate a segmenter over a dataset by the papers' protocol (DeepLab v1 sec. 5, v2 sec. 4).

Full-resolution predictions, one confusion matrix over the whole dataset, label 255
ignored, plus the trimap curve of v1 sec. 5 / v2 sec. 4.1. The ``atrous eval`` command is a
thin layer over :func:`evaluate` and :class:`EvalResult`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from atrous.constants import IGNORE_INDEX
from atrous.evaluation.confusion import ConfusionMatrix, Metrics
from atrous.evaluation.report import environment, format_table, plot_confusion, write_json
from atrous.evaluation.trimap import BoundaryMode, TrimapAccumulator, plot_trimap

__all__ = [
    "EvalResult",
    "evaluate",
    "evaluate_model",
    "iter_predictions",
    "reconcile_class_names",
    "score",
    "split_item",
]


def split_item(item: Any, index: int = 0) -> tuple[Any, Any]:
    """A dataset item as ``(image, label)``: a 2-tuple/list, or a dict with "image" and
    "mask" (or "label") keys."""
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"dataset item {index}: dict has no 'image' key ({sorted(item)})")
        for key in ("mask", "label", "target"):
            if key in item:
                return item["image"], item[key]
        raise ValueError(f"dataset item {index}: dict has no 'mask' key ({sorted(item)})")
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise TypeError(
        f"dataset item {index}: expected (image, label) or a dict with 'image'/'mask', "
        f"got {type(item).__name__}"
    )


@dataclass
class EvalResult:
    """Everything one evaluation measured; write it with ``to_json``/``plot_*``/``table``."""

    confusion: ConfusionMatrix
    class_names: list[str] | None = None
    trimap: TrimapAccumulator | None = None
    num_images: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # What was evaluated and how (model, weights, inference settings, dataset), written into
    # metrics.json; :func:`evaluate_model` fills it. ``notes``: remarks for the user.
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Items left out under on_error="skip": {"item": file, "problem": ...} each.
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def metrics(self) -> Metrics:
        return self.confusion.compute()

    @property
    def miou(self) -> float:
        return self.metrics.miou

    def table(self, title: str | None = None) -> str:
        return format_table(self.metrics, self.class_names, title)

    def to_dict(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        m = self.metrics
        out: dict[str, Any] = {
            "metadata": dict(self.metadata if metadata is None else metadata),
            "environment": environment(),
            "protocol": {
                "accumulation": "one confusion matrix over all pixels of the dataset",
                "resolution": "full image",
                "ignore_index": self.confusion.ignore_index,
                "absent_classes": "no GT pixel and never predicted: null, excluded from means",
            },
            "num_images": self.num_images,
            "num_skipped": len(self.skipped),
            "skipped": list(self.skipped),
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / self.num_images if self.num_images else None,
            "num_classes": self.confusion.num_classes,
            "class_names": self.class_names,
            "metrics": m.to_dict(self.class_names),
            "confusion_matrix": self.confusion.numpy().tolist(),
        }
        if self.class_names is not None:
            out["per_class_IoU_by_name"] = dict(zip(self.class_names, m.iou.tolist()))
        if self.trimap is not None:
            out["trimap"] = {"boundary": self.trimap.boundary, **self.trimap.curve()}
        out.update(self.extra)
        return out

    def to_json(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Every number plus the run metadata (model, weights, output stride, scales, flip,
        CRF settings, split...; default :attr:`metadata`) and the software environment."""
        write_json(self.to_dict(metadata), path)

    def plot_confusion(self, path: str | Path) -> None:
        plot_confusion(self.confusion.numpy(), path, self.class_names)

    def plot_trimap(
        self,
        path: str | Path,
        label: str = "this run",
        others: dict[str, EvalResult | TrimapAccumulator] | None = None,
    ) -> None:
        """Trimap curve of this run, with ``others`` (e.g. the run without CRF) overlaid."""
        if self.trimap is None:
            raise ValueError("this evaluation did not compute the trimap (trimap_widths=None)")
        curves: dict[str, Any] = {label: self.trimap}
        for name, o in (others or {}).items():
            acc = o.trimap if isinstance(o, EvalResult) else o
            if acc is None:
                raise ValueError(f"plot_trimap: {name!r} has no trimap")
            curves[name] = acc
        plot_trimap(curves, str(path))

    def all_reduce(self) -> EvalResult:
        """Sum counts over ``torch.distributed`` ranks (each rank evaluated a shard)."""
        import torch
        import torch.distributed as dist

        self.confusion.all_reduce()
        if self.trimap is not None:
            self.trimap.all_reduce()
        if dist.is_available() and dist.is_initialized():
            n = torch.tensor([self.num_images], dtype=torch.int64)
            dist.all_reduce(n)
            self.num_images = int(n.item())
        return self


# What to do with an item that cannot be loaded or segmented: stop, skip it, or skip it and
# call back with (item, problem). (atrous.data's OnError is the datasets' raise/skip only.)
ErrorPolicy = Literal["raise", "skip"] | Callable[[str, str], Any]


def _item_name(dataset: Any, index: int) -> str:
    """The file behind dataset item ``index`` (its image path), for error reports."""
    items = getattr(dataset, "items", None)
    try:
        image = getattr(items[index], "image", None) if items is not None else None
    except (IndexError, TypeError, KeyError):
        image = None
    return str(image) if image is not None else f"dataset item {index}"


def _load_items(
    dataset: Iterable[Any], limit: int | None, report: Callable[[str, str], Any] | None
) -> Iterator[tuple[str, Any, Any]]:
    """``(name, image, label)`` per item; with ``report``, an item that fails to load is
    reported and skipped (datasets with ``len`` and indexing are read item by item, so one
    bad item does not end the iteration)."""
    indexable = hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
    if report is None or not indexable:
        for i, item in enumerate(dataset):
            if limit is not None and i >= limit:
                return
            image, label = split_item(item, i)
            name = item.get("path") if isinstance(item, dict) else None
            yield str(name or f"dataset item {i}"), image, label
        return
    n = len(dataset)  # type: ignore[arg-type]
    for i in range(n if limit is None else min(n, limit)):
        try:
            item = dataset[i]  # type: ignore[index]
            image, label = split_item(item, i)
        except Exception as e:  # the item's problem, not the run's
            from atrous.data import DatasetError

            if isinstance(e, DatasetError):
                report(e.path, e.problem)
            else:
                from atrous.inference.io import describe_error

                report(_item_name(dataset, i), f"cannot load ({describe_error(e)})")
            continue
        name = item.get("path") if isinstance(item, dict) else None
        yield str(name or _item_name(dataset, i)), image, label


def _reporter(
    on_error: ErrorPolicy, skipped: list[dict[str, str]]
) -> Callable[[str, str], Any] | None:
    if on_error == "raise":
        return None
    if on_error != "skip" and not callable(on_error):
        raise ValueError(f"on_error must be 'raise', 'skip' or a callable, got {on_error!r}")

    def report(item: str, problem: str) -> None:
        skipped.append({"item": str(item), "problem": str(problem)})
        if callable(on_error):
            on_error(str(item), str(problem))

    return report


def iter_predictions(
    segmenter: Any,
    dataset: Iterable[Any],
    limit: int | None = None,
    output: str = "labels",
    progress: bool = False,
    on_error: Callable[[str, str], Any] | None = None,
) -> Iterator[tuple[Any, Any, Any]]:
    """``(image, label, prediction)`` for the first ``limit`` items of ``dataset`` (items
    ``(image, label)`` or dicts with "image"/"mask"): the one loop over a dataset that
    evaluation and the CRF search share. ``segmenter`` is a :class:`~atrous.inference.Segmenter`
    (batched through ``predict_many(images, output=...)``) or any callable image -> labels.

    ``on_error(item, problem)``: the failure policy (:mod:`atrous.failures`): an item that
    cannot be loaded, that the model fails on, or whose prediction and label differ in size
    is reported through it and skipped; without it the first such item raises."""
    pending: deque[tuple[str, Any, Any]] = deque()

    def images() -> Iterator[Any]:
        for name, image, label in _load_items(dataset, limit, on_error):
            pending.append((name, image, label))
            yield image

    if hasattr(segmenter, "predict_many"):
        kw = {"errors": "return"} if on_error is not None else {}
        preds: Iterator[Any] = segmenter.predict_many(images(), output=output, **kw)
    elif callable(segmenter) and output == "labels":
        preds = (segmenter(im) for im in images())
    else:
        raise TypeError(
            "segmenter must have predict_many(images) or be callable image -> label map, got "
            f"{type(segmenter).__name__}"
        )
    if progress:
        from tqdm import tqdm

        preds = tqdm(preds, desc="evaluate", unit="img")
    for pred in preds:
        name, image, label = pending.popleft()
        if on_error is not None:
            if isinstance(pred, Exception):
                from atrous.inference.io import describe_error

                on_error(name, f"segmentation failed: {describe_error(pred)}")
                continue
            shape = tuple(np.asarray(label).shape) if not hasattr(label, "dim") else label.shape
            if tuple(pred.shape[-2:]) != tuple(shape):
                sizes = f"prediction {tuple(pred.shape[-2:])} and label {tuple(shape)}"
                on_error(name, f"{sizes} differ in size")
                continue
        yield image, label, pred


def score(
    pairs: Iterable[tuple[Any, Any]],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    trimap_widths: Iterable[float] | None = range(1, 41),
    trimap_boundary: BoundaryMode = "label",
) -> EvalResult:
    """Accumulate ``(prediction, label)`` pairs of full-resolution label maps into one
    confusion matrix (and the trimap matrices unless ``trimap_widths`` is None)."""
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but num_classes is {num_classes}"
        )
    cm = ConfusionMatrix(num_classes, ignore_index)
    tri = (
        TrimapAccumulator(num_classes, trimap_widths, ignore_index, trimap_boundary)
        if trimap_widths is not None
        else None
    )
    t0 = time.perf_counter()
    n = 0
    for pred, label in pairs:
        label = np.asarray(label) if not hasattr(label, "dim") else label
        if tuple(pred.shape) != tuple(label.shape):
            raise ValueError(
                f"dataset item {n}: prediction shape {tuple(pred.shape)} differs from label "
                f"shape {tuple(label.shape)} (evaluation is at full resolution)"
            )
        cm.update(pred, label)
        if tri is not None:
            tri.update(pred, label)
        n += 1
    return EvalResult(
        confusion=cm,
        class_names=list(class_names) if class_names is not None else None,
        trimap=tri,
        num_images=n,
        seconds=time.perf_counter() - t0,
    )


def evaluate(
    segmenter: Any,
    dataset: Iterable[Any],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    trimap_widths: Iterable[float] | None = range(1, 41),
    trimap_boundary: BoundaryMode = "label",
    limit: int | None = None,
    progress: bool = False,
    on_error: ErrorPolicy = "raise",
) -> EvalResult:
    """Run ``segmenter`` (a :class:`atrous.inference.Segmenter`, or any callable returning an
    (H, W) label map) over ``dataset`` items ``(image_uint8_hwc, label_hw)`` or dicts with
    "image"/"mask", at full resolution, and accumulate the confusion matrix (and the trimap
    matrices unless ``trimap_widths`` is None).

    ``on_error``: ``"raise"`` stops at the first bad item; ``"skip"`` (or a callable
    ``(item, problem)``, called for each) skips it: items that cannot be loaded or segmented
    are left out of the scores and listed in :attr:`EvalResult.skipped`."""
    skipped: list[dict[str, str]] = []
    report = _reporter(on_error, skipped)
    items = iter_predictions(segmenter, dataset, limit, progress=progress, on_error=report)
    pairs = ((pred, label) for _, label, pred in items)
    result = score(pairs, num_classes, class_names, ignore_index, trimap_widths, trimap_boundary)
    result.skipped = skipped
    return result


def reconcile_class_names(
    model_names: Sequence[str] | None, dataset_names: Sequence[str], num_classes: int, where: str
) -> tuple[list[str], str | None]:
    """The class names to report, and a note for the user (or None).

    The counts must agree (ValueError naming ``where``, the dataset). A dataset that only
    knows generic names (``class_0``...) takes the weights' names; when both have real names
    that differ, the dataset's win and the note says so."""
    ds_names = list(dataset_names)
    if len(ds_names) != num_classes:
        raise ValueError(
            f"the model predicts {num_classes} classes but the {where} has {len(ds_names)}: "
            "evaluate with weights trained on this dataset's classes"
        )
    generic = ds_names == [f"class_{i}" for i in range(num_classes)]
    if generic and model_names:
        return list(model_names), None
    if model_names and not generic and list(model_names) != ds_names:
        return (
            ds_names,
            "the weights' class names differ from the dataset's; the table uses the dataset's",
        )
    return ds_names, None


def _dataset_class_names(
    model_names: Sequence[str] | None,
    dataset: Any,
    dataset_info: dict[str, Any] | None,
    num_classes: int,
) -> tuple[list[str], list[str]]:
    """The class names to report (:func:`reconcile_class_names` of the model's and
    ``dataset.class_names``) and the notes for the user."""
    where = "dataset"
    if dataset_info and dataset_info.get("format"):
        where = f"{dataset_info['format']} dataset"
        if dataset_info.get("root"):
            where += f" at {dataset_info['root']}"
    ds_names = getattr(dataset, "class_names", None) or [f"class_{i}" for i in range(num_classes)]
    names, note = reconcile_class_names(model_names, ds_names, num_classes, where)
    return names, [note] if note else []


def _run_metadata(
    model: Any,
    infer: dict[str, Any],
    result: EvalResult,
    dataset_info: dict[str, Any] | None,
    limit: int | None,
    trimap_widths: Iterable[float] | None,
) -> dict[str, Any]:
    """What was evaluated and how, for ``metrics.json``: the model, the weights, the
    inference settings (``infer``: the segmenter's config) and the dataset."""
    config = dict(getattr(model, "config", None) or {})
    meta = dict(getattr(model, "metadata", None) or {})
    return {
        **{k: config.get(k) for k in ("arch", "num_classes", "output_stride", "atrous_rates")},
        "weights_file": str(Path(meta["weights"])) if meta.get("weights") else None,
        "weights_source": meta.get("source"),
        **{k: infer.get(k) for k in ("scales", "flip", "tile_size", "tile_overlap", "crf")},
        "inference": infer,
        "dataset": {
            **(dataset_info or {}),
            "num_images": result.num_images,
            "num_skipped": len(result.skipped),
            "limit": limit,
        },
        "trimap_widths": list(trimap_widths) if trimap_widths is not None else None,
    }


def evaluate_model(
    model: Any,
    dataset: Any,
    *,
    segmenter: Any = None,
    class_names: Sequence[str] | None = None,
    dataset_info: dict[str, Any] | None = None,
    trimap_widths: Iterable[float] | None = range(1, 41),
    limit: int | None = None,
    progress: bool = False,
    on_error: ErrorPolicy = "raise",
    **segmenter_options: Any,
) -> EvalResult:
    """Evaluate a loaded atrous model on a dataset by the papers' protocol; the result carries
    the run metadata (model, weights, inference settings, dataset) and the reconciled class
    names, ready for ``to_json``.

    ``segmenter``: a prepared :class:`~atrous.inference.Segmenter`; by default one is built
    with :meth:`Segmenter.from_model(model, **segmenter_options)
    <atrous.inference.Segmenter.from_model>` (scales, flip, crf, tile_size, batch_size,
    device). ``class_names`` default to :func:`reconcile_class_names` of the model's and the
    dataset's (``dataset.class_names``). ``dataset_info`` (format, root, split...) goes into
    the metadata. ``on_error``: as in :func:`evaluate` (skipped items are counted in the
    result and in ``metrics.json``)."""
    from atrous.inference import Segmenter

    num_classes = int(dict(getattr(model, "config", None) or {})["num_classes"])
    notes: list[str] = []
    if class_names is None:
        model_names = (getattr(model, "metadata", None) or {}).get("class_names")
        class_names, notes = _dataset_class_names(model_names, dataset, dataset_info, num_classes)
    if segmenter is None:
        segmenter = Segmenter.from_model(model, **segmenter_options)
    result = evaluate(
        segmenter,
        dataset,
        num_classes,
        class_names=class_names,
        trimap_widths=trimap_widths,
        limit=limit,
        progress=progress,
        on_error=on_error,
    )
    infer = segmenter.config() if hasattr(segmenter, "config") else {}
    result.notes = notes
    result.metadata = _run_metadata(model, infer, result, dataset_info, limit, trimap_widths)
    return result
