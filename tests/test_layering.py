"""The package's layers: the library never imports the command line, the avmae modules import each
other without a cycle, and each layer imports only its own layer and those below it.

Every import counts: at module level and inside functions, absolute and relative (resolved).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "avmae"

CORE = {"avmae", "avmae.config", "avmae.recipes", "avmae.checkpoint", "avmae.run_dir", "avmae.runtime"}
# rank -> module prefixes (a prefix `p` covers `p` and `p.*`)
LAYERS = [
    (1, "avmae.models"), (1, "avmae.data"),
    (2, "avmae.evaluation"),
    (3, "avmae.training"),
    (4, "avmae.interop"), (4, "avmae.api"),
    (5, "avmae.cli"),
]
# The one import up the layers: the package's lazy `avmae.load` / `avmae.load_clip` (a module
# __getattr__ that imports avmae.api on first use, never at import time).
LAZY_FACADE = {("avmae", "avmae.api")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file; `from pkg import x` counts as
    importing pkg.x when that is a module, else pkg."""
    known = _modules()
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno))
    return [(m, line) for m, line in found if m == "avmae" or m.startswith("avmae.")]


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _rank(module: str) -> int:
    if module in CORE:
        return 0
    for rank, prefix in LAYERS:
        if _within(module, prefix):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_layering.py")


def _where(module: str, line: int) -> str:
    return f"{_modules()[module].relative_to(SRC.parent)}:{line}"


def test_the_library_never_imports_the_command_line():
    bad = [f"{_where(name, line)} ({name}) imports {target}"
           for name, imports in _graph().items() if not _within(name, "avmae.cli")
           for target, line in imports if _within(target, "avmae.cli")]
    assert not bad, "library modules importing the command line:\n" + "\n".join(bad)


def test_the_avmae_modules_import_each_other_without_a_cycle():
    modules = _modules()
    graph = {name: sorted({t for t, _ in imports if t in modules and t != name})
             for name, imports in _graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_each_layer_imports_only_its_own_and_lower_layers():
    bad = []
    for name, imports in _graph().items():
        for target, line in imports:
            if _rank(target) > _rank(name) and (name, target) not in LAZY_FACADE:
                bad.append(f"{_where(name, line)} ({name}, layer {_rank(name)}) imports {target} "
                           f"(layer {_rank(target)})")
            # models and data are one layer but independent of each other
            for a, b in (("avmae.models", "avmae.data"), ("avmae.data", "avmae.models")):
                if _within(name, a) and _within(target, b):
                    bad.append(f"{_where(name, line)} ({name}) imports {target}: {a} and {b} "
                               "do not import each other")
    assert not bad, "layer rule broken:\n" + "\n".join(bad)


def test_every_module_is_in_a_layer_and_the_walk_sees_function_level_imports():
    for name in _modules():
        _rank(name)
    # the walk is not blind: pretrain imports the k-NN monitor inside a function
    assert any(t == "avmae.evaluation.probe" for t, _ in _graph()["avmae.training.pretrain"])


def test_each_subpackage_lists_its_public_names_and_they_resolve():
    import importlib
    for pkg in ("models", "data", "evaluation", "training", "interop"):
        module = importlib.import_module(f"avmae.{pkg}")
        names = getattr(module, "__all__", None)
        assert names, f"avmae.{pkg} has no __all__"
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, f"avmae.{pkg}.__all__ names what it does not define: {missing}"
        # a re-exported function must not hide a submodule of the same name (avmae.training.pretrain)
        shadowed = [n for n in names if importlib.util.find_spec(f"avmae.{pkg}.{n}") is not None]
        assert not shadowed, f"avmae.{pkg} re-exports {shadowed}, hiding the submodules of that name"
