"""``optimize(model, precision)``: the same model, faster on the CPU, with the same forward
contract (normalized float (N, 3, H, W) in, ``{"out": float32 logits}`` out), so the
:class:`~atrous.inference.Segmenter` and every command run it unchanged.

- ``fp32``: BatchNorm folded into the convolution before it (:func:`fold_batchnorm`),
  channels-last (NHWC) tensors, which oneDNN's convolutions run without reordering, under
  ``torch.inference_mode``.
- ``bf16``: the same with bfloat16 weights and activations (logits returned as float32), on
  CPUs with native bf16 (AVX512-BF16 or AMX; this machine has AVX512-BF16).
- ``int8``: static post-training quantization, calibrated on ``calibration`` (your images: a
  folder, a dataset root, or normalized batches), run by ONNX Runtime's VNNI int8 kernels
  (:func:`atrous.export.export` with ``precision="int8"``), as an
  :class:`~atrous.weights.exported.ExportedModel`.

How much each gains and loses (time, label agreement with fp32, mIoU) is measured in
``benchmarks/bench_deploy.py``, not assumed.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from atrous.hardware import bf16_supported  # (re-exported: its home is atrous.hardware)
from atrous.models.layers import FrozenBatchNorm2d

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "OptimizedModel",
    "bf16_supported",
    "fold_batchnorm",
    "optimize",
]

PRECISIONS = ("fp32", "bf16", "int8")
_BN = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _fold(conv: nn.Conv2d, bn: nn.Module) -> None:
    """``bn(conv(x))`` as one convolution: w' = w * g / s, b' = (b - mu) * g / s + beta."""
    var, mean = bn.running_var, bn.running_mean
    gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
    conv.weight = nn.Parameter(w, requires_grad=False)
    conv.bias = nn.Parameter((b - mean) * scale + beta.detach(), requires_grad=False)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm (eval statistics) into the convolution registered just before it
    in the same module (a Sequential's order, or torchvision's ``conv1``/``bn1`` pairs), in
    place, the BatchNorm replaced by Identity; returns the number folded. Group norm is left
    as it is (it has no fixed statistics)."""
    n = 0
    for module in list(model.modules()):
        children = list(module.named_children())
        for (_, a), (name_b, b) in itertools.pairwise(children):
            if (
                isinstance(a, nn.Conv2d)
                and isinstance(b, _BN)
                and a.out_channels == len(b.running_mean)
            ):
                _fold(a, b)
                setattr(module, name_b, nn.Identity())
                n += 1
    return n


class OptimizedModel(nn.Module):
    """A network run channels-last in ``dtype`` under inference mode, logits returned as
    contiguous float32; ``config`` and ``metadata`` are the original model's (with
    ``metadata["precision"]``)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, config: dict, metadata: dict) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.config = config
        self.metadata = metadata

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.net(x)
        logits = out["out"] if isinstance(out, dict) else out
        return {"out": logits.float().contiguous()}


BACKENDS = ("eager", "onnxruntime")


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
    runs eagerly. A learned CRF-as-RNN layer is not part of the result: take it with
    :func:`atrous.crf.rnn_model.split_crf` and give it to the Segmenter."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    backend = backend or ("onnxruntime" if precision == "int8" else "eager")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if (precision, backend) in (("int8", "eager"), ("bf16", "onnxruntime")):
        raise ValueError(
            f"precision {precision} runs on {'ONNX Runtime' if precision == 'int8' else 'eager'}"
            f" only (backend {backend!r} was asked)"
        )
    config = dict(getattr(model, "config", {}) or {})
    metadata = {**(getattr(model, "metadata", {}) or {}), "precision": precision}
    if getattr(model, "metadata", {}).get("source") == "exported":
        raise ValueError("the model is an exported file already: optimize its weights file")
    if backend == "onnxruntime":
        from atrous.export import export
        from atrous.weights.exported import load_exported

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"{precision}.onnx"
            export(model, path, precision=precision, calibration=calibration,
                   calibration_images=calibration_images, crf="drop")  # fmt: skip
            fast = load_exported(path)  # the session holds the graph; the file may go
        fast.metadata.update({k: v for k, v in metadata.items() if k not in fast.metadata})
        fast.metadata["precision"] = precision
        return fast
    if precision == "bf16" and not bf16_supported():
        raise ValueError(
            "this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 would be slower than "
            "fp32 here; use precision='fp32' or 'int8'"
        )
    from atrous.crf.rnn_model import split_crf

    net, _ = split_crf(model)
    net = copy.deepcopy(net).eval()
    if getattr(net, "aux_classifier", None) is not None:
        net.aux_classifier = None  # training's auxiliary head: the contract returns "out" only
    fold_batchnorm(net)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    net = net.to(dtype).to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    return OptimizedModel(net, dtype, config, metadata).eval()
