"""``build_dataset`` by name, format auto-detection, and batch collation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atrous.constants import IGNORE_INDEX
from atrous.data.datasets import (
    ADE20K,
    IMAGE_DIRS,
    CamVid,
    Cityscapes,
    FolderDataset,
    VOCSegmentation,
)
from atrous.data.synthetic import SyntheticSegmentation

DATASETS = ("voc", "voc_aug", "cityscapes", "ade20k", "camvid", "folder", "synthetic")
FORMATS = ("voc", "cityscapes", "ade20k", "camvid", "folder")


def detect_format(root: str | Path) -> str:
    """Guess a dataset's format from its folder layout."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return "voc"
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    for cand in (root, root / "ADEChallengeData2016"):
        if (cand / "images" / "training").is_dir() or (cand / "images" / "validation").is_dir():
            return "ade20k"
    if any((root / f"{s}annot").is_dir() for s in ("train", "val", "test")):
        return "camvid"
    if any((root / d).is_dir() for d in IMAGE_DIRS) or any(root.glob("*.txt")):
        return "folder"
    raise ValueError(
        f"{root}: cannot tell the dataset format from the layout; pass --format "
        f"({'|'.join(FORMATS)})"
    )


def available_splits(fmt: str, root: str | Path) -> list[str]:
    """The splits a dataset folder has (used by ``atrous data check`` without --split)."""
    root = Path(root)
    if fmt in ("voc", "voc_aug"):
        from atrous.data.datasets import resolve_voc_root

        sets = resolve_voc_root(root) / "ImageSets" / "Segmentation"
        return [
            s for s in ("train", "val", "trainval", "train_aug") if (sets / f"{s}.txt").is_file()
        ]
    if fmt == "cityscapes":
        return [s for s in ("train", "val", "test") if (root / "leftImg8bit" / s).is_dir()]
    if fmt == "ade20k":
        base = root if (root / "images").is_dir() else root / "ADEChallengeData2016"
        return [
            s
            for s, d in (("train", "training"), ("val", "validation"))
            if (base / "images" / d).is_dir()
        ]
    if fmt == "camvid":
        return [
            s
            for s in ("train", "val", "test")
            if (root / s).is_dir() or (root / f"{s}.txt").is_file()
        ]
    if fmt == "folder":
        listed = [s for s in ("train", "val", "test") if (root / f"{s}.txt").is_file()]
        if listed:
            return listed
        img_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), root / "images")
        splits = [s for s in ("train", "val", "test") if (img_dir / s).is_dir()]
        return splits or [""]
    raise ValueError(f"unknown dataset format {fmt!r}; choose from {', '.join(FORMATS)}")


def build_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    transforms: Callable[..., dict[str, Any]] | None = None,
    **kwargs: Any,
) -> torch.utils.data.Dataset:
    """A dataset by name: voc, voc_aug (VOC with SBD, split train_aug), cityscapes, ade20k,
    camvid, folder, synthetic (no root). Extra keyword arguments go to the class (e.g.
    ``on_error="skip"``, ``seed``, ``sbd_root``, ``classes_file``, ``size``)."""
    name = name.lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == "synthetic":
        return SyntheticSegmentation(split=split, transforms=transforms, **kwargs)
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder")
    if name == "voc_aug" and split == "train":
        split = "train_aug"
    cls = {
        "voc": VOCSegmentation,
        "voc_aug": VOCSegmentation,
        "cityscapes": Cityscapes,
        "ade20k": ADE20K,
        "camvid": CamVid,
        "folder": FolderDataset,
    }[name]
    return cls(root, split or None, transforms=transforms, **kwargs)


def collate(batch: Sequence[dict[str, Any]], pad_to: int = 1) -> dict[str, Any]:
    """Stack samples into a batch; samples of different sizes are padded bottom/right to the
    largest (rounded up to a multiple of ``pad_to``): image with 0 (the mean after
    normalization), mask with 255. ``size`` holds each sample's (h, w) before padding;
    ``skipped`` is one list of the samples' ``(path, problem)`` skip records (empty when
    none); other fields become lists."""
    if not batch:
        raise ValueError("collate got an empty batch")
    out: dict[str, Any] = {}
    imgs = [_to_tensor_image(s["image"]) for s in batch]
    sizes = [tuple(im.shape[-2:]) for im in imgs]
    H = -(-max(h for h, _ in sizes) // pad_to) * pad_to
    W = -(-max(w for _, w in sizes) // pad_to) * pad_to
    if all(sz == (H, W) for sz in sizes):
        out["image"] = torch.stack(imgs)
    else:
        out["image"] = imgs[0].new_zeros((len(imgs), imgs[0].shape[0], H, W))
        for i, im in enumerate(imgs):
            out["image"][i, :, : im.shape[1], : im.shape[2]] = im
    if all(s.get("mask") is not None for s in batch):
        masks = [torch.as_tensor(np.ascontiguousarray(s["mask"])).long() for s in batch]
        out["mask"] = torch.full((len(masks), H, W), IGNORE_INDEX, dtype=torch.long)
        for i, m in enumerate(masks):
            out["mask"][i, : m.shape[0], : m.shape[1]] = m
    out["size"] = torch.tensor(sizes, dtype=torch.long)
    out["skipped"] = [(str(p), str(why)) for s in batch for p, why in s.get("skipped", ())]
    for key in batch[0]:
        if key not in ("image", "mask", "skipped"):
            out[key] = [s[key] for s in batch]
    return out


def _to_tensor_image(img: Any) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        return img
    # uint8 HxWx3 (no Normalize in the pipeline): keep uint8, channels first.
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
