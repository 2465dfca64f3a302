"""Export a model to a portable file: ONNX (``.onnx``, run by ONNX Runtime) or a
``torch.export`` program (``.pt2``), dynamic in batch, height and width, with optional
in-graph preprocessing and argmax, the weights' metadata inside, and a check against the
eager model before the file is kept. Start with :func:`export`; ``atrous export`` is its CLI.
"""

from __future__ import annotations

from .exporter import (
    EXPORT_FORMAT_BY_SUFFIX,
    EXPORT_PRECISIONS,
    FORMATS,
    RTOL,
    ExportError,
    ExportReport,
    build_graph,
    export,
    verify,
)
from .graph import INPUTS, OUTPUTS, ExportGraph, export_metadata, labels_dtype

__all__ = [
    "EXPORT_FORMAT_BY_SUFFIX",
    "EXPORT_PRECISIONS",
    "FORMATS",
    "INPUTS",
    "OUTPUTS",
    "RTOL",
    "ExportError",
    "ExportGraph",
    "ExportReport",
    "build_graph",
    "export",
    "export_metadata",
    "labels_dtype",
    "verify",
]
