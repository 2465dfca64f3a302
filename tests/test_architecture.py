"""The import graph of ``src/atrous`` reads one way (ARCHITECTURE.md): each module imports
only from its own layer or the layers below, function-local imports included, and no set of
modules imports itself in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "atrous"

# Bottom to top, as ARCHITECTURE.md draws them.
LAYERS = {
    "atrous": 0,  # the root package: lazy attribute access only
    "atrous.constants": 0,
    "atrous.fileio": 0,
    "atrous.class_tables": 0,
    "atrous.imageio": 0,
    "atrous.models": 1,
    "atrous.weights": 2,
    "atrous.crf": 3,
    "atrous.data": 4,
    "atrous.losses": 4,
    "atrous.inference": 5,
    "atrous.evaluation": 6,
    "atrous.serve": 6,  # the HTTP service: inference behind Starlette; imports no evaluation
    "atrous.export": 5,  # beside inference, which runs its int8 path; export imports no inference
    "atrous.training": 7,
    "atrous.cli": 8,
    "atrous.__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module}: not in any layer of ARCHITECTURE.md")


def _imports(module: str) -> set[str]:
    """atrous modules that ``module`` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # ``from atrous.data import palettes`` imports the submodule (its package is the
            # parent, imported anyway); ``from atrous.data import collate``, the package
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            names = subs + ([base] if len(subs) < len(node.names) else [])
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_imports_go_down_the_layers_only():
    upward = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in sorted(GRAPH.items())
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    # Tarjan's strongly connected components over the module graph.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, cycles


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("atrous.models", "atrous.weights"),
        ("atrous.weights", "atrous.crf"),
        ("atrous.crf", "atrous.evaluation"),
        ("atrous.data", "atrous.inference"),
    ],
)
def test_a_lower_layer_imports_without_the_upper(module, absent):
    code = f"import sys, {module}; assert {absent!r} not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_lazy_subpackages_like_torchvision():
    code = (
        "import sys, atrous; assert 'atrous.models' not in sys.modules; "
        "m = atrous.models; w = atrous.weights; i = atrous.inference.Segmenter; "
        "assert m.build and w.load and 'models' in dir(atrous)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
