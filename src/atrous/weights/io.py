"""Reading checkpoint files: the tensors of a ``.safetensors`` or ``.pth`` file and its
metadata, with the wrappers of training scripts removed.

``.pth`` files are read with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import CheckpointError

StateDict = dict[str, Tensor]
Checkpoint = str | os.PathLike | Mapping[str, Tensor]


def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, dict[str, str]]:
    """The tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file, and its metadata.

    Wrappers used by training scripts (``model_state`` as VainF, ``state_dict``, ``model``)
    are unwrapped, and DataParallel's ``module.`` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(
            f"{path}: cannot read it as a PyTorch checkpoint with weights_only=True ({e})"
        ) from None
    try:
        return unwrap(obj), {}
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def unwrap(obj: Any) -> StateDict:
    """The state dict inside a checkpoint object (see :func:`read_state_dict`)."""
    if isinstance(obj, Mapping):
        for key in ("model_state", "state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("holds no state dict (expected a mapping of names to tensors)")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise CheckpointError("holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def checkpoint_name(checkpoint: Checkpoint) -> str:
    """How errors and ``model.metadata["weights"]`` name a checkpoint: its path, or
    ``"state dict"`` for one in memory."""
    return str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "state dict"


def read_checkpoint(checkpoint: Checkpoint) -> tuple[StateDict, dict[str, str]]:
    """Tensors and metadata of a file (:func:`read_state_dict`) or of an in-memory state
    dict (:func:`unwrap`; no metadata)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return read_state_dict(checkpoint)
    return unwrap(checkpoint), {}
