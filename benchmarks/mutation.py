"""Mutation score of the modules that turn pixels into numbers (issue 11): one-line mutants from `ast`.

Each mutant changes one node of one module: a comparison flipped (< to >=, == to !=), + and - or
* and / swapped, a `not` or a unary minus dropped, an integer constant moved by one, the first two
positional arguments of a call swapped, a subscript index 0 and 1 swapped (x and y). The mutant
module is written into a copy of `src/` (the working tree is never touched) and only the module's
own test files run, with a timeout; a mutant is killed when they fail or time out. Not part of
`make test`: it costs one test run per mutant.

    .venv/bin/python benchmarks/mutation.py --module tracking/changepoint.py --max-mutants 20
    .venv/bin/python benchmarks/mutation.py --list              # the modules and their tests

Prints one table row per module (mutants, killed, survived, score) and every survivor with its
line, to be killed by a new test or explained as equivalent (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module (under src/hrtem3d) -> pytest arguments that exercise it (cheap selections)
TARGETS: dict[str, list[str]] = {
    "segmentation/columns.py": ["tests/test_analyze.py", "-k",
                                "subpixel or class_weights or background or disc_offsets"],
    "segmentation/segmenter.py": ["tests/test_shipped_model.py", "tests/test_vacuum.py", "-k", "not track"],
    "segmentation/vacuum.py": ["tests/test_vacuum.py"],
    "segmentation/confidence.py": ["tests/test_confidence.py", "tests/test_shipped_model.py", "-k", "calibration"],
    "data/resample.py": ["tests/test_analyze.py", "-k", "binning or resampling"],
    "data/normalize.py": ["tests/test_normalize.py"],
    "simulate/optics.py": ["tests/test_optics.py"],
    "tracking/drift.py": ["tests/test_temporal.py", "-k", "frame_shift"],
    "tracking/linking.py": ["tests/test_temporal.py"],
    "tracking/changepoint.py": ["tests/test_temporal.py"],
    "tracking/events.py": ["tests/test_events_matching.py", "tests/test_temporal.py"],
    "export/model3d.py": ["tests/test_model3d.py"],
    "evaluate/calibrate.py": ["tests/test_analyze.py", "-k",
                              "platt or noise_feature or analytic_optimum or calibration_pairs or calibrate_model"],
}

FLIP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult}


def candidates(tree: ast.AST) -> list[tuple[ast.AST, str, object]]:
    """Every (node, description, change) one mutation can make, in source order."""
    out = []
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in FLIP:
                    out.append((node, f"{type(op).__name__} -> {FLIP[type(op)].__name__}", ("cmp", i)))
        elif isinstance(node, ast.BinOp) and type(node.op) in SWAP:
            out.append((node, f"{type(node.op).__name__} -> {SWAP[type(node.op)].__name__}", ("bin",)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            out.append((node, f"drop {type(node.op).__name__}", ("unary",)))
        elif isinstance(node, ast.Constant) and type(node.value) is int and id(node) not in docstrings:
            out.append((node, f"{node.value} -> {node.value + 1}", ("const",)))
        elif isinstance(node, ast.Call) and len(node.args) >= 2 and not any(
                isinstance(a, ast.Starred) for a in node.args[:2]):
            out.append((node, "swap first two arguments", ("args",)))
        elif isinstance(node, ast.Subscript):
            idx = node.slice.elts[-1] if isinstance(node.slice, ast.Tuple) and node.slice.elts else node.slice
            if isinstance(idx, ast.Constant) and idx.value in (0, 1) and type(idx.value) is int:
                out.append((idx, f"index {idx.value} -> {1 - idx.value} (x/y)", ("index",)))
    return [c for c in out if hasattr(c[0], "lineno")]


def mutate(source: str, k: int) -> tuple[str, int, str]:
    """Source with mutation k applied: (new source, line, description)."""
    tree = ast.parse(source)
    node, desc, change = candidates(tree)[k]
    kind = change[0]
    if kind == "cmp":
        node.ops[change[1]] = FLIP[type(node.ops[change[1]])]()
    elif kind == "bin":
        node.op = SWAP[type(node.op)]()
    elif kind == "unary":
        _replace(tree, node, node.operand)
    elif kind == "const":
        node.value += 1
    elif kind == "args":
        node.args[0], node.args[1] = node.args[1], node.args[0]
    elif kind == "index":
        node.value = 1 - node.value
    return ast.unparse(tree), node.lineno, desc


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if v is old:
                        value[i] = new


def run_tests(src_dir: Path, args: list[str], timeout: float) -> str:
    """'passed', 'failed' or 'timeout' of the module's tests against the code in `src_dir`."""
    env = {**os.environ, "PYTHONPATH": str(src_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:warnings", *args]
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "passed" if r.returncode == 0 else "failed"


def score_module(module: str, max_mutants: int | None, timeout: float, seed: int, work: Path) -> dict:
    """Run the sampled mutants of one module; returns counts and survivors."""
    target = work / "src" / "hrtem3d" / module
    original = target.read_text()
    n = len(candidates(ast.parse(original)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    chosen = sorted(order[:max_mutants] if max_mutants else order)
    t0 = time.perf_counter()
    if run_tests(work / "src", TARGETS[module], timeout * 3) != "passed":
        raise SystemExit(f"{module}: its tests fail without any mutation; fix them first")
    base_s = time.perf_counter() - t0
    killed, survivors = 0, []
    try:
        for k in chosen:
            text, line, desc = mutate(original, k)
            target.write_text(text)
            result = run_tests(work / "src", TARGETS[module], max(timeout, 3 * base_s))
            if result == "passed":
                code = original.splitlines()[line - 1].strip()
                survivors.append(f"{module}:{line}: {desc}   | {code[:90]}")
            else:
                killed += 1
            print(f"  {module} #{k} line {line} {desc}: {'survived' if result == 'passed' else result}",
                  flush=True)
    finally:
        target.write_text(original)
    return {"module": module, "candidates": n, "mutants": len(chosen), "killed": killed,
            "survived": len(survivors), "survivors": survivors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", choices=sorted(TARGETS), help="module(s) to mutate (default all)")
    ap.add_argument("--max-mutants", type=int, default=None, help="random sample of this many mutants a module")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a mutant's test run may take")
    ap.add_argument("--seed", type=int, default=0, help="seed of the mutant sample")
    ap.add_argument("--list", action="store_true", help="list the modules, their tests and mutant counts")
    a = ap.parse_args()
    modules = a.module or sorted(TARGETS)
    if a.list:
        for m in modules:
            n = len(candidates(ast.parse((ROOT / "src" / "hrtem3d" / m).read_text())))
            print(f"{m}: {n} mutants; tests: {' '.join(TARGETS[m])}")
        return
    with tempfile.TemporaryDirectory(prefix="hrtem3d-mutation-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        rows = [score_module(m, a.max_mutants, a.timeout, a.seed, work) for m in modules]
    print("\n| module | mutants (of all) | killed | survived | score |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        score = r["killed"] / max(r["mutants"], 1)
        print(f"| {r['module']} | {r['mutants']} (of {r['candidates']}) | {r['killed']} | {r['survived']} | "
              f"{100 * score:.0f} % |")
    survivors = [s for r in rows for s in r["survivors"]]
    if survivors:
        print("\nsurvivors:")
        print("\n".join(survivors))


if __name__ == "__main__":
    main()
