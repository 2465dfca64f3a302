"""The ONNX half of :func:`~.exporter.export`: translate the ``torch.export`` program with
the current exporter (``torch.onnx.export(program, dynamo=True)``, onnxscript), check it
(``onnx.checker``, full shape inference), simplify it with onnxslim, add the metadata as
``metadata_props``, and open it in ONNX Runtime for the comparison with eager.

onnxslim over onnx-simplifier: it is pure Python (onnxsim builds a C++ extension), keeps
symbolic dimensions (``batch``, ``height``, ``width``) intact, and is maintained; measured on
the zoo it removes the exporter's leftover shape arithmetic (see ``details["nodes"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atrous.weights.exported import ort_session

from .diagnostics import ExportError, first_line, quiet

__all__ = ["write_onnx"]

INPUT_NAME = "input"


def _require() -> None:
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime", "onnxslim"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'atrous[export]'")


def write_onnx(
    program: torch.export.ExportedProgram,
    path: Path,
    meta: Mapping[str, str],
    opset: int,
    simplify: bool,
) -> tuple[dict[str, Any], Callable[[torch.Tensor], torch.Tensor]]:
    """Write ``program`` as ONNX to ``path``; (details, run) with ``run(x)`` the file in ONNX
    Runtime."""
    _require()
    import onnx

    output = meta["export_output"]
    try:
        with quiet():
            onnx_program = torch.onnx.export(
                program,
                (),
                dynamo=True,
                opset_version=int(opset),
                input_names=[INPUT_NAME],
                output_names=[output],
                verbose=False,
                optimize=True,
            )
    except Exception as e:
        raise ExportError(f"the ONNX exporter failed (opset {opset}): {first_line(e)}") from e
    proto = onnx_program.model_proto
    nodes = {"exported": len(proto.graph.node)}
    if simplify:
        import onnxslim

        with quiet():
            proto = onnxslim.slim(proto)
        nodes["simplified"] = len(proto.graph.node)
    _name_dims(proto)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker rejects the exported graph: {first_line(e)}") from e
    onnx.save_model(proto, str(path))
    session = ort_session(path)
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.numpy())})[0])

    ops = sorted({n.op_type for n in proto.graph.node})
    details = {
        "opset": int(opset),
        "nodes": nodes,
        "ops": ops,
        "inputs": _io(session.get_inputs()),
        "outputs": _io(session.get_outputs()),
    }
    return details, run


def _name_dims(proto: Any) -> None:
    """Call the input's symbolic dimensions ``batch``, ``height``, ``width`` (the exporter's
    are ``s0``, ``s1``...) everywhere they appear."""
    graph = proto.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    nhwc = len(dims) == 4 and dims[3].HasField("dim_value")
    names = ("batch", "height", "width") if nhwc else ("batch", None, "height", "width")
    mapping = {d.dim_param: n for d, n in zip(dims, names) if n and d.dim_param}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in mapping:
                d.dim_param = mapping[d.dim_param]


def _io(values: Any) -> list[dict[str, Any]]:
    return [{"name": v.name, "type": v.type, "shape": list(v.shape)} for v in values]
