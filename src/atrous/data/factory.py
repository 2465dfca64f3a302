"""Datasets by name, over the format registry (:mod:`atrous.data.registry`): building one
(:func:`build_dataset`), telling a folder's format (:func:`detect_format`) and splits
(:func:`available_splits`), and opening the dataset a command evaluates on
(:func:`open_dataset`). Each format's layout is its class's knowledge (``detect``,
``splits``); this module only asks the classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# The built-in formats, imported for their registration (in atrous.data.registry).
from atrous.data import ade20k, camvid, cityscapes, folder, voc  # noqa: F401
from atrous.data.base import PaletteCheck
from atrous.data.batch import collate as collate  # re-exported: it lived here
from atrous.data.registry import dataset_names, format_names, formats, lookup
from atrous.data.synthetic import SyntheticSegmentation

# The folder layouts a dataset can be read from, in the order detection tries them.
FORMATS: tuple[str, ...] = format_names()
# The same, by a name that cannot be mistaken for export or serve formats.
DATASET_FORMATS = FORMATS
# Every dataset name build_dataset takes: the formats, their variants and synthetic.
DATASETS: tuple[str, ...] = (*dataset_names(), "synthetic")
# Images of the synthetic dataset when open_dataset is not told a length.
SYNTHETIC_LENGTH = 50


class FormatOptionError(ValueError):
    """An option given for a dataset format that does not take it (a classes file for
    VOC...). ``option`` is the option's name, ``fmt`` the format, ``owner`` the format
    that takes it."""

    def __init__(self, option: str, fmt: str, owner: str) -> None:
        self.option, self.fmt, self.owner = option, fmt, owner
        super().__init__(f"{option} is for the {owner} format, not {fmt}")


def detect_format(root: str | Path) -> str:
    """Guess a dataset's format from its folder layout (each format's ``detect``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    for f in formats():
        if f.cls.detect(root):
            return f.name
    raise ValueError(
        f"{root}: cannot tell the dataset format from the layout; pass --format "
        f"({'|'.join(format_names())})"
    )


def available_splits(fmt: str, root: str | Path) -> list[str]:
    """The splits a dataset folder has (used by ``atrous data check`` without --split)."""
    found = lookup(fmt)
    if found is None:
        raise ValueError(f"unknown dataset format {fmt!r}; choose from {', '.join(format_names())}")
    return found[0].splits(Path(root))


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
    if name == "synthetic":
        return SyntheticSegmentation(split=split, transforms=transforms, **kwargs)
    found = lookup(name)
    if found is None:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder")
    cls, split_names = found
    split = split_names.get(split, split)
    return cls(root, split or None, transforms=transforms, **kwargs)


def open_dataset(
    fmt: str,
    root: str | Path | None,
    split: str,
    *,
    num_classes: int | None = None,
    classes_file: str | Path | None = None,
    palette_check: PaletteCheck = "error",
    length: int | None = None,
    size: int = 128,
) -> tuple[torch.utils.data.Dataset, str]:
    """The dataset a command evaluates on, and its format (``fmt="auto"``: detected).

    ``synthetic`` has no files: ``length`` images (default :data:`SYNTHETIC_LENGTH`) of side
    ``size``. Any other format needs ``root``, an existing folder. A folder dataset takes
    its class names from ``classes_file`` or a classes file in its root, else reads its
    masks as ``num_classes`` class ids (the model's); a classes file for another format is
    a :class:`FormatOptionError`. A split without images is an error.
    """
    if fmt == "synthetic":
        n = length or SYNTHETIC_LENGTH
        return build_dataset("synthetic", split=split, length=n, size=size), fmt
    if root is None:
        raise ValueError(f"dataset {fmt!r} needs a root folder")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    fmt = detect_format(root) if fmt == "auto" else fmt
    kwargs: dict[str, Any] = {"palette_check": palette_check}
    if fmt == "folder":
        # A classes file (given, or in the root) wins; without one the masks are read as
        # num_classes class ids.
        kwargs.update(classes_file=classes_file, num_classes=num_classes)
    elif classes_file:
        raise FormatOptionError("classes_file", fmt, "folder")
    ds = build_dataset(fmt, root, split, **kwargs)
    if len(ds) == 0:
        raise ValueError(f"{root}: split {split!r} of the {fmt} dataset has no images")
    return ds, fmt
