"""From a model (or a weights file) and its settings to what a Segmenter runs: the one place
where inference decisions are made.

- :func:`prepare_model`: the network as it will run (loaded from a file; optimized at the
  settings' precision) and the learned CRF-as-RNN layer taken off it. The layer runs once on
  the TTA-averaged probabilities, whether the network is optimized or not.
- :func:`segmenter_options`: the Segmenter's arguments: the settings' scales, else those the
  weights were validated at (:func:`default_scales`); the CRF (``"auto"``: the learned
  layer, if any); the class count and smallest input the weights imply; the device
  (:func:`resolve_device`).

:func:`atrous.inference.build_segmenter` and :meth:`Segmenter.from_model
<atrous.inference.Segmenter.from_model>` build the Segmenter from these two; ``atrous
predict``, ``eval``, ``crf-search``, ``serve``, the demo and training's validation go through
them. The input normalization is :meth:`atrous.normalization.Normalization.of` the weights'
metadata, read by the Segmenter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atrous.crf.rnn_model import split_crf
from atrous.inference.settings import CRFChoice, CRFHook, InferenceSettings

__all__ = [
    "PreparedModel",
    "cuda_problem",
    "default_scales",
    "min_input_size",
    "prepare_model",
    "resolve_device",
    "segmenter_options",
]


@dataclass(frozen=True)
class PreparedModel:
    """A network ready to run (as loaded, or optimized) and the learned CRF-as-RNN layer
    taken off it, as a Segmenter hook (None where the weights have none)."""

    net: nn.Module
    learned_crf: CRFHook | None = None

    @property
    def config(self) -> dict[str, Any]:
        return dict(getattr(self.net, "config", None) or {})

    @property
    def metadata(self) -> dict[str, Any]:
        """The weights' metadata (``precision`` added by :func:`~atrous.inference.optimize`)."""
        return dict(getattr(self.net, "metadata", None) or {})


def prepare_model(model: Any, settings: InferenceSettings | None = None) -> PreparedModel:
    """``model`` (a module, or a weights file for :func:`atrous.weights.load`) split into its
    network and learned CRF (:func:`atrous.crf.split_crf`), the network optimized for the CPU
    at ``settings.precision`` when it is set (:func:`atrous.inference.optimize`, with the
    settings' calibration and backend). A PreparedModel is returned as it is."""
    if isinstance(model, PreparedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        from atrous.weights import load

        model = load(model)
    net, learned = split_crf(model)
    if settings is not None and settings.precision is not None:
        from atrous.inference.optimize import optimize

        net = optimize(
            net, settings.precision, calibration=settings.calibration, backend=settings.backend
        )
    return PreparedModel(net, learned)


def default_scales(metadata: Mapping[str, Any]) -> tuple[float, ...]:
    """The scales the weights were validated at (``inference_scales``, saved by training),
    else ``(1.0,)``."""
    return tuple(metadata.get("inference_scales") or (1.0,))


def min_input_size(config: Mapping[str, Any], metadata: Mapping[str, Any]) -> int:
    """The smallest model input side: an exported file's ``min_size``, else the output stride
    + 1 (a smaller input reaches a feature map too small to normalize)."""
    return int(metadata.get("min_size") or int(config.get("output_stride") or 32) + 1)


def resolve_device(name: Any) -> torch.device:
    """``name`` (``--device``) as a torch device: None or ``"auto"`` is CUDA where there is
    one, else the CPU. ValueError (one line, naming the flag) for a name torch does not know,
    or a CUDA device this machine cannot give (:func:`cuda_problem`). Inference and training
    both decide with it."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device: unknown device {name!r}") from None
    problem = cuda_problem(device)
    if problem:
        raise ValueError(f"--device {name}: {problem}")
    return device


def cuda_problem(device: torch.device) -> str | None:
    """Why ``device`` cannot run here (a CPU-only torch build; a CUDA build with no GPU
    visible; a GPU index past the last GPU), or None."""
    if device.type != "cuda":
        return None
    if not torch.backends.cuda.is_built():
        return (
            f"this torch build has no CUDA (torch {torch.__version__}); install a CUDA build "
            "(see docs/gpu.md) or use --device cpu"
        )
    if not torch.cuda.is_available():
        return (
            f"no CUDA GPU is visible (torch {torch.__version__}, CUDA {torch.version.cuda}); "
            "check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use --device cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        names = ", ".join(f"cuda:{i}" for i in range(count))
        return f"there is no GPU {device.index}: {count} GPU{'s' * (count != 1)} visible ({names})"
    return None


def segmenter_options(
    prepared: PreparedModel,
    settings: InferenceSettings,
    crf: CRFChoice = "auto",
    **overrides: Any,
) -> dict[str, Any]:
    """The keyword arguments of :class:`~atrous.inference.Segmenter` for ``prepared`` run with
    ``settings``. ``crf``: ``"auto"`` runs the learned CRF-as-RNN layer (if any) once on the
    full-resolution, TTA-averaged probabilities; a callable (e.g. a dense CRF) replaces it;
    None runs the network alone. ``overrides`` (any Segmenter argument) win."""
    if not (crf is None or crf == "auto" or callable(crf)):
        raise TypeError(f"crf must be 'auto', None or a callable, got {crf!r}")
    config, metadata = prepared.config, prepared.metadata
    options: dict[str, Any] = {
        "model": prepared.net,
        "scales": default_scales(metadata) if settings.scales is None else settings.scales,
        "flip": settings.flip,
        "tile_size": settings.tile_size,
        "tile_overlap": settings.tile_overlap,
        "auto_tile": settings.auto_tile,
        "batch_size": settings.batch_size,
        "device": None if settings.device is None else resolve_device(settings.device),
        "crf": prepared.learned_crf if isinstance(crf, str) else crf,
        "min_size": min_input_size(config, metadata),
    }
    if "num_classes" in config:
        options["num_classes"] = int(config["num_classes"])
    return {**options, **overrides}
