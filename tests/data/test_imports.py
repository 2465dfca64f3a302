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
            # ``from atrous.data import masks`` imports the submodule atrous.data.masks
            names.update(
                f"{node.module}.{a.name}" for a in node.names if _is_module(node.module, a.name)
            )
    return names


def _is_module(package: str, name: str) -> bool:
    if not package.startswith("atrous"):
        return False
    folder = SRC.parent.joinpath(*package.split("."))
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def test_imageio_imports_only_core() -> None:
    atrous_imports = {m for m in _imports(SRC / "imageio.py") if m.startswith("atrous")}
    assert atrous_imports <= {"atrous.constants"}


def test_data_imports_nothing_above_it() -> None:
    for path in sorted((SRC / "data").glob("*.py")):
        bad = {m for m in _imports(path) if m.startswith(ABOVE_DATA)}
        assert not bad, f"{path.name} imports {bad}"


def test_dataset_does_not_import_its_checker() -> None:
    # The dataset base stands only on the error type and mask decoding, which import no
    # other data module; no module but the package imports the checker.
    below_base = {"atrous.data.errors", "atrous.data.masks"}
    assert {
        m for m in _imports(SRC / "data" / "base.py") if m.startswith("atrous.data.")
    } <= below_base
    for name in ("errors.py", "masks.py"):
        assert {m for m in _imports(SRC / "data" / name) if m.startswith("atrous.data.")} <= {
            "atrous.data.errors"
        }
    for path in sorted((SRC / "data").glob("*.py")):
        if path.name not in ("__init__.py", "check.py"):
            assert "atrous.data.check" not in _imports(path), f"{path.name} imports the checker"


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
