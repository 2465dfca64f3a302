"""The dataset contract every loader follows, and validation of labels as they load.

A sample is ``dict(image=HxWx3 uint8, mask=HxW uint8, path=str, name=str)`` before
transforms, plus ``skipped=[(path, problem), ...]`` when served. Images are read by
:func:`atrous.imageio.read_image`, as displayed (EXIF orientation applied), masks as stored
(the policy is in :mod:`atrous.imageio`). Each dataset maps its own void label to
:data:`IGNORE_INDEX` (255) through a lookup table, so the loss and the metrics (DeepLab's
protocol: "pixels labelled 255 ignored") see one ignore index whatever the source.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from atrous.constants import IGNORE_INDEX
from atrous.imageio import ImageReadError, label_dtype, read_image, stored_size

OnError = Literal["raise", "skip"]
PaletteCheck = Literal["off", "warn", "error"]
PALETTE_CHECKS = ("off", "warn", "error")
# Lookup-table value for a raw label that the dataset does not define.
_INVALID = -1


class DatasetError(ValueError):
    """A sample that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


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


def make_lut(mapping: Mapping[int, int], size: int = 256, default: int = _INVALID) -> np.ndarray:
    """A raw-label -> train-id table; raw values not in ``mapping`` get ``default``."""
    lut = np.full(size, default, dtype=np.int16)
    for k, v in mapping.items():
        lut[k] = v
    return lut


def identity_lut(num_classes: int, void: Sequence[int] = ()) -> np.ndarray:
    """0..n-1 kept, 255 and each ``void`` raw value -> ignore, anything else invalid."""
    mapping = {i: i for i in range(num_classes)}
    mapping[IGNORE_INDEX] = IGNORE_INDEX
    for v in void:
        mapping[v] = IGNORE_INDEX
    return make_lut(mapping)


def _read_item_image(path: Path) -> np.ndarray:
    """:func:`atrous.imageio.read_image`, its error as a :class:`DatasetError`."""
    try:
        return read_image(path)
    except ImageReadError as e:
        raise DatasetError(e.path, e.problem) from e


