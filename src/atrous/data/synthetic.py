"""A synthetic segmentation dataset that needs no files: the default for demos and tests.

Each image is a textured background with 3-9 objects of sizes from a few pixels to most of
the frame. A class is a (shape, colour family, texture) triple, so a small model has to use
colour *and* texture: colour families overlap between classes, and every object's hue,
brightness and texture phase are jittered. Everything is vectorized numpy drawn from
``np.random.default_rng((seed, index))``, so sample ``i`` is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from atrous.constants import IGNORE_INDEX
from atrous.imageio import label_dtype

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "disc", "box", "triangle", "stripes", "dots")
SYNTHETIC_PALETTE = np.array(
    [(0, 0, 0), (220, 60, 60), (60, 180, 75), (70, 110, 230), (240, 200, 40), (170, 80, 200)],
    np.uint8,
)
# Mean RGB colour of each object class; neighbours share channels so colour alone is ambiguous.
_BASE = np.array(
    [(200, 70, 60), (80, 170, 80), (70, 100, 200), (200, 180, 60), (160, 80, 180)], np.float32
)


class SyntheticSegmentation(Dataset):
    """``length`` images of ``size`` (int or (h, w)); classes :data:`SYNTHETIC_CLASSES`.

    Samples have the same dict form as the file datasets (``path`` is ``"synthetic://i"``),
    and ``transforms(sample, rng)`` with ``seed``/``set_epoch`` behave the same way.
    ``ignore_border`` marks a band of that many pixels around each object 255, like VOC.
    """

    class_names = SYNTHETIC_CLASSES
    palette = SYNTHETIC_PALETTE
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        length: int = 200,
        size: int | Sequence[int] = 128,
        *,
        seed: int = 0,
        transforms: Callable[..., dict[str, Any]] | None = None,
        ignore_border: int = 0,
        max_objects: int = 9,
        split: str = "train",
    ) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        h, w = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if h < 8 or w < 8:
            raise ValueError(f"size must be at least 8x8, got {h}x{w}")
        self.length, self.size, self.seed = int(length), (h, w), int(seed)
        self.transforms = transforms
        self.ignore_border = int(ignore_border)
        self.max_objects = int(max_objects)
        # Different splits draw disjoint streams from the same seed.
        self._split_key = {"train": 0, "val": 1, "test": 2}.get(split, abs(hash(split)) % 997 + 3)
        self.split = split
        self.epoch = 0
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self._yy, self._xx = yy, xx
        self._noise = 6 * np.random.default_rng(self.seed).standard_normal((64, 64, 3), np.float32)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index %= self.length
        image, mask = self.render(index)
        sample = {
            "image": image,
            "mask": mask,
            "path": f"synthetic://{index}",
            "name": f"syn_{index:06d}",
        }
        if self.transforms is not None:
            rng = np.random.default_rng((self.seed, self._split_key, self.epoch, index, 1))
            sample = self.transforms(sample, rng)
        sample["skipped"] = []  # the file datasets' skip records; nothing to skip here
        return sample

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (HxWx3 uint8) and mask (HxW uint8) of sample ``index``."""
        rng = np.random.default_rng((self.seed, self._split_key, index))
        h, w = self.size
        yy, xx = self._yy, self._xx
        # Background: a smooth colour gradient plus low-frequency waves; separable in x and y
        # (outer sums/products of 1-D profiles) so it costs one pass over the image.
        c0, c1 = rng.uniform(30, 150, 3), rng.uniform(30, 150, 3)
        ang = rng.uniform(0, 2 * np.pi)
        x1, y1 = self._xx[0], self._yy[:, 0]
        t = (np.cos(ang) * x1 / w)[None, :] + (np.sin(ang) * y1 / h)[:, None]
        f = rng.uniform(1.5, 4.0, 2) * 2 * np.pi
        wave = np.cos(f[1] * y1 / h)[:, None] * np.sin(f[0] * x1 / w + rng.uniform(0, 6))[None, :]
        base = ((t + 1) / 2)[..., None] * (c1 - c0).astype(np.float32) + c0.astype(np.float32)
        img = base + 15 * wave[..., None]
        # Sensor noise: a fixed noise tile at a random offset (drawing fresh Gaussian noise
        # for every pixel was half the cost of a sample).
        oy, ox = rng.integers(0, 64, 2)
        reps = (-(-(h + oy) // 64), -(-(w + ox) // 64), 1)
        img += np.tile(self._noise, reps)[oy : oy + h, ox : ox + w]
        mask = np.zeros((h, w), label_dtype(self.num_classes))
        border = np.zeros((h, w), bool)
        n_obj = int(rng.integers(3, self.max_objects + 1))
        for _ in range(n_obj):
            cls = int(rng.integers(1, self.num_classes))
            # Sizes log-uniform from ~4% to ~60% of the short side: objects of many scales.
            r = np.exp(rng.uniform(np.log(0.04), np.log(0.6))) * min(h, w) / 2 + 2
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            region = self._shape(cls, rng, cy, cx, r)
            if region is None:
                continue
            sl, inside = region
            colour = (_BASE[cls - 1] * rng.uniform(0.75, 1.2) + rng.normal(0, 12, 3)).astype(
                np.float32
            )
            tex = self._texture(cls, rng, yy[sl], xx[sl], r).astype(np.float32, copy=False)
            gain = rng.uniform(0.6, 1.0, 3).astype(np.float32)
            np.copyto(img[sl], colour + tex[..., None] * gain, where=inside[..., None])
            if self.ignore_border:
                b = self.ignore_border
                edge = inside ^ _erode(inside, b)
                border[sl] &= ~inside
                border[sl] |= edge
            np.copyto(mask[sl], mask.dtype.type(cls), where=inside)
        if self.ignore_border:
            mask[border] = IGNORE_INDEX
        return np.clip(img, 0, 255).astype(np.uint8), mask

    def _shape(
        self, cls: int, rng: np.random.Generator, cy: float, cx: float, r: float
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        h, w = self.size
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, h)
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, w)
        if y1 <= y0 or x1 <= x0:
            return None
        sl = (slice(y0, y1), slice(x0, x1))
        yy, xx = self._yy[sl] - cy, self._xx[sl] - cx
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u, v = c * xx + s * yy, -s * xx + c * yy
        if cls in (1, 5):  # ellipse (disc, and the dotted class)
            a, b = r, r * rng.uniform(0.5, 1.0)
            inside = (u / a) ** 2 + (v / b) ** 2 <= 1
        elif cls in (2, 4):  # rotated rectangle (box, and the striped class)
            inside = (np.abs(u) <= r * 0.9) & (np.abs(v) <= r * rng.uniform(0.4, 0.9))
        else:  # triangle: inside all three half-planes
            angs = theta + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
            px, py = r * np.cos(angs), r * np.sin(angs)
            inside = np.ones(xx.shape, bool)
            for i in range(3):
                j = (i + 1) % 3
                cross = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
                inside &= cross >= 0
        return (sl, inside) if inside.any() else None

    @staticmethod
    def _texture(
        cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, r: float
    ) -> np.ndarray:
        if cls == 4:  # stripes: high-contrast bands at a random angle and period
            a = rng.uniform(0, np.pi)
            period = rng.uniform(4, 9)
            return 60 * np.sign(np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period))
        if cls == 5:  # dots: a grid of bright spots
            p = rng.uniform(5, 9)
            return 70 * ((np.sin(2 * np.pi * xx / p) * np.sin(2 * np.pi * yy / p)) > 0.5) - 20
        if cls == 2:  # box: fine pixel noise
            return 22 * rng.standard_normal(xx.shape, dtype=np.float32)
        if cls == 3:  # triangle: smooth shading across the object
            return 40 * (xx - xx.mean()) / max(r, 1.0)
        return np.zeros(xx.shape)  # disc: flat


def _erode(m: np.ndarray, k: int) -> np.ndarray:
    """Binary erosion by a (2k+1)^2 square, via shifted ANDs (no scipy needed)."""
    out = m.copy()
    for _ in range(k):
        e = out.copy()
        e[1:] &= out[:-1]
        e[:-1] &= out[1:]
        e[:, 1:] &= out[:, :-1]
        e[:, :-1] &= out[:, 1:]
        out = e
    return out
