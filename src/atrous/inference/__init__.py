"""Inference around any DeepLab-style model: preprocessing, multi-scale + flip test-time
augmentation (v3 sec. 4.3), sliding-window tiles with bounded memory, batching, and a dense
CRF hook (v1 sec. 4). Start with :class:`Segmenter`."""

from __future__ import annotations

from atrous.inference.optimize import OptimizedModel, fold_batchnorm, optimize
from atrous.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalizer, to_uint8_hwc
from atrous.inference.segmenter import AUTO_TILE_SIZE, CRFHook, Segmenter, tile_starts

__all__ = [
    "AUTO_TILE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CRFHook",
    "Normalizer",
    "OptimizedModel",
    "Segmenter",
    "fold_batchnorm",
    "optimize",
    "tile_starts",
    "to_uint8_hwc",
]
