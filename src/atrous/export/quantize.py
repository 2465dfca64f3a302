"""Lower-precision ONNX graphs: fp16 (:func:`convert_fp16`) and int8 post-training static
quantization (:func:`quantize_onnx`).

int8 post-training static quantization of an exported ONNX graph with ONNX Runtime
(``quantize_static``): QDQ format, per-channel int8 weights, uint8 activations whose ranges are
calibrated (min/max) on the user's images, so ONNX Runtime runs the convolutions with VNNI
int8 kernels (U8S8).

Why ONNX Runtime's quantizer (measured, ``benchmarks/bench_deploy.py``): on this 2-core
AVX512-VNNI CPU it gives the fastest path of all we tried for DeepLab v3 ResNet-50 at 513x513
(0.52 s against 2.37 s eager fp32, 0.90 s eager bf16), the graph stays a portable ``.onnx``
with no new dependency, and calibration takes seconds. PT2E + torch.compile needs a C++
compile per shape (minutes on 2 cores, and again for every new input size); OpenVINO + NNCF
would add two large dependencies for one path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .diagnostics import ExportError, first_line, quiet

__all__ = ["convert_fp16", "quantize_onnx"]


def quantize_onnx(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    batches: Iterable[np.ndarray],
    input_name: str = "input",
    method: str = "minmax",
) -> dict[str, Any]:
    """Quantize ``fp32_path`` (a float-input graph) into ``out_path`` with activation ranges
    calibrated on ``batches`` (normalized float32 (N, 3, H, W) arrays). Returns what was done:
    the number of calibration images and the operators quantized."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ExportError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    data = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
    if not data:
        raise ExportError("int8 calibration needs at least one image (--calib DATA)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            with quiet():
                # Folding and shape inference first, as ONNX Runtime's quantizer advises; the
                # symbolic pass cannot follow dynamic H, W through Resize, ONNX's own can.
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
                quantize_static(
                    str(pre),
                    str(out_path),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=methods[method],
                )
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"int8 quantization failed: {first_line(e)}") from e
    import onnx

    ops = [n.op_type for n in onnx.load(str(out_path)).graph.node]
    return {
        "calibration_images": sum(int(b.shape[0]) for b in data),
        "method": method,
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
    }


def convert_fp16(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, Any]:
    """``fp32_path`` with float16 weights and arithmetic into ``out_path``, its input and
    output kept float32 (``keep_io_types``), so the file keeps the atrous contract.

    ONNX Runtime's own converter (``onnxruntime.transformers.float16``, shipped with
    onnxruntime): no further dependency, and it leaves the operators without fp16 kernels
    (``Upsample``, ``Range``...) in float32 with casts around them. Returns the number of
    casts it placed."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as e:  # pragma: no cover - onnxruntime ships it
        raise ExportError(f"fp16 export needs onnxruntime's converter: {first_line(e)}") from e
    proto = onnx.load(str(fp32_path))
    try:
        with quiet():
            half = convert_float_to_float16(proto, keep_io_types=True)
    except Exception as e:
        raise ExportError(f"fp16 conversion failed: {first_line(e)}") from e
    onnx.save_model(half, str(out_path))
    ops = [n.op_type for n in half.graph.node]
    return {"precision": "fp16", "casts": ops.count("Cast")}
