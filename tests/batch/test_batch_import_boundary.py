"""pipemax_sglang.batch handles files with no engine: it imports neither torch nor sglang, so
its tests run in milliseconds and the runner refuses a bad file before SGLang is imported."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted((REPO / "pipemax_sglang" / "batch").glob("*.py"))
ALLOWED = {"pipemax_sglang", "tqdm"}   # tqdm: the terminal's bar, imported when one is drawn


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_only_stdlib_tqdm_and_the_project(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ALLOWED, f"{path.name} imports {name}"
            assert not name.startswith("pipemax_sglang.sglang"), f"{path.name} imports the SGLang layer"


def test_the_cli_refusal_path_loads_neither_torch_nor_sglang():
    code = ("import sys; from pipemax_sglang import run_batch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sglang', 'tqdm')))")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
