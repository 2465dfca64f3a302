"""Datasets, label validation and joint transforms: the first stage of data -> model -> loss.

Every dataset yields ``dict(image, mask, path, name, skipped)`` with one ignore index (255)
whatever the source's void label (``skipped``: the ``(path, problem)`` pairs of bad files
passed over under ``on_error="skip"``); :func:`build_dataset` builds one by name,
:func:`collate` batches (use it with DataLoader: it gathers the skip records),
:func:`train_transforms` / :func:`eval_transforms` are the DeepLab v3 (sec. 4) presets.
"""

from __future__ import annotations

from atrous.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from atrous.data.base import DatasetError, Item, SegmentationDataset, SkipReport
from atrous.data.check import DatasetReport, scan_dataset
from atrous.data.datasets import (
    ADE20K,
    CamVid,
    Cityscapes,
    FolderDataset,
    VOCSegmentation,
    camvid_sequence,
    read_class_file,
    read_palette_file,
)
from atrous.data.factory import (
    DATASETS,
    FORMATS,
    available_splits,
    build_dataset,
    collate,
    detect_format,
)
from atrous.data.palettes import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    VOC_PALETTE,
    colorize,
    overlay,
    palette_for,
)
from atrous.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SyntheticSegmentation
from atrous.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    PadToSize,
    RandomCrop,
    RandomGaussianBlur,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    eval_transforms,
    train_transforms,
)
from atrous.imageio import read_image  # re-exported: the one image reader

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "DATASETS",
    "FORMATS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "CamVid",
    "Cityscapes",
    "ColorJitter",
    "Compose",
    "DatasetError",
    "DatasetReport",
    "FolderDataset",
    "Item",
    "Normalize",
    "PadToSize",
    "RandomCrop",
    "RandomGaussianBlur",
    "RandomHorizontalFlip",
    "RandomScale",
    "Resize",
    "SegmentationDataset",
    "SkipReport",
    "SyntheticSegmentation",
    "VOCSegmentation",
    "available_splits",
    "build_dataset",
    "camvid_sequence",
    "collate",
    "colorize",
    "detect_format",
    "eval_transforms",
    "overlay",
    "palette_for",
    "read_class_file",
    "read_image",
    "read_palette_file",
    "scan_dataset",
    "train_transforms",
]
