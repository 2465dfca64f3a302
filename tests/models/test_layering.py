"""Imports go one way (issue #10): models below weights below crf; neither models nor weights
imports a higher layer, not even inside a function."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LEVEL = {"constants": 0, "fileio": 0, "models": 1, "weights": 2, "crf": 3, "data": 4}
LEVEL.update(inference=5, evaluation=6, training=7, cli=8)


def _imported_atrous_parts(path: Path, root: Path = SRC) -> set[str]:
    """The top-level atrous parts (``models``, ``crf`` …) a file imports, anywhere in it."""
    package = path.relative_to(root).parent.parts  # ("atrous", "weights", ...)
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            bits = name.split(".")
            if bits[0] == "atrous" and len(bits) > 1 and bits[1] in LEVEL:
                parts.add(bits[1])
    return parts


@pytest.mark.parametrize("layer", ["models", "weights"])
def test_no_upward_imports(layer: str) -> None:
    files = sorted((SRC / "atrous" / layer).rglob("*.py"))
    assert files
    for path in files:
        above = {p for p in _imported_atrous_parts(path) if LEVEL[p] > LEVEL[layer]}
        assert not above, f"{path.relative_to(SRC)} imports atrous.{sorted(above)}"


def test_weights_never_imports_crf() -> None:
    for path in sorted((SRC / "atrous" / "weights").rglob("*.py")):
        assert "crf" not in _imported_atrous_parts(path), path


def test_checker_sees_relative_and_function_local_imports(tmp_path: Path) -> None:
    probe = tmp_path / "atrous" / "weights" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ..crf import dense_crf\n    import atrous.cli\n")
    assert _imported_atrous_parts(probe, tmp_path) == {"crf", "cli"}


def _fresh_modules(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code += "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_importing_models_loads_no_higher_layer() -> None:
    mods = _fresh_modules("import atrous.models as M\nM.build('deeplabv3_mobilenetv2', 3)")
    loaded = {m.split(".")[1] for m in mods if m.startswith("atrous.")}
    assert not {p for p in loaded if LEVEL.get(p, 0) > LEVEL["models"]}, sorted(loaded)


def test_importing_weights_loads_no_crf() -> None:
    mods = _fresh_modules("import atrous.weights")
    assert not [m for m in mods if m.startswith("atrous.crf")]
