"""Joint image/mask transforms (numpy + PIL, no torchvision).

Every transform is ``t(sample, rng) -> sample`` on ``dict(image=HxWx3 uint8, mask=HxW uint8)``;
random ones draw only from ``rng`` (a ``numpy.random.Generator``; an int seed or a
``torch.Generator`` are accepted too), so a sample's augmentation is reproducible from the
seed alone. Geometric transforms move image and mask together: bilinear for the image,
nearest for the mask (labels are never blended), and padding fills the mask with the ignore
index so padded pixels add no loss.

Presets follow DeepLab v3 sec. 4 (random scale 0.5-2.0, crop 513, left-right flip) and v2's
crop 321.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from atrous.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from atrous.normalization import Normalization

Sample = dict[str, Any]
RngLike = np.random.Generator | torch.Generator | int | None


def as_rng(rng: RngLike) -> np.random.Generator:
    """A numpy Generator from a Generator, torch.Generator, int seed or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=rng).item()))
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy/torch Generator, an int or None, got {type(rng)}")


def _size_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size}")
    return h, w


class Compose:
    """Apply transforms in order, all drawing from one generator."""

    def __init__(self, transforms: Sequence[Callable[[Sample, np.random.Generator], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: RngLike = None) -> Sample:
        g = as_rng(rng)
        for t in self.transforms:
            sample = t(sample, g)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def resize(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize to ``(h, w)``: bilinear image, nearest mask."""
    h, w = size
    out = dict(sample)
    img = sample["image"]
    if img.shape[:2] != (h, w):
        out["image"] = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        if sample.get("mask") is not None:
            out["mask"] = np.asarray(Image.fromarray(sample["mask"]).resize((w, h), Image.NEAREST))
    return out


class RandomScale:
    """Rescale by a factor drawn uniformly from ``scale_range`` (DeepLab v3: 0.5-2.0)."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.scale_range = (float(lo), float(hi))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        s = rng.uniform(*self.scale_range)
        h, w = sample["image"].shape[:2]
        return resize(sample, (max(1, round(h * s)), max(1, round(w * s))))

    def __repr__(self) -> str:
        return f"RandomScale({self.scale_range})"


class Resize:
    """Resize to a fixed ``(h, w)`` (or the short side to ``short`` keeping aspect)."""

    def __init__(self, size: int | Sequence[int] | None = None, short: int | None = None):
        if (size is None) == (short is None):
            raise ValueError("give exactly one of size or short")
        self.size = None if size is None else _size_pair(size, "size")
        self.short = short

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if self.size is not None:
            return resize(sample, self.size)
        h, w = sample["image"].shape[:2]
        s = self.short / min(h, w)
        return resize(sample, (max(1, round(h * s)), max(1, round(w * s))))


class PadToSize:
    """Pad bottom/right to at least ``size``: image with ``fill`` (the mean pixel, which is 0
    after normalization), mask with the ignore index."""

    def __init__(self, size: int | Sequence[int], fill: Sequence[float] | float = 0) -> None:
        self.size = _size_pair(size, "size")
        self.fill = fill

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        img = sample["image"]
        h, w = img.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return sample
        out = dict(sample)
        canvas = np.empty((h + ph, w + pw, img.shape[2]), img.dtype)
        canvas[...] = np.asarray(self.fill, img.dtype)
        canvas[:h, :w] = img
        out["image"] = canvas
        if sample.get("mask") is not None:
            m = np.full((h + ph, w + pw), IGNORE_INDEX, sample["mask"].dtype)
            m[:h, :w] = sample["mask"]
            out["mask"] = m
        return out


class RandomCrop:
    """Crop ``size`` at a random position, padding first if the sample is smaller.

    With ``class_balance`` = p > 0, a crop is, with probability p, placed to contain a pixel
    of a class drawn uniformly from the classes present in the mask (class-balanced crop
    sampling, as nnU-Net oversamples foreground): thin, rare classes such as poles and signs
    get as many crops as roads, where a uniform crop position shows them in proportion to
    their area. The pixel lands at a uniform position inside the crop."""

    def __init__(
        self,
        size: int | Sequence[int],
        fill: Sequence[float] | float = 0,
        class_balance: float = 0.0,
    ) -> None:
        if not 0.0 <= class_balance <= 1.0:
            raise ValueError(f"class_balance must be in [0, 1], got {class_balance}")
        self.size = _size_pair(size, "crop size")
        self.pad = PadToSize(self.size, fill)
        self.class_balance = float(class_balance)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample = self.pad(sample)
        h, w = sample["image"].shape[:2]
        ch, cw = self.size
        mask = sample.get("mask")
        anchor = None
        if self.class_balance and mask is not None and rng.random() < self.class_balance:
            anchor = _class_anchor(mask, rng)
        if anchor is None:
            y = int(rng.integers(0, h - ch + 1))
            x = int(rng.integers(0, w - cw + 1))
        else:  # a window of the crop's size holding the anchor pixel, inside the image
            ay, ax = anchor
            y = int(rng.integers(max(0, ay - ch + 1), min(ay, h - ch) + 1))
            x = int(rng.integers(max(0, ax - cw + 1), min(ax, w - cw) + 1))
        out = dict(sample)
        out["image"] = sample["image"][y : y + ch, x : x + cw]
        if mask is not None:
            out["mask"] = mask[y : y + ch, x : x + cw]
        return out

    def __repr__(self) -> str:
        extra = f", class_balance={self.class_balance}" if self.class_balance else ""
        return f"RandomCrop({self.size}{extra})"


def _class_anchor(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """A random pixel ``(y, x)`` of a class drawn uniformly from the labelled classes of
    ``mask`` (the ignore index excluded); None when no pixel is labelled."""
    flat = np.ascontiguousarray(mask).ravel()
    counts = np.bincount(flat, minlength=IGNORE_INDEX + 1)
    counts[IGNORE_INDEX:] = 0
    present = np.flatnonzero(counts)
    if present.size == 0:
        return None
    cls = present[int(rng.integers(0, present.size))]
    where = np.flatnonzero(flat == cls)
    i = int(where[int(rng.integers(0, where.size))])
    return divmod(i, mask.shape[1])


class RandomHorizontalFlip:
    """Left-right flip with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        out["image"] = sample["image"][:, ::-1]
        if sample.get("mask") is not None:
            out["mask"] = sample["mask"][:, ::-1]
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Photometric jitter of the image only: brightness, contrast, saturation (factors in
    ``1 ± x``) and a light hue rotation (``± hue`` of a turn, in YIQ space), in random order."""

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
    ) -> None:
        for name, v in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness,
            contrast,
            saturation,
            hue,
        )

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample["image"].astype(np.float32)
        factors = {
            "b": rng.uniform(1 - self.brightness, 1 + self.brightness),
            "c": rng.uniform(1 - self.contrast, 1 + self.contrast),
            "s": rng.uniform(1 - self.saturation, 1 + self.saturation),
            "h": rng.uniform(-self.hue, self.hue),
        }
        for k in rng.permutation(4):
            op = "bcsh"[k]
            if op == "b":
                img *= factors["b"]
            elif op == "c":
                mean = (img @ _LUMA).mean()
                img = (img - mean) * factors["c"] + mean
            elif op == "s":
                grey = (img @ _LUMA)[..., None]
                img = (img - grey) * factors["s"] + grey
            elif factors["h"] != 0.0:
                img = img @ _hue_matrix(factors["h"]).T
        out = dict(sample)
        out["image"] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        return out


class RandomGaussianBlur:
    """Gaussian blur of the image only, with probability ``p`` and a standard deviation
    drawn from ``sigma`` (pixels), as SimCLR's augmentation: robustness to focus and motion
    blur, and to the resampling of an unseen camera."""

    def __init__(self, p: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"blur probability must be in [0, 1], got {p}")
        if not 0 < sigma[0] <= sigma[1]:
            raise ValueError(f"sigma must satisfy 0 < lo <= hi, got {sigma}")
        self.p, self.sigma = float(p), (float(sigma[0]), float(sigma[1]))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        radius = rng.uniform(*self.sigma)  # PIL's GaussianBlur radius is the std deviation
        out = dict(sample)
        img = Image.fromarray(np.ascontiguousarray(sample["image"]))
        out["image"] = np.asarray(img.filter(ImageFilter.GaussianBlur(radius)))
        return out

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, sigma={self.sigma})"


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _hue_matrix(turns: float) -> np.ndarray:
    """RGB -> RGB rotation of the chroma plane (I, Q) by ``turns`` of a full circle."""
    t = 2 * np.pi * turns
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    return (np.linalg.inv(_RGB2YIQ) @ rot @ _RGB2YIQ).astype(np.float32)


class Normalize:
    """uint8 HxWx3 -> float32 3xHxW tensor ``(x/255 - mean) / std`` (the
    :class:`~atrous.normalization.Normalization` that inference applies); mask -> int64
    tensor."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        try:
            self.norm = Normalization(tuple(mean), tuple(std))
        except ValueError as e:
            raise ValueError(f"mean and std need 3 values, std > 0; got {mean}, {std}") from e

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        out = dict(sample)
        # np.array copies: decoded PIL arrays are read-only, which torch warns about
        img = torch.from_numpy(np.array(sample["image"], dtype=np.float32)).permute(2, 0, 1)
        out["image"] = self.norm(img)
        if sample.get("mask") is not None:
            out["mask"] = torch.from_numpy(np.array(sample["mask"], dtype=np.int64))
        return out

    def __repr__(self) -> str:
        return f"Normalize(mean={list(self.norm.mean)}, std={list(self.norm.std)})"


def mean_fill(mean: Sequence[float] = IMAGENET_MEAN) -> tuple[int, int, int]:
    """The uint8 pixel that normalizes to ~0: DeepLab pads crops with the mean pixel."""
    return tuple(round(255 * m) for m in mean)  # type: ignore[return-value]


def train_transforms(
    crop_size: int | Sequence[int] = 513,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    flip: bool = True,
    color_jitter: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    class_balance: float = 0.0,
    blur: float = 0.0,
) -> Compose:
    """DeepLab v3 sec. 4 training pipeline: random scale 0.5-2.0, pad with the mean pixel
    (mask: 255) and random-crop ``crop_size``, random left-right flip, optional photometric
    jitter (``color_jitter`` = brightness/contrast/saturation strength, hue a tenth of it),
    then normalization. ``class_balance``: the share of crops placed on a class drawn
    uniformly (:class:`RandomCrop`); ``blur``: the probability of a Gaussian blur."""
    ts: list[Any] = []
    if scale_range is not None:
        ts.append(RandomScale(scale_range))
    ts.append(RandomCrop(crop_size, fill=mean_fill(mean), class_balance=class_balance))
    if flip:
        ts.append(RandomHorizontalFlip(0.5))
    if color_jitter:
        c = float(color_jitter)
        ts.append(ColorJitter(c, c, c, min(c / 10, 0.5)))
    if blur:
        ts.append(RandomGaussianBlur(blur))
    ts.append(Normalize(mean, std))
    return Compose(ts)


def eval_transforms(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Compose:
    """Evaluation: full-resolution image, normalized (the papers evaluate whole images, not
    crops); ``collate`` pads a batch of different sizes."""
    return Compose([Normalize(mean, std)])
