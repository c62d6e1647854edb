"""core/ imports neither torch nor sglang: only the standard library, numpy and itself.

Two checks, because each misses what the other sees: the AST walk finds an import in a
branch that never runs here; the subprocess finds one pulled in indirectly at import time.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "pipemax_sglang" / "core"
ALLOWED_THIRD_PARTY = {"numpy"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(top-level module, level) of every import statement in `path`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(((node.module or "").split(".")[0], node.level))
    return out


MODULES = sorted(CORE.glob("*.py"))


def test_core_has_the_expected_modules():
    names = {p.stem for p in MODULES}
    assert {"__init__", "cost_model", "hardware", "budget", "selector", "baselines", "exact",
            "objective", "frame", "selector_types", "kv", "fitting", "selection", "refine"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_only_stdlib_numpy_and_core(path):
    for top, level in _imports(path):
        if level > 0:          # relative: stays inside core/ (no `..` escapes)
            assert level == 1, f"{path.name} reaches outside core/ with a level-{level} import"
            continue
        assert top not in ("torch", "sglang"), f"{path.name} imports {top}"
        assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, \
            f"{path.name} imports third-party module {top!r}"


def test_importing_core_loads_neither_torch_nor_sglang():
    code = ("import sys, pipemax_sglang.core as c; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sglang')); "
            "print(len(c.__all__)); print(bad)")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert int(out[0]) > 20          # the public API really was imported
    assert out[1] == "[]"
