"""The dataset contract every loader follows, and validation of labels as they load.

A sample is ``dict(image=HxWx3 uint8, mask=HxW uint8, path=str, name=str)`` before
transforms, plus ``skipped=[(path, problem), ...]`` when served. Images are read by
:func:`atrous.imageio.read_image`, as displayed (EXIF orientation applied), masks as stored
(the policy is in :mod:`atrous.imageio`). Each dataset maps its own void label to
:data:`IGNORE_INDEX` (255) through a lookup table, so the loss and the metrics (DeepLab's
protocol: "pixels labelled 255 ignored") see one ignore index whatever the source.
Decoding mask files is :mod:`atrous.data.masks`'s; this module keeps the policies (bad
samples skipped or raised, palette PNGs checked or not).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from atrous.constants import IGNORE_INDEX
from atrous.data import masks
from atrous.data.errors import DatasetError
from atrous.data.masks import Decoded, identity_lut, make_lut
from atrous.imageio import ImageReadError, label_dtype, read_image

OnError = Literal["raise", "skip"]
PaletteCheck = Literal["off", "warn", "error"]
PALETTE_CHECKS = ("off", "warn", "error")

__all__ = [
    "PALETTE_CHECKS",
    "DatasetError",
    "Item",
    "OnError",
    "PaletteCheck",
    "SegmentationDataset",
    "SkipReport",
    "identity_lut",
    "make_lut",
]


@dataclass(frozen=True)
class Item:
    """One (image, mask) pair on disk. ``mask`` may be None for unlabelled data."""

    image: Path
    mask: Path | None
    name: str


@dataclass
class SkipReport:
    """Files left out under ``on_error="skip"``: path -> problem (the first one met).

    Each process fills its own; with DataLoader workers the records travel with the samples
    (``sample["skipped"]``, gathered by :func:`atrous.data.collate` into
    ``batch["skipped"]``) and the main process adds them up with :meth:`update`.
    """

    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, problem: str) -> bool:
        """Record one skipped file; False when it was already recorded."""
        if path in self.skipped:
            return False
        self.skipped[path] = problem
        return True

    def update(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Record ``(path, problem)`` pairs, e.g. a batch's ``batch["skipped"]``."""
        for path, problem in pairs:
            self.add(path, problem)

    def __len__(self) -> int:
        return len(self.skipped)

    def __str__(self) -> str:
        lines = [f"{len(self.skipped)} item(s) skipped"]
        lines += [f"  {p}: {why}" for p, why in self.skipped.items()]
        return "\n".join(lines)


def _read_item_image(path: Path) -> np.ndarray:
    """:func:`atrous.imageio.read_image`, its error as a :class:`DatasetError`."""
    try:
        return read_image(path)
    except ImageReadError as e:
        raise DatasetError(e.path, e.problem) from e


