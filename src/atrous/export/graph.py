"""What an exported file computes: :class:`ExportGraph`, the network between an optional
in-graph preprocessing step and the output a deployment asks for, and the metadata that
travels with it (:func:`export_metadata`).

- input ``float_nchw`` (default): the normalized float batch (N, 3, H, W) the model takes
  (:class:`atrous.normalization.Normalization` applied by the caller, as
  :class:`~atrous.inference.Segmenter` does); ``uint8_nhwc`` (``with_preprocess``): the image
  itself, uint8 (N, H, W, 3) RGB, normalized inside the graph with the weights' mean/std in
  the same order of operations as :class:`~atrous.normalization.Normalization`.
- output ``logits`` (N, C, H, W) float32, ``proba`` (their softmax over C), or ``labels``
  (N, H, W): the argmax, uint8 up to 256 classes, else int32, so a user of the file needs no
  atrous code at all.

The logits are upsampled bilinearly to the input size inside the model (align_corners=False,
ONNX ``Resize`` with ``half_pixel``), and ASPP image pooling is a mean over H, W, so one
exported graph runs at any input size.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import torch
from torch import Tensor, nn

from atrous.normalization import Normalization

__all__ = ["INPUTS", "OUTPUTS", "ExportGraph", "export_metadata", "labels_dtype"]

Input = Literal["float_nchw", "uint8_nhwc"]
Output = Literal["logits", "proba", "labels"]
INPUTS: tuple[str, ...] = ("float_nchw", "uint8_nhwc")
OUTPUTS: tuple[str, ...] = ("logits", "proba", "labels")


def labels_dtype(num_classes: int) -> torch.dtype:
    """The label dtype of an exported ``labels`` output: uint8 up to 256 classes, else int32
    (ONNX has no uint16 ArgMax consumer worth relying on)."""
    return torch.uint8 if num_classes <= 256 else torch.int32


class ExportGraph(nn.Module):
    """``net`` (a model returning ``{"out": logits}`` or logits) as a single-input,
    single-output graph: optional preprocessing in, ``output`` out."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        normalization: Normalization | None = None,
        output: Output = "logits",
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.net = net
        self.num_classes = int(num_classes)
        self.output = output
        self.preprocess = normalization is not None
        self.bgr = False
        if normalization is not None:
            self.bgr = normalization.channel_order == "BGR"
            self.input_scale = float(normalization.input_scale)
            view = (1, 3, 1, 1)
            self.register_buffer("mean", torch.tensor(normalization.mean).view(view))
            self.register_buffer("std", torch.tensor(normalization.std).view(view))

    @property
    def input_format(self) -> Input:
        return "uint8_nhwc" if self.preprocess else "float_nchw"

    def forward(self, x: Tensor) -> Tensor:
        if self.preprocess:
            x = x.permute(0, 3, 1, 2).float()
            if self.bgr:
                x = x.flip(1)
            x = (x * self.input_scale - self.mean) / self.std
        out = self.net(x)
        logits = out["out"] if isinstance(out, dict) else out
        if self.output == "logits":
            return logits.float()
        if self.output == "proba":
            return torch.softmax(logits.float(), dim=1)
        return logits.argmax(1).to(labels_dtype(self.num_classes))

    def example_input(self, batch: int, height: int, width: int) -> Tensor:
        """A deterministic input of this graph's kind and the given size."""
        g = torch.Generator().manual_seed(0)
        if self.preprocess:
            return torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=g)
        return torch.randn(batch, 3, height, width, generator=g)


def export_metadata(
    model: nn.Module, graph: ExportGraph, fmt: str, dynamic: bool, extra: dict[str, Any]
) -> dict[str, str]:
    """The string entries an exported file carries: the weights' own metadata (the same
    entries as an atrous safetensors file, read back by :func:`atrous.weights.load`) plus how
    the graph was exported: ``export_input``, ``export_output``, ``export_format``,
    ``export_dynamic`` and ``atrous_version``, and the ``extra`` entries (the exporter's
    ``min_size``: the smallest input side)."""
    from atrous import __version__
    from atrous.weights.metadata import model_metadata

    meta = model_metadata(model)
    scales = getattr(model, "metadata", {}).get("inference_scales")
    if scales:
        meta["inference_scales"] = json.dumps([float(s) for s in scales])
    meta.update(
        {
            "atrous_version": __version__,
            "export_format": fmt,
            "export_input": graph.input_format,
            "export_output": graph.output,
            "export_dynamic": "batch,height,width" if dynamic else "static",
            "export_precision": "fp32",
        }
    )
    meta.update({k: str(v) for k, v in extra.items()})
    return meta
