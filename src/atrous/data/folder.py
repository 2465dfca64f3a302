"""Any images + masks: the folder format, for the user's own data (images and masks paired
by file stem, or ``image mask`` list files), with class names from a file or a count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atrous.constants import IGNORE_INDEX
from atrous.data.base import Item, SegmentationDataset
from atrous.data.class_files import (
    CLASS_FILES,
    PALETTE_FILE,
    find_class_file,
    read_class_file,
    read_palette_file,
)
from atrous.data.layout import need_dir, read_pair_list
from atrous.data.masks import make_lut
from atrous.data.palettes import palette_for
from atrous.data.registry import register_format
from atrous.imageio import IMAGE_EXTENSIONS

# Folder names under the root that hold the images, and the masks, tried in this order.
IMAGE_DIRS = ("images", "image", "imgs", "img")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "gt")
_SPLITS = ("train", "val", "test")

Palette = np.ndarray | Sequence[Sequence[int]]


@register_format("folder", priority=0)  # the generic layout: tried after the others
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
        palette: Palette | str | Path | None = None,
        void_labels: Sequence[int] = (),
        value_map: Mapping[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        folder = None if root is None else Path(root)
        if folder is not None and images_dir is None and list_file is None:
            need_dir(folder, "dataset")  # the first fault when the data is to be found there
        names, file_palette, placeholder = _class_names(
            folder, class_names, classes_file, num_classes
        )
        palette = _palette(folder, palette, file_palette)
        items = _items(folder, split, list_file, images_dir, masks_dir)
        self.split = split
        super().__init__(
            items,
            class_names=names,
            palette=None if palette is None else np.asarray(palette, np.uint8),
            lut=folder_lut(len(names), void_labels, value_map),
            root=Path(".") if folder is None else folder,
            **kwargs,
        )
        # Without class colours masks must be index images; classes are drawn in VOC's.
        self.palette = palette_for(self.num_classes, self.label_palette)
        # True when the names are placeholders made from num_classes (no names given).
        self.placeholder_names = placeholder

    @classmethod
    def detect(cls, root: Path) -> bool:
        """An image folder (:data:`IMAGE_DIRS`) or a list file (``*.txt``) in the root."""
        root = Path(root)
        return any((root / d).is_dir() for d in IMAGE_DIRS) or any(root.glob("*.txt"))

    @classmethod
    def splits(cls, root: Path) -> list[str]:
        """The splits with a list file (``train.txt``...), else with a folder under the image
        folder, else ``[""]`` (the whole folder)."""
        root = Path(root)
        listed = [s for s in _SPLITS if (root / f"{s}.txt").is_file()]
        if listed:
            return listed
        img_dir = _find_dir(root, IMAGE_DIRS, "images")
        return [s for s in _SPLITS if (img_dir / s).is_dir()] or [""]


def folder_lut(
    num_classes: int, void_labels: Sequence[int] = (), value_map: Mapping[int, int] | None = None
) -> np.ndarray:
    """The raw-label table of the folder format: 0..n-1 and 255 kept, ``void_labels`` ->
    255, after ``value_map`` renamed raw values (16-bit masks included)."""
    mapping = {i: i for i in range(num_classes)}
    mapping[IGNORE_INDEX] = IGNORE_INDEX
    for v in void_labels:
        mapping[int(v)] = IGNORE_INDEX
    lut = make_lut(mapping, size=65536)
    if value_map:
        remap = np.arange(65536)
        for k, v in value_map.items():
            remap[int(k)] = int(v)
        lut = lut[remap]
    return lut


def _class_names(
    folder: Path | None,
    class_names: Sequence[str] | None,
    classes_file: str | Path | None,
    num_classes: int | None,
) -> tuple[Sequence[str], np.ndarray | None, bool]:
    """(names, the class file's colours or None, whether the names are placeholders): the
    names given, else a classes file (given, or found in the root), else ``class_i``
    for ``num_classes`` classes."""
    if folder is not None and classes_file is None and class_names is None:
        classes_file = find_class_file(folder)
    file_palette = None
    if classes_file is not None:
        class_names, file_palette = read_class_file(classes_file)
    if class_names is not None:
        return class_names, file_palette, False
    if num_classes is None:
        where = Path(".") if folder is None else folder
        raise ValueError(
            f"{where}: give class_names, classes_file or num_classes "
            f"(or put one of {', '.join(CLASS_FILES)} in the root)"
        )
    return [f"class_{i}" for i in range(num_classes)], file_palette, True


def _palette(
    folder: Path | None, palette: Palette | str | Path | None, file_palette: np.ndarray | None
) -> Palette | None:
    """The palette given (a file is read), else the root's palette file, else the class
    file's colours."""
    if isinstance(palette, (str, Path)):
        return read_palette_file(palette)
    if palette is None and folder is not None and (folder / PALETTE_FILE).is_file():
        return read_palette_file(folder / PALETTE_FILE)
    return file_palette if palette is None else palette


def _items(
    folder: Path | None,
    split: str | None,
    list_file: str | Path | None,
    images_dir: str | Path | None,
    masks_dir: str | Path | None,
) -> list[Item]:
    """The list file's pairs (given, or ``{split}.txt`` in the root), else images and masks
    paired by stem."""
    if list_file is None and folder is not None and split and (folder / f"{split}.txt").is_file():
        list_file = folder / f"{split}.txt"
    if list_file is not None:
        list_file = Path(list_file)
        return read_pair_list(list_file, list_file.parent if folder is None else folder)
    return _paired(Path(".") if folder is None else folder, split, images_dir, masks_dir)


def _find_dir(base: Path, names: Sequence[str], default: str) -> Path:
    return next((base / d for d in names if (base / d).is_dir()), base / default)


def _paired(
    base: Path, split: str | None, images_dir: str | Path | None, masks_dir: str | Path | None
) -> list[Item]:
    """Images and their masks paired by file stem (a missing mask is reported on load)."""
    img_dir = _find_dir(base, IMAGE_DIRS, "images") if images_dir is None else Path(images_dir)
    mask_dir = _find_dir(base, MASK_DIRS, "masks") if masks_dir is None else Path(masks_dir)
    if split is not None and (img_dir / split).is_dir():
        img_dir, mask_dir = img_dir / split, mask_dir / split
    need_dir(img_dir, "image")
    masks = {}
    if mask_dir.is_dir():
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    items = [
        Item(p, masks.get(p.stem, mask_dir / f"{p.stem}.png"), p.stem)
        for p in sorted(img_dir.iterdir())
        if p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not items:
        raise FileNotFoundError(f"{img_dir}: no images found")
    return items
