"""The shape of the package, as docs/architecture.md draws it: imports run one way (no circle, function-level
imports included), no folder crowded past 15 modules, and nothing below the norm registry asks a norm its name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "cvlab"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """Every cvlab module `name` imports, anywhere in the file (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # `from . import dist` imports the module dist
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    assert _cycles(GRAPH) == []


def test_graph_sees_function_level_imports():
    # compare's worker imports the training loop inside a function: the graph must still hold that edge
    assert any(m.startswith("cvlab.engine.train") for deps in GRAPH.values() for m in deps)
    assert len(GRAPH) > 50


@pytest.mark.parametrize("folder", sorted({p.parent for p in PKG.rglob("*.py")}), ids=lambda p: str(p.relative_to(PKG.parent)))
def test_no_crowded_folder(folder):
    modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= 15, f"{folder}: {len(modules)} modules side by side; group them into sub-packages"


LAYERS = ["cvlab.cli", "cvlab.compare", "cvlab.engine", "cvlab.models", "cvlab.data", "cvlab.augment", "cvlab.config"]


def _layer(module: str) -> str | None:
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)


def test_imports_flow_one_way():
    """cli -> compare -> engine -> {models, data -> augment} -> config; models and data never import each other."""
    order = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = []
    for name, deps in GRAPH.items():
        own = _layer(name)
        for dep in deps:
            other = _layer(dep)
            if own is None or other is None or own == other:
                continue
            if order[other] < order[own] or {own, other} == {"cvlab.models", "cvlab.data"}:
                wrong.append(f"{name} -> {dep}")
    assert wrong == []


def _norm_name_comparisons(path: Path, names: set[str]) -> list[str]:
    """`x == "sync_batch"`, `norm in ("batch", "group")`, `"group" != n` ... where the other side is about a norm."""
    src = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        consts = set()
        for side in sides:
            elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            consts |= {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        others = " ".join(ast.get_source_segment(src, s) or "" for s in sides if not isinstance(s, ast.Constant))
        if consts & names and "norm" in others.lower():
            found.append(f"{path.name}:{node.lineno}: {ast.get_source_segment(src, node)}")
    return found


def test_no_norm_name_is_compared_outside_the_registry_and_config():
    from cvlab.models.norms import NORMS

    allowed = {PKG / "models" / "norms.py", *(PKG / "config").glob("*.py")}
    found = [hit for p in sorted(PKG.rglob("*.py")) if p not in allowed
             for hit in _norm_name_comparisons(p, set(NORMS))]
    assert found == []


def test_the_norm_name_check_catches_a_comparison(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(cfg):\n    return cfg.model.norm.name == "sync_batch" or norm in ("group", "x")\n')
    assert len(_norm_name_comparisons(bad, {"sync_batch", "group"})) == 2
