"""Pascal VOC 2012 segmentation (Everingham et al., IJCV 2010), with the SBD annotations
(Hariharan et al., ICCV 2011) that make DeepLab v1-v3's 10,582-image ``train_aug`` split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atrous.data.base import DatasetError, Item, SegmentationDataset
from atrous.data.layout import read_list
from atrous.data.palettes import VOC_CLASSES, VOC_PALETTE
from atrous.data.registry import register_format

# The splits ImageSets/Segmentation may list (train_aug: when its list file is there).
_LISTED_SPLITS = ("train", "val", "trainval", "train_aug")


def _voc_candidates(root: Path) -> tuple[Path, ...]:
    return (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012")


def resolve_voc_root(root: str | Path) -> Path:
    """Accept ``VOCdevkit``, ``VOCdevkit/VOC2012`` or a folder holding ``VOC2012``."""
    root = Path(root)
    for cand in _voc_candidates(root):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(f"{root}: no Pascal VOC layout (JPEGImages/) found")


def _resolve_sbd_root(voc_root: Path, sbd_root: str | Path | None) -> Path | None:
    cands = (
        [Path(sbd_root)]
        if sbd_root is not None
        else [voc_root / "SBD", voc_root.parent / "SBD", voc_root.parent / "benchmark_RELEASE"]
    )
    for c in cands:
        for d in (c, c / "dataset"):
            if (d / "cls").is_dir():
                return d
    if sbd_root is not None:
        raise FileNotFoundError(f"{sbd_root}: no SBD layout (dataset/cls/*.mat) found")
    return None


@register_format("voc", priority=40, variants={"voc_aug": {"train": "train_aug"}})
class VOCSegmentation(SegmentationDataset):
    """Pascal VOC 2012 segmentation; ``split`` in train, val, trainval, train_aug.

    ``train_aug`` is the 10,582-image set of DeepLab v1-v3 (VOC train + SBD train/val, minus
    VOC val). Its list comes from ``ImageSets/Segmentation/train_aug.txt`` (or
    ``trainaug.txt``) when present, else from the SBD lists (or ``SegmentationClassAug/``).
    A mask is taken from ``SegmentationClassAug/`` (index PNGs), then ``SegmentationClass/``
    (palette PNGs; their 255 object border is already ignore), then SBD ``cls/NAME.mat``
    (``GTcls.Segmentation``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        sbd_root: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        voc = resolve_voc_root(root)
        self.sbd = _resolve_sbd_root(voc, sbd_root)
        seg_sets = voc / "ImageSets" / "Segmentation"
        if split in ("train_aug", "trainaug"):
            names = self._train_aug_names(voc, seg_sets)
        elif split in ("train", "val", "trainval", "test"):
            names = read_list(seg_sets / f"{split}.txt")
        else:
            raise ValueError(f"VOC split must be train, val, trainval or train_aug, got {split!r}")
        items = [self._item(voc, n) for n in names]
        self.split = split
        kwargs.setdefault("class_names", VOC_CLASSES)
        kwargs.setdefault("palette", VOC_PALETTE)
        super().__init__(items, root=voc, **kwargs)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """``JPEGImages/`` in the root, in ``VOC2012/`` or in ``VOCdevkit/VOC2012/``."""
        return any((cand / "JPEGImages").is_dir() for cand in _voc_candidates(Path(root)))

    @classmethod
    def splits(cls, root: Path) -> list[str]:
        """The splits ``ImageSets/Segmentation/`` lists."""
        sets = resolve_voc_root(root) / "ImageSets" / "Segmentation"
        return [s for s in _LISTED_SPLITS if (sets / f"{s}.txt").is_file()]

    def _train_aug_names(self, voc: Path, seg_sets: Path) -> list[str]:
        for fname in ("train_aug.txt", "trainaug.txt"):
            if (seg_sets / fname).is_file():
                return read_list(seg_sets / fname)
        if self.sbd is not None:
            extra = [n for s in ("train", "val") for n in read_list(self.sbd / f"{s}.txt")]
        elif (voc / "SegmentationClassAug").is_dir():
            extra = sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png"))
        else:
            raise FileNotFoundError(
                f"{voc}: split train_aug needs ImageSets/Segmentation/train_aug.txt, "
                "SegmentationClassAug/ or an SBD folder (pass sbd_root=)"
            )
        val = set(read_list(seg_sets / "val.txt")) if (seg_sets / "val.txt").is_file() else set()
        train = read_list(seg_sets / "train.txt") if (seg_sets / "train.txt").is_file() else []
        return sorted(set(train) | set(extra) - val)

    def _item(self, voc: Path, name: str) -> Item:
        image = voc / "JPEGImages" / f"{name}.jpg"
        if not image.exists() and self.sbd is not None and (self.sbd / "img").is_dir():
            image = self.sbd / "img" / f"{name}.jpg"
        mask = None
        for cand in (
            voc / "SegmentationClassAug" / f"{name}.png",
            voc / "SegmentationClass" / f"{name}.png",
            None if self.sbd is None else self.sbd / "cls" / f"{name}.mat",
        ):
            if cand is not None and cand.exists():
                mask = cand
                break
        if mask is None:  # reported (with its name) when the item is loaded
            mask = voc / "SegmentationClass" / f"{name}.png"
        return Item(image, mask, name)

    def read_raw_mask(self, path: Path) -> tuple[np.ndarray, bool]:
        if path.suffix != ".mat":
            return super().read_raw_mask(path)
        from scipy.io import loadmat

        try:
            m = loadmat(str(path), squeeze_me=True, struct_as_record=False)
            return np.asarray(m["GTcls"].Segmentation).astype(np.int64), False
        except FileNotFoundError as e:
            raise DatasetError(path, "mask file not found") from e
        except (KeyError, AttributeError) as e:
            raise DatasetError(path, "SBD .mat file has no GTcls.Segmentation") from e
        except (OSError, ValueError) as e:
            raise DatasetError(path, f"unreadable SBD .mat file ({e})") from e

    def ignore_colours(self) -> set[int]:
        # VOC's colour-coded masks draw the 255 border as (224, 224, 192).
        return {0xE0E0C0, 0xFFFFFF}
