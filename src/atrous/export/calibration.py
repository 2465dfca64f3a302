"""Calibration images for int8 quantization: the user's own data, as model inputs.

A source is a folder of images (searched recursively), a dataset root that
:func:`atrous.data.detect_format` recognizes (its images, masks left out), an image file, or
an iterable of model-input batches (normalized float (N, 3, H, W) tensors or arrays). Images
are taken evenly spread over the source, read with the one image reader (EXIF applied), shrunk
so the long side is at most ``max_side`` (activation ranges do not depend on the image size;
memory does), and normalized with the weights' mean/std."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from atrous.normalization import Normalization

from .diagnostics import ExportError

__all__ = ["calibration_batches", "calibration_files"]


def calibration_files(source: str | os.PathLike, limit: int) -> list[Path]:
    """Up to ``limit`` image files of ``source``, evenly spread over it."""
    from atrous.imageio import IMAGE_EXTENSIONS

    root = Path(source)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ExportError(f"{root}: no such calibration folder or image")
    files: list[Path] = []
    try:
        from atrous.data import build_dataset
        from atrous.data.factory import detect_format

        fmt = detect_format(root)
        if fmt != "folder":
            from atrous.data.factory import available_splits

            splits = available_splits(fmt, root)
            split = "train" if "train" in splits else splits[0]
            files = [it.image for it in build_dataset(fmt, root, split=split).items]
    except (ValueError, FileNotFoundError, IndexError):
        files = []
    if not files:
        files = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and "mask" not in p.parent.name.lower()
            and not p.parent.name.lower().endswith("annot")
        )
    if not files:
        raise ExportError(f"{root}: no images to calibrate on")
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return rgb
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


def calibration_batches(
    source: Any,
    normalization: Normalization,
    limit: int = 32,
    max_side: int = 513,
    min_side: int = 1,
    uint8: bool = False,
) -> list[np.ndarray]:
    """Model-input batches from ``source`` (see the module docstring): normalized float32
    (1, 3, H, W) arrays, or with ``uint8`` the images themselves as (1, H, W, 3) uint8 (for a
    graph with in-graph preprocessing). Images are padded up to ``min_side``."""
    if isinstance(source, (str, os.PathLike)):
        from atrous.imageio import read_image

        out = []
        for path in calibration_files(source, limit):
            try:
                rgb = np.asarray(read_image(path))
            except Exception as e:
                raise ExportError(f"{path}: cannot read this calibration image: {e}") from None
            rgb = _shrink(rgb, max_side)
            h, w = rgb.shape[:2]
            if h < min_side or w < min_side:
                rgb = np.pad(
                    rgb, ((0, max(0, min_side - h)), (0, max(0, min_side - w)), (0, 0)), mode="edge"
                )
            if uint8:
                out.append(np.ascontiguousarray(rgb[None]))
            else:
                x = normalization(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
                out.append(x[None].numpy())
        return out
    if not isinstance(source, Iterable):
        raise ExportError(
            f"calibration must be a folder, dataset root, image file or an iterable of "
            f"normalized (N, 3, H, W) batches, got {type(source).__name__}"
        )
    if uint8:
        raise ExportError(
            "a graph with in-graph preprocessing calibrates on images: give a folder or "
            "dataset root, not tensors"
        )
    out = []
    for b in source:
        a = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        if a.ndim != 4 or a.shape[1] != 3 or not np.issubdtype(a.dtype, np.floating):
            raise ExportError(
                f"calibration batches must be normalized float (N, 3, H, W), got {a.dtype} "
                f"{tuple(a.shape)}"
            )
        out.append(a.astype(np.float32))
        if sum(x.shape[0] for x in out) >= limit:
            break
    return out
