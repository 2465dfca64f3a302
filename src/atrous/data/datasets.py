"""Loaders for the benchmarks the DeepLab papers report on, in their released layouts.

Pascal VOC 2012 (+ SBD "train_aug", v1-v3+), Cityscapes (v3+, sec. 4.4), ADE20K
(SceneParsing), CamVid (SegNet's 11 classes), and a generic folder / list-file dataset.
Each maps its void label to 255 on load (see :mod:`atrous.data.base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atrous.constants import IGNORE_INDEX
from atrous.data.base import (
    DatasetError,
    Item,
    SegmentationDataset,
    identity_lut,
    make_lut,
)
from atrous.data.palettes import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    VOC_PALETTE,
    palette_for,
)
from atrous.imageio import IMAGE_EXTENSIONS


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} folder not found")
    return path


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list not found")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


# ----------------------------------------------------------------------------- VOC
def resolve_voc_root(root: str | Path) -> Path:
    """Accept ``VOCdevkit``, ``VOCdevkit/VOC2012`` or a folder holding ``VOC2012``."""
    root = Path(root)
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
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
            names = _read_list(seg_sets / f"{split}.txt")
        else:
            raise ValueError(f"VOC split must be train, val, trainval or train_aug, got {split!r}")
        items = [self._item(voc, n) for n in names]
        self.split = split
        kwargs.setdefault("class_names", VOC_CLASSES)
        kwargs.setdefault("palette", VOC_PALETTE)
        super().__init__(items, root=voc, **kwargs)

    def _train_aug_names(self, voc: Path, seg_sets: Path) -> list[str]:
        for fname in ("train_aug.txt", "trainaug.txt"):
            if (seg_sets / fname).is_file():
                return _read_list(seg_sets / fname)
        if self.sbd is not None:
            extra = [n for s in ("train", "val") for n in _read_list(self.sbd / f"{s}.txt")]
        elif (voc / "SegmentationClassAug").is_dir():
            extra = sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png"))
        else:
            raise FileNotFoundError(
                f"{voc}: split train_aug needs ImageSets/Segmentation/train_aug.txt, "
                "SegmentationClassAug/ or an SBD folder (pass sbd_root=)"
            )
        val = set(_read_list(seg_sets / "val.txt")) if (seg_sets / "val.txt").is_file() else set()
        train = _read_list(seg_sets / "train.txt") if (seg_sets / "train.txt").is_file() else []
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


# ---------------------------------------------------------------------- Cityscapes
class Cityscapes(SegmentationDataset):
    """Cityscapes fine annotations, 19 train ids (labelIds -> trainIds, the rest 255)."""

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        root = Path(root)
        img_dir = _need_dir(root / "leftImg8bit" / split, f"Cityscapes {split!r} image")
        gt_dir = root / "gtFine" / split
        items = []
        for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            mask = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
            items.append(Item(img, mask, stem))
        # Valid labelIds are 0..33; license plate (-1) is stored as 255 in uint8 PNGs.
        mapping = {i: IGNORE_INDEX for i in range(34)}
        mapping.update({lid: t for t, lid in enumerate(CITYSCAPES_LABEL_IDS)})
        mapping[255] = IGNORE_INDEX
        self.split = split
        kwargs.setdefault("class_names", CITYSCAPES_CLASSES)
        kwargs.setdefault("palette", CITYSCAPES_PALETTE)
        super().__init__(items, root=root, lut=make_lut(mapping), **kwargs)


# -------------------------------------------------------------------------- ADE20K
_ADE_SPLITS = {"train": "training", "val": "validation", "training": "training"}
_ADE_SPLITS["validation"] = "validation"


class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing (``ADEChallengeData2016``): 150 classes, raw 0 ("other") -> 255,
    raw 1..150 -> 0..149."""

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        root = Path(root)
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        if split not in _ADE_SPLITS:
            raise ValueError(f"ADE20K split must be train or val, got {split!r}")
        sub = _ADE_SPLITS[split]
        img_dir = _need_dir(root / "images" / sub, f"ADE20K {split!r} image")
        items = [
            Item(p, root / "annotations" / sub / f"{p.stem}.png", p.stem)
            for p in sorted(img_dir.glob("*.jpg"))
        ]
        mapping = {0: IGNORE_INDEX, **{i: i - 1 for i in range(1, 151)}}
        self.split = split
        kwargs.setdefault("class_names", ADE20K_CLASSES)
        kwargs.setdefault("palette", ADE20K_PALETTE)
        super().__init__(items, root=root, lut=make_lut(mapping), **kwargs)


