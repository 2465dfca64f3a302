"""The ``.pt2`` half of :func:`~.exporter.export`: ``torch.export.save`` of the traced program
with the metadata as the extra file :data:`METADATA_FILE`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from atrous.weights.exported import METADATA_FILE, load_program

__all__ = ["write_pt2"]


def write_pt2(
    program: torch.export.ExportedProgram, path: Path, meta: Mapping[str, str]
) -> tuple[dict[str, Any], Callable[[torch.Tensor], torch.Tensor]]:
    """Save ``program`` to ``path``; (details, run) with ``run(x)`` the file loaded back the
    way :func:`atrous.weights.load` does (tensors only, no pickled code)."""

    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(dict(meta))})
    module, _ = load_program(path)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    ops = sorted({str(n.target) for n in program.graph.nodes if n.op == "call_function"})
    return {"ops": ops, "torch": torch.__version__}, run
