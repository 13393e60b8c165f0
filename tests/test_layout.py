"""The package's layout keeps the pipeline's order: a stage imports only from stages to its left.

Every `import hrtem3d...` in the source, lazy ones inside functions included, is read with `ast`;
a module may import from its own stage or an earlier one, and the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hrtem3d

PKG = Path(hrtem3d.__file__).parent

# left to right; the public API (hrtem3d/__init__.py) and cli.py sit above everything
ORDER = ["_version", "errors", "fsutil", "contracts", "structure", "simulate", "labels", "data", "model", "train",
         "io", "segmentation", "tracking", "export", "evaluate", "viz", "jobs", "api", "cli", "napari"]


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    return parts[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("hrtem3d"):
            for alias in node.names:  # `from hrtem3d.jobs import demo` names a module, not the package
                if (PKG.parent / (node.module.replace(".", "/") + f"/{alias.name}.py")).exists():
                    found.add(f"{node.module}.{alias.name}")
                else:
                    found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hrtem3d")}
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in PKG.rglob("*.py")}


def test_every_source_module_belongs_to_a_known_stage():
    unknown = sorted({_stage(m) for m in _graph()} - set(ORDER))
    assert not unknown, f"add these to the pipeline's ORDER (and to docs/design.md): {unknown}"


def test_stages_import_only_leftwards():
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            if dep == "hrtem3d" and _stage(mod) != "api":
                bad.append(f"{mod} imports the package top (import the module itself)")
            elif ORDER.index(_stage(dep)) > ORDER.index(_stage(mod)):
                bad.append(f"{mod} -> {dep}")
    assert not bad, "later-stage imports: " + "; ".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    # a dependency on a package means its __init__; a cycle through modules of one stage is a cycle too
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, trail: list[str]) -> bool:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if d not in graph or d == m:
                continue
            if state.get(d) == 1:
                cycle.extend(trail[trail.index(d):] + [m, d] if d in trail else [m, d])
                return True
            if state.get(d) is None and visit(d, trail + [m]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_checker_sees_a_violation(tmp_path):
    """The checks above are not vacuous: a lazy import of a later stage inside a function is found."""
    f = tmp_path / "bad.py"
    f.write_text("def f():\n    from hrtem3d.jobs.demo import movie_demo\n    return movie_demo\n")
    assert "hrtem3d.jobs.demo" in _imports(f)
    assert ORDER.index(_stage("hrtem3d.jobs.demo")) > ORDER.index(_stage("hrtem3d.segmentation.segmenter"))
