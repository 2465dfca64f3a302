"""``export(model, path)``: a loaded model → a portable ``.onnx`` or ``.pt2`` file, checked
against the eager model before it is kept.

Both formats start from one ``torch.export`` trace of :class:`~.graph.ExportGraph` with
dynamic batch, height and width (``torch.export.Dim``; the current ONNX exporter,
``torch.onnx.export(..., dynamo=True)``, translates that program). The trace uses an odd
size, so nothing in the graph is tied to a multiple of the output stride; the check then runs
the written file at two other sizes (odd ones, batch 1 and 2) and compares it with the eager
graph (:func:`verify`). A file is written atomically and only once it passed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atrous.fileio import atomic_path
from atrous.normalization import Normalization

from .diagnostics import ExportError, first_line, quiet
from .graph import OUTPUTS, ExportGraph, Output, export_metadata

__all__ = [
    "EXPORT_FORMAT_BY_SUFFIX",
    "EXPORT_PRECISIONS",
    "FORMATS",
    "FP16_RTOL",
    "PRECISIONS",
    "ExportError",
    "ExportReport",
    "build_graph",
    "export",
    "trace",
    "verify",
]

# The file format an output path's suffix asks for.
EXPORT_FORMAT_BY_SUFFIX = {".onnx": "onnx", ".pt2": "pt2"}
TRACE_SIZE = (2, 97, 129)  # (batch, height, width) the dynamic trace runs at
CHECK_SIZES = ((1, 65, 81), (2, 50, 77))  # where the written file is compared with eager
RTOL = 1e-4  # max |exported - eager| / max |eager| accepted for fp32 logits and probabilities
FP16_RTOL = 1e-2  # the same for an fp16 graph
# The precisions of an exported file (inference.optimize.PRECISIONS are those a model runs at).
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
# Deprecated aliases: the names before #26.
FORMATS = EXPORT_FORMAT_BY_SUFFIX
PRECISIONS = EXPORT_PRECISIONS
MAX_SIDE = 16384


@dataclass
class ExportReport:
    """What :func:`export` wrote and measured."""

    path: str
    format: str
    bytes: int
    input: str
    output: str
    dynamic: bool
    seconds: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_graph(
    model: nn.Module, output: Output = "logits", with_preprocess: bool = False, crf: str = "error"
) -> tuple[nn.Module, ExportGraph]:
    """(the model whose metadata the file records, the graph to trace).

    A CRF-as-RNN model's learned CRF runs on the permutohedral lattice, whose hash table is
    built from the image at run time: no ONNX or ``torch.export`` op set expresses it.
    ``crf="error"`` refuses such a model; ``crf="drop"`` exports its network alone."""
    from atrous.crf.rnn_model import split_crf

    if output not in OUTPUTS:
        raise ExportError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if crf not in ("error", "drop"):
        raise ValueError(f"crf must be 'error' or 'drop', got {crf!r}")
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "num_classes" not in config:
        raise ExportError(
            "export needs an atrous model (atrous.models.build or atrous.weights.load): "
            f"{type(model).__name__} has no config"
        )
    net, learned = split_crf(model)
    if learned is not None and crf == "error":
        raise ExportError(
            f"{config.get('arch')} has a learned CRF-as-RNN layer, which cannot be exported: "
            "its permutohedral lattice builds a hash table from each image at run time, which "
            "no ONNX or torch.export op set expresses. Export the network alone with --no-crf "
            "(crf='drop'); the file then gives the logits before the CRF"
        )
    norm = Normalization.of(getattr(model, "metadata", None)) if with_preprocess else None
    graph = ExportGraph(net, config["num_classes"], norm, output).eval()
    return net, graph


def min_input_side(model: nn.Module) -> int:
    """The smallest input side of a dynamic export: twice the output stride, plus one (a
    2x2 feature map; at a 1x1 one the ASPP's broadcasts specialize). The Segmenter pads
    smaller inputs up to it (``min_size`` in the file's metadata)."""
    return 2 * int(model.config.get("output_stride") or 32) + 1


def _dynamic_shapes(graph: ExportGraph, min_side: int) -> dict[str, Any]:
    dim = torch.export.Dim
    batch = dim("batch", min=1, max=1024)
    h = dim("height", min=min_side, max=MAX_SIDE)
    w = dim("width", min=min_side, max=MAX_SIDE)
    axes = {0: batch, 1: h, 2: w} if graph.preprocess else {0: batch, 2: h, 3: w}
    return {"x": axes}


def trace(
    graph: ExportGraph, min_side: int, dynamic: bool = True, size: Sequence[int] = TRACE_SIZE
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``graph`` at ``size`` (batch, height, width), with dynamic batch,
    height and width unless ``dynamic`` is False."""
    x = graph.example_input(*size)
    shapes = _dynamic_shapes(graph, min_side) if dynamic else None
    try:
        with quiet(), torch.no_grad():
            return torch.export.export(graph, (x,), dynamic_shapes=shapes, strict=False)
    except Exception as e:
        raise ExportError(f"torch.export could not trace the model: {first_line(e)}") from e


def compare(
    eager: torch.Tensor, exported: torch.Tensor, output: str, rtol: float = RTOL
) -> dict[str, Any]:
    """How far the exported output is from eager's: relative max error for logits and
    probabilities (at most ``rtol``), the share of equal labels for labels."""
    if tuple(eager.shape) != tuple(exported.shape):
        return {
            "ok": False,
            "problem": f"shape {tuple(exported.shape)}, eager {tuple(eager.shape)}",
        }
    if output == "labels":
        agree = float((eager == exported).double().mean())
        return {"ok": agree >= 0.999, "label_agreement": agree}
    diff = float((eager.double() - exported.double()).abs().max())
    scale = float(eager.double().abs().max()) or 1.0
    return {"ok": diff / scale <= rtol, "max_abs": diff, "max_rel": diff / scale}


def verify(
    graph: ExportGraph,
    run: Callable[[torch.Tensor], torch.Tensor],
    sizes: Sequence[Sequence[int]] = CHECK_SIZES,
    rtol: float = RTOL,
) -> list[dict[str, Any]]:
    """Run ``run`` (the exported file) and the eager ``graph`` on the same inputs at each
    (batch, height, width) of ``sizes``; one comparison (:func:`compare`) per size."""
    checks = []
    for size in sizes:
        x = graph.example_input(*size)
        with torch.no_grad():
            ref = graph(x)
        got = run(x)
        checks.append({"size": list(size), **compare(ref, got, graph.output, rtol)})
    return checks


@dataclass(frozen=True)
class _Traced:
    """A traced graph on its way to a file: the program, the eager graph it was traced from
    (the checks' reference), the file's metadata, the ONNX options, and whether and at which
    (batch, height, width) sizes the written file is checked."""

    program: torch.export.ExportedProgram
    graph: ExportGraph
    meta: dict[str, str]
    opset: int
    simplify: bool
    check: bool
    check_sizes: Sequence[Sequence[int]]


# What a writer returns: (details for the report, the checks against eager).
Written = tuple[dict[str, Any], list[dict[str, Any]]]


def _write_fp32(t: _Traced, path: Path, fmt: str) -> Written:
    """The float32 graph as ONNX or .pt2; checks: eager at the check sizes within
    :data:`RTOL`."""
    if fmt == "onnx":
        from .onnx import write_onnx

        details, run = write_onnx(t.program, path, t.meta, t.opset, t.simplify)
    else:
        from .pt2 import write_pt2

        details, run = write_pt2(t.program, path, t.meta)
    return details, verify(t.graph, run, t.check_sizes) if t.check else []


def _write_converted(
    t: _Traced,
    path: Path,
    precision: str,
    convert: Callable[[Path, Path], dict[str, Any]],
    key: str,
) -> tuple[dict[str, Any], Callable[[torch.Tensor], torch.Tensor]]:
    """fp32 ONNX to a temporary file, turned into ``path`` by ``convert(fp32, path)`` (what
    it did goes into ``details[key]``), the metadata (with ``export_precision``) written
    again; (details, run in ONNX Runtime)."""
    import tempfile

    import onnx

    from atrous.weights.exported import ort_session

    from .onnx import INPUT_NAME, write_onnx

    meta = {**t.meta, "export_precision": precision}
    with tempfile.TemporaryDirectory() as d:
        fp32 = Path(d) / "fp32.onnx"
        details, _ = write_onnx(t.program, fp32, meta, t.opset, t.simplify)
        details[key] = convert(fp32, path)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for name, value in meta.items():
        proto.metadata_props.add(key=name, value=value)
    onnx.save_model(proto, str(path))
    session = ort_session(path)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])

    return details, run


def _label_agreement(
    graph: ExportGraph, run: Callable[[torch.Tensor], torch.Tensor], batches: Sequence[Any]
) -> list[dict[str, Any]]:
    """The share of labels ``run`` and the eager ``graph`` agree on, per batch (reported, not
    judged: int8 is not exact)."""
    checks = []
    for b in batches:
        x = torch.from_numpy(b)
        with torch.no_grad():
            ref = graph(x)
        got = run(x)
        if graph.output != "labels":
            ref, got = ref.argmax(1), got.argmax(1)
        agree = float((ref == got).double().mean())
        size = b.shape[:3] if graph.preprocess else b.shape[:1] + b.shape[-2:]
        checks.append({"size": [int(s) for s in size], "ok": True, "label_agreement": agree})
    return checks


def _write_int8(
    t: _Traced, path: Path, model: nn.Module, calibration: Any, limit: int, min_side: int
) -> Written:
    """Static int8 (:func:`.quantize.quantize_onnx`) calibrated on the user's images; checks:
    label agreement with eager on calibration images (reported: int8 is not exact)."""
    from .calibration import calibration_batches
    from .onnx import INPUT_NAME
    from .quantize import quantize_onnx

    norm = Normalization.of(getattr(model, "metadata", None))
    uint8 = t.graph.preprocess
    batches = calibration_batches(calibration, norm, limit, min_side=min_side, uint8=uint8)

    def quantize(src: Path, dst: Path) -> dict[str, Any]:
        return quantize_onnx(src, dst, batches, INPUT_NAME)

    details, run = _write_converted(t, path, "int8", quantize, "quantization")
    return details, _label_agreement(t.graph, run, batches[:4]) if t.check else []


def _write_fp16(t: _Traced, path: Path) -> Written:
    """Half-precision weights and arithmetic, float32 input and output (the same contract):
    half the file, for GPU runtimes (ONNX Runtime CUDA/TensorRT); ONNX Runtime's CPU provider
    runs it too, with its fp16-less operators cast to float32. Checks: eager at the check
    sizes within :data:`FP16_RTOL` (fp16 carries 11 bits of mantissa)."""
    from .quantize import convert_fp16

    details, run = _write_converted(t, path, "fp16", convert_fp16, "fp16")
    return details, verify(t.graph, run, t.check_sizes, rtol=FP16_RTOL) if t.check else []


def _refuse_mismatch(path: Path, checks: Sequence[dict[str, Any]], rtol: float) -> None:
    """ExportError (the file is not kept) if a check failed."""
    bad = [c for c in checks if not c["ok"]]
    if bad:
        raise ExportError(
            f"{path}: the exported graph does not match the eager model: {bad[0]} "
            f"(tolerance {rtol} relative); the file was not written"
        )


def _export_format(path: Path, precision: str, calibration: Any) -> str:
    """The format ``path`` asks for, once the request is checked (ExportError otherwise)."""
    fmt = EXPORT_FORMAT_BY_SUFFIX.get(path.suffix)
    if fmt is None:
        raise ExportError(f"{path}: the output must end in .onnx or .pt2")
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(
            f"precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}"
        )
    if precision != "fp32" and fmt != "onnx":
        raise ExportError(
            f"{precision} export writes ONNX (run by ONNX Runtime): use a .onnx output"
        )
    if precision == "int8" and calibration is None:
        raise ExportError("int8 needs calibration images of your data (--calib DATA)")
    return fmt


def _trace_size(size: Sequence[int] | None, dynamic: bool, min_side: int) -> tuple[int, ...]:
    """(batch, height, width) of the trace: ``size``, checked, or the default."""
    if size is None:
        size = TRACE_SIZE if dynamic else (1, 513, 513)
    size = tuple(int(s) for s in size)
    if len(size) != 3 or size[0] < 1 or min(size[1:]) < min_side:
        raise ExportError(
            f"size must be (batch, height, width) with sides >= {min_side}, got {list(size)}"
        )
    return size


def export(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    output: Output = "logits",
    with_preprocess: bool = False,
    dynamic: bool = True,
    size: Sequence[int] | None = None,
    opset: int = 18,
    simplify: bool = True,
    crf: str = "error",
    check: bool = True,
    precision: str = "fp32",
    calibration: Any = None,
    calibration_images: int = 32,
) -> ExportReport:
    """Export ``model`` to ``path``: ``.onnx`` (ONNX, opset ``opset``, checked by
    ``onnx.checker``, simplified with onnxslim) or ``.pt2`` (a ``torch.export``
    ``ExportedProgram``). The weights' metadata goes with it (ONNX ``metadata_props``, the
    .pt2's ``atrous_metadata.json``) and :func:`atrous.weights.load` reads it back.

    Args:
        output: ``logits``, ``proba`` or ``labels`` (see :mod:`.graph`).
        with_preprocess: the graph takes uint8 (N, H, W, 3) images and normalizes them.
        dynamic: dynamic batch, height and width (default); False fixes them to ``size``.
        size: (batch, height, width) of the trace; static exports default to (1, 513, 513).
        crf: ``error`` (a CRF-as-RNN model cannot be exported) or ``drop`` (its network).
        check: compare the written file with the eager model at two other sizes (dynamic)
            or at ``size`` (static) and refuse it beyond :data:`RTOL`; an int8 file is
            compared on its calibration images (label agreement with eager, reported).
        precision: ``fp32``; ``fp16`` (ONNX only): half-precision weights and arithmetic with
            float32 input and output, checked within :data:`FP16_RTOL`; or ``int8`` (ONNX
            only): static post-training quantization (:mod:`.quantize`) calibrated on
            ``calibration`` (:mod:`.calibration`: an image folder, a dataset root, or
            normalized batches), ``calibration_images`` of them.
    """
    # (over 60 lines by its signature and the documentation of its options only: the steps
    # are the functions above)
    path = Path(path)
    fmt = _export_format(path, precision, calibration)
    t0 = time.perf_counter()
    _, graph = build_graph(model, output, with_preprocess, crf)
    min_side = min_input_side(model)
    size = _trace_size(size, dynamic, min_side)
    extra = {"min_size": min_side, "export_size": json.dumps(list(size))}
    meta = export_metadata(model, graph, fmt, dynamic, extra)
    program = trace(graph, min_side, dynamic, size)
    sizes = CHECK_SIZES if dynamic else [size]
    traced = _Traced(program, graph, meta, opset, simplify, check, sizes)
    with atomic_path(path, keep_suffix=True) as tmp:
        if precision == "int8":
            details, checks = _write_int8(
                traced, tmp, model, calibration, calibration_images, min_side
            )
        elif precision == "fp16":
            details, checks = _write_fp16(traced, tmp)
        else:
            details, checks = _write_fp32(traced, tmp, fmt)
        _refuse_mismatch(path, checks, FP16_RTOL if precision == "fp16" else RTOL)
    return ExportReport(
        path=str(path),
        format=fmt,
        bytes=path.stat().st_size,
        input=graph.input_format,
        output=output,
        dynamic=dynamic,
        seconds=round(time.perf_counter() - t0, 2),
        checks=checks,
        details={**details, "metadata": json.loads(json.dumps(meta))},
    )