# -------------------------------------------------------------------------- CamVid
def _resolve_listed(root: Path, entry: str) -> Path:
    """A list-file path: relative to ``root``, or absolute; SegNet's own lists hold absolute
    ``/SegNet/CamVid/train/x.png`` paths, so fall back to the last two components."""
    p = Path(entry)
    if not p.is_absolute():
        return root / p
    if p.exists():
        return p
    return root / p.parent.name / p.name


def read_pair_list(path: Path, root: Path) -> list[Item]:
    """Lines ``image mask`` (or just ``image``) -> items; paths relative to ``root``."""
    items = []
    for n, line in enumerate(_read_list(path), 1):
        parts = line.split()
        if len(parts) not in (1, 2):
            raise ValueError(f"{path}:{n}: expected 'image mask', got {line!r}")
        img = _resolve_listed(root, parts[0])
        mask = _resolve_listed(root, parts[1]) if len(parts) == 2 else None
        items.append(Item(img, mask, img.stem))
    return items


def camvid_sequence(name: str) -> str:
    """The video sequence of a CamVid frame, from its name (``0016E5_08019`` -> ``0016E5``;
    the sequences are 0001TP, 0006R0, 0016E5 and Seq05VD)."""
    return name.split("_", 1)[0]


def _parse_camvid_split(split: str) -> tuple[str, set[str], bool]:
    """``base[:SEQ,...]`` or ``base[:-SEQ,...]`` -> (base, sequences, exclude)."""
    base, sep, spec = split.partition(":")
    if not sep:
        return base, set(), False
    exclude = spec.startswith("-")
    seqs = {t.strip() for t in spec.lstrip("-").split(",") if t.strip()}
    if not seqs:
        raise ValueError(f"CamVid split {split!r}: no sequence after ':'")
    return base, seqs, exclude


class CamVid(SegmentationDataset):
    """CamVid in SegNet's layout (``train/``, ``trainannot/``, ``train.txt``...): 11 classes,
    raw 11 (void) -> 255. Uses ``{split}.txt`` when present, else pairs files by stem.

    Sequence-aware splits, for validating on a street sequence the model never trained on
    (CamVid's val frames all come from 0016E5, which also supplies most training frames):
    ``"train:0006R0"`` keeps only that sequence's frames of ``train``, ``"train:-0006R0"``
    all others (several sequences: ``"train:-0006R0,0001TP"``).  A frame's sequence is its
    name up to the first ``_`` (:func:`camvid_sequence`).
    """

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        root = Path(root)
        base, seqs, exclude = _parse_camvid_split(split)
        if base not in ("train", "val", "test", "trainval"):
            raise ValueError(
                f"CamVid split must be train, val, test or trainval (optionally with "
                f":SEQUENCE or :-SEQUENCE), got {split!r}"
            )
        if base == "trainval" and not (root / "trainval.txt").is_file():
            items = self._items(root, "train") + self._items(root, "val")
        else:
            items = self._items(root, base)
        if seqs:
            have = sorted({camvid_sequence(it.name) for it in items})
            unknown = sorted(seqs - set(have))
            if unknown:
                raise ValueError(
                    f"{root}: CamVid split {split!r}: no frames of sequence(s) "
                    f"{', '.join(unknown)} in {base!r}; it has {', '.join(have)}"
                )
            items = [it for it in items if (camvid_sequence(it.name) in seqs) != exclude]
            if not items:
                raise ValueError(f"{root}: CamVid split {split!r} leaves no frames")
        self.split = split
        kwargs.setdefault("class_names", CAMVID_CLASSES)
        kwargs.setdefault("palette", CAMVID_PALETTE)
        super().__init__(items, root=root, lut=identity_lut(11, void=(11,)), **kwargs)

    @staticmethod
    def _items(root: Path, split: str) -> list[Item]:
        if (root / f"{split}.txt").is_file():
            return read_pair_list(root / f"{split}.txt", root)
        img_dir = _need_dir(root / split, f"CamVid {split!r} image")
        ann = root / f"{split}annot"
        return [
            Item(p, ann / f"{p.stem}.png", p.stem)
            for p in sorted(img_dir.iterdir())
            if p.suffix.lower() in IMAGE_EXTENSIONS
        ]


# -------------------------------------------------------------------------- folder
def read_class_file(path: str | Path) -> tuple[list[str], np.ndarray | None]:
    """Class names, one a line; a line may end in ``R G B`` to give the class colour."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class-names file not found")
    names, colours = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
            rgb = [int(p) for p in parts[-3:]]
            if max(rgb) > 255:
                raise ValueError(f"{path}:{n}: colour {rgb} outside 0..255")
            colours.append(rgb)
            names.append(" ".join(parts[:-3]))
        else:
            names.append(line)
    if colours and len(colours) != len(names):
        raise ValueError(f"{path}: give a colour on every line or on none")
    return names, (np.asarray(colours, np.uint8) if colours else None)


def read_palette_file(path: str | Path) -> np.ndarray:
    """A palette file: one ``R G B`` a line, in class order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: palette file not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            rgb = [int(p) for p in parts[:3]]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"{path}:{n}: expected 'R G B' in 0..255, got {line!r}")
        rows.append(rgb)
    return np.asarray(rows, np.uint8)


