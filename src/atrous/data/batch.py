"""Batching samples: :func:`collate` pads samples of different sizes to one batch and
gathers their skip records (use it as a DataLoader's ``collate_fn``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from atrous.constants import IGNORE_INDEX


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