def _size_mismatch(item: Item, mask: np.ndarray, image: np.ndarray) -> DatasetError:
    """The error for a mask whose size is not its image's, saying when the mask fits the
    image's stored pixels, i.e. was drawn before a 90°/270° EXIF rotation."""
    mh, mw = mask.shape
    ih, iw = image.shape[:2]
    try:
        drawn_unrotated = mask.shape == stored_size(item.image) != (ih, iw)
    except ImageReadError:
        drawn_unrotated = False
    if drawn_unrotated:
        return DatasetError(
            item.mask,
            f"mask size {mw}x{mh} fits image {item.image} only before its EXIF orientation "
            f"(shown {iw}x{ih}): the mask seems drawn on the un-rotated pixels; images are "
            "read as displayed, masks as stored, so redraw the mask on the displayed image "
            "or save the image with its rotation applied",
        )
    return DatasetError(
        item.mask,
        f"mask size {mw}x{mh} differs from image {iw}x{ih} ({item.image.name})",
    )


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
    """

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

    def read_raw_mask(self, path: Path) -> tuple[np.ndarray, bool]:
        """A mask file's values and whether they are already train ids (colour-coded masks
        are decoded through the palette); override for new file formats."""
        try:
            with Image.open(path) as im:
                im.load()
                return self._decode_mask_image(im, path)
        except FileNotFoundError as e:
            raise DatasetError(path, "mask file not found") from e
        except DatasetError:
            raise
        except Image.DecompressionBombError as e:
            raise DatasetError(path, f"mask declares too many pixels to decode safely ({e})") from e
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(path, f"unreadable mask ({e})") from e

    def _decode_mask_image(self, im: Image.Image, path: Path) -> tuple[np.ndarray, bool]:
        if im.mode == "P":
            idx = np.asarray(im, dtype=np.uint8)
            if self.palette_check != "off" and self.label_palette is not None:
                self._check_png_palette(im, idx, path)
            return idx, False
        if im.mode == "L":
            return np.asarray(im, dtype=np.uint8), False
        if im.mode == "1":  # a bilevel mask (1-bit PNG/TIFF): values 0 and 1
            return np.asarray(im, dtype=np.uint8), False
        if im.mode == "LA":  # grey + alpha: the grey values are the labels if alpha is unused
            alpha = np.asarray(im.getchannel("A"))
            if alpha.min() < 255:
                raise DatasetError(
                    path,
                    "grey+alpha mask with transparent pixels: the alpha channel is not a label; "
                    "save the mask as 8-bit grey (mode L), with the void pixels set to 255",
                )
            return np.asarray(im.getchannel("L"), dtype=np.uint8), False
        if im.mode in ("I", "I;16", "I;16B", "I;16L"):
            return np.asarray(im).astype(np.int64), False
        if im.mode in ("RGB", "RGBA"):
            return self._rgb_to_index(np.asarray(im.convert("RGB"), np.uint8), path), True
        raise DatasetError(
            path,
            f"unsupported mask mode {im.mode!r} (want a palette PNG, 8/16-bit grey, 1-bit or "
            "RGB colour codes)",
        )

    def _check_png_palette(self, im: Image.Image, idx: np.ndarray, path: Path) -> None:
        """A palette PNG must draw each class with the dataset's colour, or it was saved with
        another dataset's palette (a classic silent label mix-up)."""
        pal = im.getpalette()
        if pal is None:
            return
        pal_arr = np.zeros((256, 3), np.uint8)
        pal = np.asarray(pal[: 256 * 3], np.uint8).reshape(-1, 3)
        pal_arr[: len(pal)] = pal
        used = np.flatnonzero(np.bincount(idx.ravel(), minlength=256))
        used = used[used < len(self.class_names)]
        bad = [int(u) for u in used if not np.array_equal(pal_arr[u], self.label_palette[u])]
        if not bad:
            return
        u = bad[0]
        problem = (
            f"palette PNG colours do not match the {type(self).__name__} palette: index {u} "
            f"is drawn {tuple(int(c) for c in pal_arr[u])}, expected "
            f"{tuple(int(c) for c in self.label_palette[u])} ({len(bad)} index(es) differ)"
        )
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
        code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
        code |= rgb[..., 2]
        pal = self.label_palette[: self.num_classes].astype(np.int32)
        keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
        colours, inverse = np.unique(code, return_inverse=True)
        out = np.full(colours.shape, _INVALID, np.int64)
        for j, c in enumerate(colours):
            hit = np.flatnonzero(keys == c)
            if hit.size:
                out[j] = hit[0]
            elif c in self.ignore_colours():
                out[j] = IGNORE_INDEX
        if (out == _INVALID).any():
            c = int(colours[np.flatnonzero(out == _INVALID)[0]])
            raise DatasetError(
                path, f"RGB mask has colour {(c >> 16, (c >> 8) & 255, c & 255)} not in the palette"
            )
        return out[inverse.reshape(code.shape)]

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
        shape = self._stored_mask_shape(item.mask)
        if shape is not None and shape != image.shape[:2]:
            # The size first: a mask of the wrong size is the fault, whatever its values.
            raise _size_mismatch(item, np.empty(shape, np.uint8), image)
        mask = self.read_mask(item.mask)
        if mask.ndim != 2:
            raise DatasetError(item.mask, f"mask must be 2-D, got shape {mask.shape}")
        if mask.shape != image.shape[:2]:
            raise _size_mismatch(item, mask, image)
        sample["mask"] = mask
        return sample

    @staticmethod
    def _stored_mask_shape(path: Path) -> tuple[int, int] | None:
        """A mask image's (h, w) from its header; None when PIL cannot open it (a
        non-image format such as SBD's .mat, or a bad file that :meth:`read_mask` reports)."""
        try:
            return stored_size(path)  # the header only, whatever its declared size
        except Exception:
            return None

    def to_train_ids(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw labels -> train ids (0..n-1, 255 = ignore); values the dataset does not define
        are an error naming the file and the values."""
        if raw.size and (raw.min() < 0 or raw.max() >= len(self.lut)):
            bad = np.unique(raw[(raw < 0) | (raw >= len(self.lut))])
            raise DatasetError(path, f"label values {_fmt_values(bad)} outside the classes")
        mapped = self.lut[raw]
        if (mapped == _INVALID).any():
            bad = np.unique(raw[mapped == _INVALID])
            raise DatasetError(
                path,
                f"label values {_fmt_values(bad)} are neither classes (0..{self.num_classes - 1} "
                f"after mapping) nor the ignore index",
            )
        return mapped.astype(label_dtype(self.num_classes))

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


def _fmt_values(vals: np.ndarray, limit: int = 8) -> str:
    v = [int(x) for x in vals[:limit]]
    return str(v)[:-1] + (", ...]" if len(vals) > limit else "]")
