"""Deprecated: the dataset formats moved to one module each (:mod:`atrous.data.voc`,
:mod:`~atrous.data.cityscapes`, :mod:`~atrous.data.ade20k`, :mod:`~atrous.data.camvid`,
:mod:`~atrous.data.folder`), the class-names and palette file readers to
:mod:`atrous.data.class_files` and list files to :mod:`atrous.data.layout`. This module
re-exports their names so that old imports keep working; import from
:mod:`atrous.data` instead."""

from __future__ import annotations

from atrous.data.ade20k import ADE20K
from atrous.data.camvid import CamVid, camvid_sequence
from atrous.data.cityscapes import Cityscapes
from atrous.data.class_files import read_class_file, read_palette_file
from atrous.data.folder import IMAGE_DIRS, MASK_DIRS, FolderDataset
from atrous.data.layout import read_pair_list
from atrous.data.voc import VOCSegmentation, resolve_voc_root

__all__ = [
    "ADE20K",
    "IMAGE_DIRS",
    "MASK_DIRS",
    "CamVid",
    "Cityscapes",
    "FolderDataset",
    "VOCSegmentation",
    "camvid_sequence",
    "read_class_file",
    "read_pair_list",
    "read_palette_file",
    "resolve_voc_root",
]
