"""The import graph of ``src/atrous`` reads one way (ARCHITECTURE.md): each module imports
only from its own layer or the layers below, function-local imports included, and no set of
modules imports itself in a circle.

Imports by name count too: ``importlib.import_module("atrous.x")``, ``import_module(...)`` and
``__import__(...)`` with a string literal are imports of that module; an f-string whose fixed
start (``__name__`` and ``__package__`` resolved) lies in one layer, such as
``f"{__name__}.{sub}"`` in a package, is an import from that layer. Any other name computed at
run time could import anything: it is refused unless :data:`DYNAMIC_IMPORTS` allows it, with
the reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "atrous"

# Bottom to top, as ARCHITECTURE.md draws them.
LAYERS = {
    "atrous": 0,  # the root package: lazy attribute access only
    "atrous.constants": 0,
    "atrous.failures": 0,
    "atrous.fileio": 0,
    "atrous.class_tables": 0,
    "atrous.hardware": 0,
    "atrous.imageio": 0,
    "atrous.memory": 0,
    "atrous.normalization": 0,
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

# Imports of a name computed at run time (not confined to one layer), each with its reason.
DYNAMIC_IMPORTS = {
    "atrous": "the lazy submodules (PEP 562): f'atrous.{name}' for a name of SUBMODULES, on "
    "attribute access only; `import atrous` itself loads nothing",
    "atrous.cli": "the subcommand loader: the modules of COMMANDS, all atrous.cli.* (the top)",
    "atrous.export.onnx": "whether the optional third-party packages (onnx, onnxscript, "
    "onnxruntime, onnxslim) import; no atrous module",
}

IMPORT_FUNCTIONS = {"import_module", "__import__"}


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


@dataclass(frozen=True)
class NameImport:
    """An import by a name computed at run time: the fixed start of the name, and the one
    layer every atrous module with that start is in (None: not confined to one layer)."""

    line: int
    start: str
    layer: int | None


def _name_start(node: ast.expr, module: str, package: str) -> tuple[str, bool]:
    """The text an import function's name argument starts with, and whether it is the whole
    name (a string literal, or an f-string of literals, ``__name__`` and ``__package__``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, True
    if not isinstance(node, ast.JoinedStr):
        return "", False
    known = {"__name__": module, "__package__": package}
    text = ""
    for part in node.values:
        if isinstance(part, ast.Constant):
            text += str(part.value)
        elif (
            isinstance(part, ast.FormattedValue)
            and isinstance(part.value, ast.Name)
            and part.value.id in known
            and part.conversion == -1
            and part.format_spec is None
        ):
            text += known[part.value.id]
        else:
            return text, False
    return text, True


def _confined_layer(start: str) -> int | None:
    """The layer of every atrous module whose name starts with ``start``, if there is one."""
    if not start.startswith("atrous."):
        return None
    layers = {_layer(m) for m in MODULES if m.startswith(start) or m == start.rstrip(".")}
    return layers.pop() if len(layers) == 1 else None


def _known_module(name: str) -> str:
    """``name``, or the closest atrous module above it (``atrous.crf.missing`` -> atrous.crf)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _import_functions(tree: ast.AST) -> set[str]:
    """The names that call an import function in ``tree``: ``import_module`` and
    ``__import__``, and what ``from importlib import import_module as ...`` binds."""
    names = set(IMPORT_FUNCTIONS)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "importlib":
            names |= {a.asname or a.name for a in node.names if a.name in IMPORT_FUNCTIONS}
    return names


def _is_import_call(node: ast.AST, functions: set[str]) -> bool:
    if not isinstance(node, ast.Call) or not node.args:
        return False
    f = node.func
    if isinstance(f, ast.Attribute):  # importlib.import_module, builtins.__import__
        return f.attr in IMPORT_FUNCTIONS
    return isinstance(f, ast.Name) and f.id in functions


def scan(source: str, module: str, is_package: bool) -> tuple[set[str], list[NameImport]]:
    """The atrous modules that the source of ``module`` imports, anywhere in its body, by
    statement or by a name it spells out; and its imports of names computed at run time."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    by_name: list[NameImport] = []
    tree = ast.parse(source)
    functions = _import_functions(tree)
    for node in ast.walk(tree):
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
        elif _is_import_call(node, functions):
            text, whole = _name_start(node.args[0], module, package)
            if whole and (text == "atrous" or text.startswith("atrous.")):
                names = [_known_module(text)]
            elif whole:  # another package's module by name
                continue
            else:
                by_name.append(NameImport(node.lineno, text, _confined_layer(text)))
                continue
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found, sorted(by_name, key=lambda i: i.line)


def _scan_module(module: str) -> tuple[set[str], list[NameImport]]:
    path = MODULES[module]
    return scan(path.read_text(), module, path.name == "__init__.py")


SCANS = {m: _scan_module(m) for m in MODULES}
GRAPH = {m: found for m, (found, _) in SCANS.items()}
BY_NAME = {m: by_name for m, (_, by_name) in SCANS.items() if by_name}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import in ``graph`` (module -> the modules it imports) of a higher layer."""
    return [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_imports_go_down_the_layers_only():
    upward = upward_imports(GRAPH)
    upward += [
        f"{m} (layer {_layer(m)}), line {i.line}: imports {i.start}... (layer {i.layer})"
        for m, imports in sorted(BY_NAME.items())
        for i in imports
        if i.layer is not None and i.layer > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_imports_by_computed_names_are_confined_or_allowed():
    unconfined = {m for m, imports in BY_NAME.items() if any(i.layer is None for i in imports)}
    refused = [
        f"{m}, line {i.line}: imports a name computed at run time ({i.start!r}...)"
        for m in sorted(unconfined - set(DYNAMIC_IMPORTS))
        for i in BY_NAME[m]
        if i.layer is None
    ]
    assert not refused, "\n".join(refused)
    assert not set(DYNAMIC_IMPORTS) - unconfined, "allowed, but no such import any more"


def test_the_checker_sees_imports_by_name() -> None:
    source = """
import importlib
from importlib import import_module as load

def f(name):
    importlib.import_module("atrous.crf.rnn_model")
    __import__("atrous.cli")
    load(f"atrous.training.{name}")
    importlib.import_module(f"atrous.{name}")
    importlib.import_module(name)
    importlib.import_module(f"{__package__}.io")
    importlib.import_module("numpy")
"""
    found, by_name = scan(source, "atrous.weights.probe", is_package=False)
    assert found == {"atrous.crf.rnn_model", "atrous.cli", "atrous.weights.io"}
    assert [(i.start, i.layer) for i in by_name] == [
        ("atrous.training.", 7),
        ("atrous.", None),
        ("", None),
    ]
    assert upward_imports({"atrous.weights.probe": found}) == [
        "atrous.weights.probe (layer 2) imports atrous.cli (layer 8)",
        "atrous.weights.probe (layer 2) imports atrous.crf.rnn_model (layer 3)",
    ]
    # a package's own lazy loader: f"{__name__}.{x}" stays in its layer
    _, own = scan(
        "import importlib\nimportlib.import_module(f'{__name__}.{x}')", "atrous.crf", True
    )
    assert [(i.start, i.layer) for i in own] == [("atrous.crf.", 3)]


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


def test_every_library_subpackage_loads_lazily_from_atrous():
    import atrous

    # cli and serve are reached through the ``atrous`` command, not as attributes
    packages = {p.parent.name for p in PKG.glob("*/__init__.py")} - {"cli", "serve"}
    assert packages <= set(atrous.SUBMODULES), sorted(packages - set(atrous.SUBMODULES))
    code = (
        "import sys, atrous; assert 'atrous.export' not in sys.modules; "
        "assert atrous.export.export and 'export' in dir(atrous)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
