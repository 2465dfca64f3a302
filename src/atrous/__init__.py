"""atrous: the DeepLab family of semantic-segmentation systems in PyTorch.

DeepLab v1 (VGG-16 LargeFOV), v2 (ResNet + summed ASPP), v3 (multi-grid, cascade, ASPP with
image pooling), v3+ (encoder-decoder), the fully connected CRF, and evaluation by the
papers' protocol. Start with :func:`atrous.models.build` or the ``atrous`` command.

Subpackages load on first use, as in torchvision: ``import atrous; atrous.models.build(...)``.
The layering (each imports only those before it) is in ARCHITECTURE.md: ``models``,
``weights``, ``crf``, ``data``, ``inference`` and ``export``, ``evaluation``, ``training``,
``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public subpackages and modules, importable as attributes of ``atrous`` on first access.
SUBMODULES = (
    "constants",
    "crf",
    "data",
    "evaluation",
    "export",
    "fileio",
    "imageio",
    "inference",
    "losses",
    "models",
    "training",
    "weights",
)

__all__ = ["SUBMODULES", "__version__"]


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"atrous.{name}")
    raise AttributeError(f"module 'atrous' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES])
