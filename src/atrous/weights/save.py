""":func:`save`: a model → an atrous safetensors file that :func:`~.load.load` rebuilds
with no other argument (metadata in :mod:`.metadata`), written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from atrous.fileio import atomic_path
from atrous.models.deeplab import DeepLab

from .extensions import extension_metadata
from .metadata import model_metadata


def save(
    model: DeepLab,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    extra: dict[str, str] | None = None,
    palette: Sequence[tuple[int, int, int]] | None = None,
) -> Path:
    """Write ``model`` as safetensors with its configuration as metadata, atomically.

    ``class_names``, ``mean``/``std`` (0-1 RGB normalization) and ``palette`` (one RGB
    triple per class, for coloured masks) default to ``model.metadata``'s; ``extra``
    entries are added as given (string values). Extensions the model carries (a learned
    CRF-as-RNN layer) record their own entries. Returns ``path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: atrous saves weights as .safetensors")
    meta = model_metadata(model, class_names, mean, std, palette)
    meta.update(extension_metadata(model))
    meta.update(extra or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path
