"""Inference around any DeepLab-style model: preprocessing, multi-scale + flip test-time
augmentation (v3 sec. 4.3), sliding-window tiles with bounded memory, batching, and a dense
CRF hook (v1 sec. 4). Start with :func:`build_segmenter` (or :meth:`Segmenter.from_model`).

- :mod:`~atrous.inference.settings`: :class:`InferenceSettings` and :class:`CRFSettings`, the
  records whose fields declare the commands' flags (:mod:`~atrous.inference.flags`).
- :mod:`~atrous.inference.pipeline`: every decision from a model and its settings to a
  Segmenter (:func:`prepare_model`, :func:`segmenter_options`).
- :mod:`~atrous.inference.segmenter`: :class:`Segmenter` and :func:`build_segmenter`.
- :mod:`~atrous.inference.optimize`: the fast CPU path (:func:`optimize`).
- :mod:`~atrous.inference.io`: input files, output names and writers.
- :mod:`~atrous.inference.video`: videos (PyAV): frames with their timestamps, the frame loop,
  label PNGs or a label video, an overlay video, :func:`~atrous.inference.video.segment_video`.

Names load on first access (PEP 562), so that the settings (and the command line built from
them) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# ``optimize`` is both a submodule and its function: bind the function now (the module is
# light), before a later ``import atrous.inference.optimize`` could leave the module there.
from atrous.inference.optimize import optimize as optimize

# Public name -> the module that defines it.
_NAMES = {
    "IMAGENET_MEAN": "preprocess",
    "IMAGENET_STD": "preprocess",
    "Normalizer": "preprocess",
    "to_uint8_hwc": "preprocess",
    "AUTO_TILE_SIZE": "segmenter",
    "Segmenter": "segmenter",
    "build_segmenter": "segmenter",
    "tile_starts": "segmenter",
    "OptimizedModel": "optimize",
    "RUNTIME_PRECISIONS": "optimize",
    "fold_batchnorm": "optimize",
    "optimize": "optimize",
    "PreparedModel": "pipeline",
    "prepare_model": "pipeline",
    "CRFHook": "settings",
    "CRFSettings": "settings",
    "InferenceSettings": "settings",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