_CLASS_FILES = ("classes.txt", "class_names.txt", "labels.txt")
IMAGE_DIRS = ("images", "image", "imgs", "img")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "gt")


class FolderDataset(SegmentationDataset):
    """Any images + masks: ``images/`` and ``masks/`` paired by file stem, or a list file of
    ``image mask`` lines. Masks hold class indices (L/P PNG) or colours (RGB, decoded through
    the palette; unknown colours are errors). ``void_labels`` map to 255; ``value_map``
    renames raw values first (e.g. ``{255: 1}`` for binary masks drawn 0/255).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str | None = None,
        *,
        images_dir: str | Path | None = None,
        masks_dir: str | Path | None = None,
        list_file: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        classes_file: str | Path | None = None,
        num_classes: int | None = None,
        palette: np.ndarray | Sequence[Sequence[int]] | str | Path | None = None,
        void_labels: Sequence[int] = (),
        value_map: Mapping[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        base = Path(root) if root is not None else Path(".")
        if root is not None and classes_file is None and class_names is None:
            classes_file = next((base / f for f in _CLASS_FILES if (base / f).is_file()), None)
        file_palette = None
        if classes_file is not None:
            class_names, file_palette = read_class_file(classes_file)
        placeholder = class_names is None
        if class_names is None:
            if num_classes is None:
                raise ValueError(
                    f"{base}: give class_names, classes_file or num_classes "
                    f"(or put one of {', '.join(_CLASS_FILES)} in the root)"
                )
            class_names = [f"class_{i}" for i in range(num_classes)]
        if isinstance(palette, (str, Path)):
            palette = read_palette_file(palette)
        elif palette is None and root is not None and (base / "palette.txt").is_file():
            palette = read_palette_file(base / "palette.txt")
        if palette is None:
            palette = file_palette
        if list_file is None and root is not None and split and (base / f"{split}.txt").is_file():
            list_file = base / f"{split}.txt"
        if list_file is not None:
            items = read_pair_list(
                Path(list_file), base if root is not None else Path(list_file).parent
            )
        else:
            items = self._paired(base, split, images_dir, masks_dir)
        n = len(class_names)
        mapping = {i: i for i in range(n)}
        mapping[IGNORE_INDEX] = IGNORE_INDEX
        for v in void_labels:
            mapping[int(v)] = IGNORE_INDEX
        lut = make_lut(mapping, size=65536)
        if value_map:
            remap = np.arange(65536)
            for k, v in value_map.items():
                remap[int(k)] = int(v)
            lut = lut[remap]
        self.split = split
        super().__init__(
            items,
            class_names=class_names,
            palette=None if palette is None else np.asarray(palette, np.uint8),
            lut=lut,
            root=base,
            **kwargs,
        )
        # Without class colours masks must be index images; classes are drawn in VOC's.
        self.palette = palette_for(self.num_classes, self.label_palette)
        # True when the names are placeholders made from num_classes (no names given).
        self.placeholder_names = placeholder

    @staticmethod
    def _paired(
        base: Path, split: str | None, images_dir: str | Path | None, masks_dir: str | Path | None
    ) -> list[Item]:
        if images_dir is not None:
            img_dir = Path(images_dir)
        else:
            img_dir = next((base / d for d in IMAGE_DIRS if (base / d).is_dir()), base / "images")
        if masks_dir is not None:
            mask_dir = Path(masks_dir)
        else:
            mask_dir = next((base / d for d in MASK_DIRS if (base / d).is_dir()), base / "masks")
        if split is not None and (img_dir / split).is_dir():
            img_dir, mask_dir = img_dir / split, mask_dir / split
        _need_dir(img_dir, "image")
        masks = {}
        if mask_dir.is_dir():
            masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
        items = []
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            items.append(Item(p, masks.get(p.stem, mask_dir / f"{p.stem}.png"), p.stem))
        if not items:
            raise FileNotFoundError(f"{img_dir}: no images found")
        return items


__all__ = [
    "ADE20K",
    "CamVid",
    "Cityscapes",
    "FolderDataset",
    "VOCSegmentation",
    "camvid_sequence",
    "read_class_file",
    "read_palette_file",
    "resolve_voc_root",
]
