"""What the registry (:mod:`.registry`) records about one published weights file: an
:class:`Entry` (where it is, how to check it, what it is, what its source reported and how
to reproduce that), its :class:`Metric` rows, and :class:`Preprocess`, the input
preparation the source used (``Entry.transforms()``, as torchvision's ``Weights.transforms``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from atrous.class_tables import ADE20K_CLASSES, CITYSCAPES_CLASSES, VOC_CLASSES
from atrous.normalization import Normalization

# The file formats the registry knows, and what atrous does with each.
FORMATS = {
    "torchvision_pth": "torchvision segmentation .pth (a state dict, read weights_only)",
    "tf_zoo_tarball": "TF model-zoo DeepLab tarball (a TF V2 checkpoint, read without TF)",
    "imagenet_pth": "ImageNet backbone .pth in torchvision's naming",
    "tf_imagenet": "TF model-zoo ImageNet backbone tarball (not loadable by atrous yet)",
}
KINDS = ("segmentation", "backbone")
# torch.hub's rule for the hash in a file name: ``name-<sha256 prefix>.ext``.
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


@dataclass(frozen=True)
class Metric:
    """One number the source reports, with the split and protocol it was measured on."""

    name: str  # "mIoU", "pixel accuracy", "top-1", "top-5" (percent)
    value: float
    split: str  # e.g. "PASCAL VOC 2012 val"
    protocol: str  # e.g. "OS 16, eval scales [1.0], no flip, eval crop 513x513"
    # The protocol's inference settings, for commands that reproduce it (None: not stated).
    output_stride: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __str__(self) -> str:
        return f"{self.value:g}% {self.name}, {self.split} ({self.protocol})"


@dataclass(frozen=True)
class Preprocess:
    """The source's input preparation: optional resize of the shorter side (bilinear,
    antialiased, as torchvision's ``SemanticSegmentation`` preset does on tensors), then
    ``(x / 255 - mean) / std``. Call it on an (H, W, 3) uint8 array or a (3, H, W) tensor of
    0-255 values; returns a (1, 3, H', W') float32 batch."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_shorter: int | None = None

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
        if x.ndim == 3 and x.shape[-1] == 3 and x.shape[0] != 3:
            x = x.permute(2, 0, 1)
        x = x.float()[None]
        if self.resize_shorter:
            h, w = x.shape[-2:]
            scale = self.resize_shorter / min(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return Normalization(self.mean, self.std)(x)


@dataclass(frozen=True)
class Entry:
    """One published weights file. Facts about the file come from its source (``source``
    names where); ``unknown`` says which facts the source does not publish."""

    name: str  # "tf:xception65_coco_voc_trainaug"
    kind: str  # "segmentation" (a whole model) | "backbone" (ImageNet)
    format: str  # a key of FORMATS
    urls: tuple[str, ...]  # https; the first is tried first
    arch: str  # the atrous model (segmentation) or backbone (ImageNet) it fills
    dataset: str  # training data, as the source names it
    classes: str  # the output classes
    preprocessing: Preprocess
    metrics: tuple[Metric, ...]  # the first is the headline number
    license: str
    source: str  # where every fact above was read
    build: Mapping[str, Any] = field(default_factory=dict)  # weights.load overrides: the
    # build options of the headline number (e.g. the TF zoo's OS 16)
    num_classes: int | None = None
    sha256_prefix: str | None = None  # published (torchvision's file names); None: recorded
    # in the cache at first download, after the format's own checks
    published_urls: tuple[str, ...] = ()  # as the source prints them, where they differ
    num_params: int | None = None  # as the source reports it
    size_mb: float | None = None  # as the source reports it
    inference_scales: tuple[float, ...] = (1.0,)
    unknown: str = ""  # facts the source does not publish (left None/empty above)
    notes: str = ""

    @property
    def file_name(self) -> str:
        """The file's name: the last part of its URL (the cache and mirrors use it)."""
        return self.urls[0].rsplit("/", 1)[-1]

    @property
    def headline(self) -> Metric | None:
        return self.metrics[0] if self.metrics else None

    @property
    def integrity(self) -> str:
        """How a download of this file is checked, in words."""
        if self.sha256_prefix:
            return f"SHA-256 starts with {self.sha256_prefix} (published in the file name)"
        checks = "CRC32C of the index and of every tensor (the TF checkpoint's own)"
        return f"{checks} at first download; its SHA-256 is then recorded and checked on use"

    @property
    def meta(self) -> dict[str, Any]:
        """torchvision-style metadata: categories, metrics, build options, provenance."""
        categories = {
            21: list(VOC_CLASSES),
            19: list(CITYSCAPES_CLASSES),
            151: ["other", *ADE20K_CLASSES],
        }.get(self.num_classes or 0)
        return {
            "categories": categories,
            "num_classes": self.num_classes,
            "num_params": self.num_params,
            "metrics": [m.__dict__.copy() for m in self.metrics],
            "build": dict(self.build),
            "inference_scales": list(self.inference_scales),
            "mean": self.preprocessing.mean,
            "std": self.preprocessing.std,
            "dataset": self.dataset,
            "license": self.license,
            "source": self.source,
            "urls": list(self.urls),
            "file_name": self.file_name,
            "integrity": self.integrity,
        }

    def transforms(self) -> Preprocess:
        """The input preparation the source used (see :class:`Preprocess`)."""
        return self.preprocessing

    def __str__(self) -> str:
        return self.name
