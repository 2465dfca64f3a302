"""``optimize(model, precision)``: the same model, faster on the CPU, with the same forward
contract (normalized float (N, 3, H, W) in, ``{"out": float32 logits}`` out), so the
:class:`~atrous.inference.Segmenter` and every command run it unchanged.

- ``fp32``: BatchNorm folded into the convolution before it (:func:`fold_batchnorm`),
  channels-last (NHWC) tensors, which oneDNN's convolutions run without reordering, under
  ``torch.inference_mode`` (:mod:`atrous.inference.fastpath`).
- ``bf16``: the same with bfloat16 weights and activations (logits returned as float32), on
  CPUs with native bf16 (AVX512-BF16 or AMX).
- ``int8``: static post-training quantization, calibrated on ``calibration`` (your images: a
  folder, a dataset root, or normalized batches), run by ONNX Runtime's VNNI int8 kernels
  (:func:`atrous.export.export` with ``precision="int8"``), as an
  :class:`~atrous.weights.exported.ExportedModel`.

How much each gains and loses (time, label agreement with fp32, mIoU) is measured in
``benchmarks/bench_deploy.py``, not assumed. This module imports torch only when it runs, so
that ``atrous.inference`` (and the command line's flags) load without it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.hardware import bf16_supported  # (re-exported: its home is atrous.hardware)
from atrous.inference.settings import BACKENDS, RUNTIME_PRECISIONS

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "RUNTIME_PRECISIONS",
    "OptimizedModel",  # noqa: F822 (module __getattr__)
    "bf16_supported",
    "fold_batchnorm",  # noqa: F822 (module __getattr__)
    "optimize",
]

# Deprecated alias of RUNTIME_PRECISIONS (export's precisions, fp32/fp16/int8, are another set).
PRECISIONS = RUNTIME_PRECISIONS

# The eager fast path's torch classes, loaded on first use (PEP 562).
_FASTPATH = ("OptimizedModel", "fold_batchnorm")


def __getattr__(name: str) -> Any:
    if name in _FASTPATH:
        from atrous.inference import fastpath

        return getattr(fastpath, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _checked_backend(precision: str, backend: str | None) -> str:
    """The backend ``precision`` runs on (``backend``, or its default), checked."""
    if precision not in RUNTIME_PRECISIONS:
        raise ValueError(f"precision must be one of {RUNTIME_PRECISIONS}, got {precision!r}")
    backend = backend or ("onnxruntime" if precision == "int8" else "eager")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if (precision, backend) in (("int8", "eager"), ("bf16", "onnxruntime")):
        raise ValueError(
            f"precision {precision} runs on {'ONNX Runtime' if precision == 'int8' else 'eager'}"
            f" only (backend {backend!r} was asked)"
        )
    return backend


def optimize(
    model: nn.Module,
    precision: str = "fp32",
    calibration: Any = None,
    calibration_images: int = 32,
    backend: str | None = None,
) -> nn.Module:
    """``model`` made fast for CPU inference at ``precision`` (see the module docstring); the
    original is left untouched. ``int8`` needs ``calibration`` and runs in ONNX Runtime;
    ``backend="onnxruntime"`` also runs fp32 there (exported to ONNX on the way); ``bf16``
    runs eagerly. A learned CRF-as-RNN layer is not part of the result:
    :func:`atrous.inference.build_segmenter` keeps it as the Segmenter's CRF."""
    backend = _checked_backend(precision, backend)
    config = dict(getattr(model, "config", {}) or {})
    metadata = {**(getattr(model, "metadata", {}) or {}), "precision": precision}
    if getattr(model, "metadata", {}).get("source") == "exported":
        raise ValueError("the model is an exported file already: optimize its weights file")
    if backend == "onnxruntime":
        return _onnxruntime(model, precision, calibration, calibration_images, metadata)
    if precision == "bf16" and not bf16_supported():
        raise ValueError(
            "this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 would be slower than "
            "fp32 here; use precision='fp32' or 'int8'"
        )
    from atrous.crf.rnn_model import split_crf
    from atrous.inference.fastpath import eager_fast_model

    net, _ = split_crf(model)  # a model handed in with its CRF layer runs without it
    return eager_fast_model(net, precision, config, metadata)


def _onnxruntime(
    model: nn.Module,
    precision: str,
    calibration: Any,
    calibration_images: int,
    metadata: dict[str, Any],
) -> nn.Module:
    """``model`` exported to ONNX at ``precision`` and loaded back into ONNX Runtime."""
    from atrous.export import export
    from atrous.weights.exported import load_exported

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{precision}.onnx"
        export(
            model,
            path,
            precision=precision,
            calibration=calibration,
            calibration_images=calibration_images,
            crf="drop",
        )
        fast = load_exported(path)  # the session holds the graph; the file may go
    fast.metadata.update({k: v for k, v in metadata.items() if k not in fast.metadata})
    fast.metadata["precision"] = precision
    return fast
