"""Lower-precision ONNX graphs: fp16 (:func:`convert_fp16`) and int8 post-training static
quantization (:func:`quantize_onnx`).

int8 post-training static quantization of an exported ONNX graph with ONNX Runtime
(``quantize_static``): QDQ format, per-channel int8 weights, uint8 activations whose ranges are
calibrated (min/max) on the user's images, so ONNX Runtime runs the convolutions with VNNI
int8 kernels (U8S8).

Why ONNX Runtime's quantizer: on an AVX512-VNNI CPU it gives the fastest path of all we
tried for DeepLab v3 ResNet-50 at 513x513, the graph stays a portable ``.onnx`` with no new
dependency, and calibration takes seconds. PT2E + torch.compile needs a C++ compile per shape
(minutes on 2 cores, and again for every new input size); OpenVINO + NNCF would add two large
dependencies for one path.
"""
# (the timings behind this: benchmarks/results/deploy.md, by benchmarks/bench_deploy.py)

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .diagnostics import ExportError, first_line, quiet

__all__ = ["convert_fp16", "quantize_onnx"]


# The calibration methods (ONNX Runtime's CalibrationMethod members) by the name users give.
_CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


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
    from onnxruntime.quantization import CalibrationMethod

    if method not in _CALIBRATION_METHODS:
        raise ExportError(
            f"calibration method must be one of {sorted(_CALIBRATION_METHODS)}, got {method!r}"
        )
    data = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
    if not data:
        raise ExportError("int8 calibration needs at least one image (--calib DATA)")
    calibrate = getattr(CalibrationMethod, _CALIBRATION_METHODS[method])
    _quantize_static(fp32_path, out_path, _reader(data, input_name), calibrate)
    import onnx

    ops = [n.op_type for n in onnx.load(str(out_path)).graph.node]
    return {
        "calibration_images": sum(int(b.shape[0]) for b in data),
        "method": method,
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
    }


def _reader(data: list[np.ndarray], input_name: str) -> Any:
    """An ONNX Runtime calibration data reader over the batches ``data``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    return Reader()


def _quantize_static(
    fp32_path: str | os.PathLike, out_path: str | os.PathLike, reader: Any, calibrate: Any
) -> None:
    """ONNX Runtime's static quantization (QDQ, per-channel int8 weights, uint8 activations)
    of ``fp32_path`` into ``out_path``, calibrated by ``calibrate`` on ``reader``'s batches."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

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
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=calibrate,
                )
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"int8 quantization failed: {first_line(e)}") from e


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
