"""The house rules docs/design.md states, checked on the source: no import cycles, imports that flow one way,
a loop without Ray or MLflow, thin CLIs.

Every import counts, function-level ones included (they are cycles all the same, only hidden).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "models")

# data flows data → models → loop → sweep → report; fit (numerics) sits below report; the shared
# modules (configs, errors, metric names, paths) below everything; the CLIs on top
LAYERS = {
    "engine.config": 0,
    "engine.errors": 0,
    "engine.metrics": 0,
    "engine.paths": 0,
    "engine.cli": 0,
    "engine.fit": 1,
    "engine.data": 1,
    "models": 2,
    "engine.loop": 3,
    "engine.sweep": 4,
    "engine.tracking_server": 4,
    "engine.report": 5,
}
CLI_MODULES = ("engine.scale", "engine.tune", "engine.train", "engine.ui", "engine.report.__main__", "engine.study",
               "engine.simulate")
CLI_MAX_LINES = 150


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in ``path`` (a package's own __init__ excluded)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in names:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _external_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def _layer(module: str) -> int | None:
    best = None
    for prefix, rank in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, rank)
    return best[1] if best else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules() -> None:
    assert _cycles(_graph()) == []


def test_no_import_cycles_between_packages() -> None:
    mods = _modules()

    def package(mod: str) -> str:
        parent = mod.rpartition(".")[0]
        # the top-level shared modules (engine.config, ...) and the CLIs stand as their own units
        return mod if mods[mod].name == "__init__.py" or parent in PACKAGES else parent

    pkg_graph: dict[str, set[str]] = {}
    for mod, targets in _graph().items():
        src = package(mod)
        pkg_graph.setdefault(src, set()).update(package(t) for t in targets)
        pkg_graph[src].discard(src)
    assert _cycles(pkg_graph) == []


def test_imports_flow_one_way() -> None:
    upward = []
    for mod, targets in _graph().items():
        rank = _layer(mod)
        if rank is None:
            continue
        for target in targets:
            t_rank = _layer(target)
            if t_rank is not None and t_rank > rank:
                upward.append(f"{mod} -> {target}")
    assert upward == []


def test_the_loop_imports_neither_ray_nor_mlflow() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_external_imports(path) & {"ray", "mlflow"})
        for path in (ROOT / "engine" / "loop").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_cli_modules_stay_thin() -> None:
    mods = _modules()
    long = {m: len(mods[m].read_text().splitlines()) for m in CLI_MODULES if m in mods}
    assert long and {m: n for m, n in long.items() if n >= CLI_MAX_LINES} == {}
