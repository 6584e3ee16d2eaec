"""The shape of the package stays as drawn in the README's map: layers as folders, imports that
only point down, no import cycle, no module over 500 lines, no class over 300.

Read from the import statements (``ast``), not by importing, so a cycle that Python happens to
survive today (an import at the bottom of a module, a name imported late) still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "registry"

#: Lowest first. A module may import from its own layer or any layer below it, never above.
#: The store sits on the kernel library (it serves the built-ins as a read-only layer), and
#: the adapters on the store's level without using it (see ``test_no_adapter_uses_the_store``).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("registry._exceptions", "registry._env", "registry._paths", "registry._lazy", "registry._version")),
    ("format", ("registry.format",)),
    ("kernels", ("registry.kernels",)),
    ("store", ("registry.store",)),
    ("adapters", ("registry.adapters", "registry.keras", "registry.keras_fft", "registry.torch", "registry.torch_fft",
                  "registry.jax", "registry.tensorflow")),
    ("faces", ("registry", "registry.__main__", "registry._api", "registry._demo", "registry._plot", "registry.cli",
               "registry.site")),
]

#: Imports allowed to point up, each only inside a function body: ``Kernel.to_keras()`` and its
#: siblings are thin aliases that import their adapter when called, so ``import registry`` never
#: imports a framework and the ``Kernel`` never depends on the adapters at import time.
LAZY_ALIASES = {
    ("registry.kernels.kernel", "registry.keras"),
    ("registry.kernels.kernel", "registry.tensorflow"),
    ("registry.kernels.kernel", "registry.torch"),
    ("registry.kernels.kernel", "registry.jax"),
    # ``Registry.site()`` is the same kind of alias for the catalogue (a face over the store).
    ("registry.store.registry", "registry.site"),
}

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for each import of a package module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from . import plan` imports the module registry.adapters.plan, not the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:  # `import registry.store.backend as b`, a name in a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno, id(node) in inside))
    return found


def layer_of(name: str) -> int:
    best, rank = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def graph(root: Path = PACKAGE) -> dict[str, list[tuple[str, int, bool]]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def upward_imports(edges: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    wrong = []
    for name, targets in edges.items():
        for target, line, lazy in targets:
            if layer_of(target) <= layer_of(name):
                continue
            if (name, target) in LAZY_ALIASES and lazy:
                continue
            wrong.append(f"{name}:{line} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    return wrong


def cycles(edges: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Every import cycle (Tarjan's strongly connected components of more than one module),
    leaving out the lazy aliases that ``LAZY_ALIASES`` allows."""
    graph_ = {name: sorted({t for t, _, lazy in targets if not ((name, t) in LAZY_ALIASES and lazy)})
              for name, targets in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph_[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph_):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    assert [name for name in modules() if layer_of(name) < 0] == []


def test_imports_only_point_down() -> None:
    assert upward_imports(graph()) == []


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_no_adapter_uses_the_store_or_the_api() -> None:
    """Adapters convert; they never add: ``from_layer`` returns a ``Kernel`` and the caller adds it."""
    adapters = {name for name in modules() if layer_of(name) == [n for n, _ in LAYERS].index("adapters")}
    wrong = [f"{name}:{line} imports {target}" for name in adapters for target, line, _ in graph()[name]
             if target.startswith(("registry.store", "registry._api"))]
    assert wrong == []


def test_the_lazy_aliases_are_inside_functions() -> None:
    edges = graph()
    eager = [f"{name}:{line}" for name, targets in edges.items() for target, line, lazy in targets
             if (name, target) in LAZY_ALIASES and not lazy]
    assert eager == []


def test_no_module_is_over_500_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_class_is_over_300_lines() -> None:
    long = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (size := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                long[f"{name}.{node.name}"] = size
    assert long == {}


def test_the_cli_is_one_group_its_modules_add_to() -> None:
    """Each command module lists its commands; none of them imports the group (no cycle back)."""
    from registry.cli import cli

    edges = graph()
    command_modules = [n for n in modules() if n.startswith("registry.cli.") and not n.endswith("._common")]
    assert command_modules and all(("registry.cli", ) not in [(t,) for t, _, _ in edges[n]] for n in command_modules)
    assert sorted(cli.commands) == sorted(
        c.name for n in command_modules for c in __import__(n, fromlist=["COMMANDS"]).COMMANDS)


# -- the checker itself can fail ------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "registry"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "format/__init__.py": "",
        "format/names.py": "from ..store import registry\n",  # format reaching up to the store
        "store/__init__.py": "",
        "store/registry.py": "from . import writer\n",
        "store/writer.py": "def f():\n    from .registry import x\n",  # a cycle, even when lazy
    })
    edges = graph(root)
    assert upward_imports(edges) == ["registry.format.names:1 (format) imports registry.store.registry (store)"]
    assert cycles(edges) == [["registry.store.registry", "registry.store.writer"]]


@pytest.mark.parametrize("where", ["module", "function"])
def test_a_lazy_alias_is_allowed_only_inside_a_function(tmp_path: Path, where: str) -> None:
    body = "from ..keras import to_layer\n" if where == "module" else "def to_keras():\n    from ..keras import to_layer\n"
    root = _tree(tmp_path, {"__init__.py": "", "keras.py": "", "kernels/__init__.py": "", "kernels/kernel.py": body})
    assert bool(upward_imports(graph(root))) == (where == "module")
