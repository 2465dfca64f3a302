"""The TF DeepLab fixture checkpoints (``tests/fixtures/tf_deeplab``) rebuilt without the
tarballs: each checkpoint's variable list and the reference value rule (:mod:`tf_recipe`),
written as TensorFlow writes a checkpoint (:mod:`tf_writer`). Shared by the parity tests and
the registry tests' served files."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import tf_recipe
from tf_writer import write_checkpoint

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tf_deeplab"
DTYPES = {"float32": 1, "int64": 9}  # TF DataType enums of the fixtures' variables


@cache
def variables(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``name [shape] dtype`` per line of a fixture's variable list → {name: (shape, dtype)}."""
    out = {}
    for line in (FIXTURES / name).read_text().splitlines():
        var, shape, dtype = re.fullmatch(r"(\S+) \[(.*)\] (\S+)", line).groups()
        out[var] = (tuple(int(s) for s in shape.split(",") if s), dtype)
    return out


def write_variables_checkpoint(prefix: Path, variables_file: str) -> Path:
    """Every variable of ``variables_file`` (global_step included), valued by the reference
    rule, written as a TF V2 checkpoint at ``prefix``; returns ``prefix``."""
    raw = {}
    for var, (shape, dtype) in variables(variables_file).items():
        value = tf_recipe.value(var, shape, dtype)
        raw[var] = (DTYPES[dtype], shape, value.astype(value.dtype.newbyteorder("<")).tobytes())
    write_checkpoint(prefix, raw)
    return prefix