class SegmentationDataset(Dataset):
    """Base class: a list of :class:`Item`, class names, palette and a raw-label table.

    ``transforms(sample, rng)`` is applied after loading and validation. With ``seed`` set,
    the random state of sample ``i`` in epoch ``e`` is ``np.random.default_rng((seed, e, i))``,
    so augmentation is a pure function of (seed, epoch, index): training resumes exactly
    and the number of DataLoader workers does not change the batches. Without a seed each
    sample draws its state from torch's generator (seeded per worker by the DataLoader).

    ``on_error="raise"`` raises :class:`DatasetError` for a bad sample; ``"skip"`` records it
    in :attr:`skip_report` and in the served sample's ``"skipped"`` list, and serves the
    next good item instead (so indices stay valid).

    A dataset format also knows its layout on disk: :meth:`detect` tells whether a folder
    holds it and :meth:`splits` which splits the folder has (a subclass registers itself
    under its format name with :func:`atrous.data.registry.register_format`).
    """

    # The format name the class is registered under (set by register_format), else None.
    format_name: ClassVar[str | None] = None
    class_names: tuple[str, ...] = ()
    palette: np.ndarray | None = None
    label_palette: np.ndarray | None = None
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        items: Sequence[Item],
        *,
        class_names: Sequence[str],
        palette: np.ndarray | None,
        lut: np.ndarray | None = None,
        transforms: Callable[..., dict[str, Any]] | None = None,
        on_error: OnError = "raise",
        seed: int | None = None,
        palette_check: PaletteCheck = "error",
        root: str | Path | None = None,
    ) -> None:
        if palette_check not in PALETTE_CHECKS:
            raise ValueError(f"palette_check must be off, warn or error, got {palette_check!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not 0 < len(class_names) < IGNORE_INDEX:
            raise ValueError(
                f"need 1..254 classes (255 is the ignore index), got {len(class_names)}"
            )
        self.items = list(items)
        self.class_names = tuple(class_names)
        # label_palette decodes colour masks and checks palette PNGs (None: the dataset has
        # no colours); palette draws the classes (subclasses without colours fill it in).
        self.label_palette = (
            None if palette is None else np.asarray(palette, np.uint8).reshape(-1, 3)
        )
        if self.label_palette is not None and len(self.label_palette) < len(self.class_names):
            raise ValueError(
                f"palette has {len(self.label_palette)} colours for {len(self.class_names)} classes"
            )
        self.palette = self.label_palette
        self.lut = identity_lut(len(self.class_names)) if lut is None else np.asarray(lut)
        self.transforms = transforms
        self.on_error = on_error
        self.seed = seed
        self.epoch = 0
        self.palette_check = palette_check
        self._palette_warned = False
        self.root = None if root is None else Path(root)
        self.skip_report = SkipReport()

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether the folder ``root`` is laid out as this format (the base: never)."""
        return False

    @classmethod
    def splits(cls, root: Path) -> list[str]:
        """The splits the folder ``root`` has in this format (``atrous data check`` without
        --split checks them all)."""
        return []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, items={len(self)}, "
            f"classes={self.num_classes})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (used only when ``seed`` is set)."""
        self.epoch = int(epoch)

    # -- loading -------------------------------------------------------------------------
    def read_mask(self, path: Path) -> np.ndarray:
        """A mask file as train ids (HxW of :func:`~atrous.imageio.label_dtype`, uint8 for
        the 1..254 classes a dataset has; 255 = ignore), validated."""
        raw, is_train_ids = self.read_raw_mask(path)
        if is_train_ids:
            return raw.astype(label_dtype(self.num_classes))
        return self.to_train_ids(raw, path)

    def read_raw_mask(self, path: Path) -> Decoded:
        """A mask file's values and whether they are already train ids (colour-coded masks
        are decoded through the palette); override for new file formats."""
        return masks.read_mask_image(path, lambda im: self._decode_mask_image(im, path))

    def _decode_mask_image(self, im: Image.Image, path: Path) -> Decoded:
        check = None
        if self.palette_check != "off" and self.label_palette is not None:
            check = partial(self._check_png_palette, path=path)
        to_index = partial(self._rgb_to_index, path=path)
        return masks.decode_mask_image(im, path, rgb_to_index=to_index, check_palette=check)

    def _check_png_palette(self, im: Image.Image, idx: np.ndarray, path: Path) -> None:
        """A palette PNG must draw each class with the dataset's colour: an error, or under
        ``palette_check="warn"`` one warning per dataset."""
        assert self.label_palette is not None
        palette = self.label_palette[: len(self.class_names)]
        problem = masks.palette_mismatch(im, idx, palette, type(self).__name__)
        if problem is None:
            return
        if self.palette_check == "error":
            raise DatasetError(
                path,
                f"{problem}; if the indices are right (a tool's own palette), pass "
                'palette_check="off" or "warn" (CLI: --palette-check off)',
            )
        if not self._palette_warned:
            self._palette_warned = True
            warnings.warn(
                f'{path}: {problem}; reading the indices anyway (palette_check="warn", '
                "warned once per dataset)",
                stacklevel=2,
            )

    def _rgb_to_index(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        """Colour-coded mask -> class indices through the palette; unknown colours are errors."""
        if self.label_palette is None:
            raise DatasetError(path, "RGB mask but the dataset has no palette to decode it")
        palette = self.label_palette[: self.num_classes]
        return masks.rgb_to_index(rgb, path, palette, self.ignore_colours())

    def ignore_colours(self) -> set[int]:
        """Packed RGB colours that mean ignore in colour-coded masks (VOC's border colour...)."""
        return {0xFFFFFF}

    def load_item(self, item: Item) -> dict[str, Any]:
        """Read and validate one item (no transforms). Raises :class:`DatasetError`."""
        image = _read_item_image(item.image)
        sample: dict[str, Any] = {"image": image, "path": str(item.image), "name": item.name}
        if item.mask is None:
            sample["mask"] = np.full(image.shape[:2], IGNORE_INDEX, label_dtype(self.num_classes))
            return sample
        shape = masks.stored_mask_shape(item.mask)
        if shape is not None and shape != image.shape[:2]:
            # The size first: a mask of the wrong size is the fault, whatever its values.
            raise masks.size_mismatch(item.image, item.mask, shape, image.shape)
        mask = self.read_mask(item.mask)
        if mask.ndim != 2:
            raise DatasetError(item.mask, f"mask must be 2-D, got shape {mask.shape}")
        if mask.shape != image.shape[:2]:
            raise masks.size_mismatch(item.image, item.mask, mask.shape, image.shape)
        sample["mask"] = mask
        return sample

    def to_train_ids(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw labels -> train ids (0..n-1, 255 = ignore); values the dataset does not define
        are an error naming the file and the values."""
        return masks.to_train_ids(raw, path, self.lut, self.num_classes)

    def _rng_for(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng((self.seed, self.epoch, index))
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index``, transformed; under ``on_error="skip"`` the next good item when
        it is bad. ``sample["skipped"]`` lists the ``(path, problem)`` pairs met on the way
        (empty when none), so the records reach the main process from DataLoader workers."""
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        index %= n
        skipped: list[tuple[str, str]] = []
        for k in range(n):
            item = self.items[(index + k) % n]
            try:
                sample = self.load_item(item)
                break
            except DatasetError as e:
                if self.on_error == "raise":
                    raise
                skipped.append((e.path, e.problem))
                if self.skip_report.add(e.path, e.problem):
                    warnings.warn(f"skipping {e}", stacklevel=2)
        else:
            raise DatasetError(self.root or "dataset", f"all {n} items failed to load")
        if self.transforms is not None:
            sample = self.transforms(sample, self._rng_for(index))
        sample["skipped"] = skipped
        return sample
