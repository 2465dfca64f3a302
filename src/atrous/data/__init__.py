"""Datasets, label validation and joint transforms: the first stage of data -> model -> loss.

Every dataset yields ``dict(image, mask, path, name, skipped)`` with one ignore index (255)
whatever the source's void label (``skipped``: the ``(path, problem)`` pairs of bad files
passed over under ``on_error="skip"``); :func:`build_dataset` builds one by name,
:func:`open_dataset` opens the one a command evaluates on (format detected, classes
reconciled), :func:`collate` batches (use it with DataLoader: it gathers the skip records),
:func:`train_transforms` / :func:`eval_transforms` are the DeepLab v3 (sec. 4) presets.
"""

from __future__ import annotations

from atrous.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from atrous.data.ade20k import ADE20K
from atrous.data.base import DatasetError, Item, SegmentationDataset, SkipReport
from atrous.data.batch import collate
from atrous.data.camvid import CamVid, camvid_sequence
from atrous.data.check import DatasetReport, scan_dataset
from atrous.data.cityscapes import Cityscapes
from atrous.data.class_files import read_class_file, read_palette_file
from atrous.data.factory import (
    DATASET_FORMATS,
    DATASETS,
    FORMATS,
    FormatOptionError,
    available_splits,
    build_dataset,
    detect_format,
    open_dataset,
)
from atrous.data.folder import FolderDataset
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
from atrous.data.voc import VOCSegmentation
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
    "DATASET_FORMATS",
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
    "FormatOptionError",
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
    "open_dataset",
    "overlay",
    "palette_for",
    "read_class_file",
    "read_image",
    "read_palette_file",
    "scan_dataset",
    "train_transforms",
]
