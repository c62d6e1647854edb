"""sim/ and plan/ import neither torch nor sglang: the standard library, numpy, the pure
core and themselves (plus matplotlib nowhere: only benchmarks/projection.py plots).

As tests/core/test_import_boundary.py: an AST walk (an import in a branch that never runs
here) and a fresh interpreter (an import pulled in indirectly at import time).
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "pipemax_sglang"
MODULES = sorted((PKG / "sim").glob("*.py")) + sorted((PKG / "plan").glob("*.py"))
ALLOWED_THIRD_PARTY = {"numpy"}
ALLOWED_OWN = ("pipemax_sglang.core", "pipemax_sglang.sim", "pipemax_sglang.plan")


def _imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def test_the_packages_have_their_modules():
    names = {p.stem for p in MODULES}
    assert {"engine", "pipemax", "replay", "recompute", "ledger", "links", "costs", "run",
            "search", "command", "__main__"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_imports_only_stdlib_numpy_core_and_sim(path):
    for name, level in _imports(path):
        top = name.split(".")[0]
        if level > 0:
            assert level == 1, f"{path.name} reaches outside its package"
            continue
        assert top not in ("torch", "sglang", "matplotlib"), f"{path.name} imports {top}"
        if top == "pipemax_sglang":
            assert name.startswith(ALLOWED_OWN), f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, \
                f"{path.name} imports third-party {top!r}"


def test_importing_sim_and_plan_loads_neither_torch_nor_sglang():
    code = ("import sys, pipemax_sglang.sim, pipemax_sglang.sim.__main__, pipemax_sglang.plan, "
            "pipemax_sglang.plan.__main__; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'sglang', 'matplotlib')); print(bad)")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
