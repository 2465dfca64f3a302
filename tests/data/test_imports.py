"""Import layering of the data stage: atrous.imageio sits at the bottom (core), atrous.data
imports only core and lower layers, and the dataset never imports its checker."""

from __future__ import annotations

import ast
from pathlib import Path

import atrous

SRC = Path(atrous.__file__).parent
ABOVE_DATA = ("atrous.inference", "atrous.evaluation", "atrous.training", "atrous.cli")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_imageio_imports_only_core() -> None:
    atrous_imports = {m for m in _imports(SRC / "imageio.py") if m.startswith("atrous")}
    assert atrous_imports <= {"atrous.constants"}


def test_data_imports_nothing_above_it() -> None:
    for path in sorted((SRC / "data").glob("*.py")):
        bad = {m for m in _imports(path) if m.startswith(ABOVE_DATA)}
        assert not bad, f"{path.name} imports {bad}"


def test_dataset_does_not_import_its_checker() -> None:
    assert not {m for m in _imports(SRC / "data" / "base.py") if m.startswith("atrous.data.")}


def test_ignore_index_is_defined_once() -> None:
    from atrous import constants, data
    from atrous.data import palettes

    assert palettes.IGNORE_INDEX is constants.IGNORE_INDEX is data.IGNORE_INDEX
    for path in sorted((SRC / "data").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                assert "IGNORE_INDEX" not in names, f"{path.name} defines IGNORE_INDEX"
