"""The launcher fails fast: bad PipeMax flags, bad combinations and a wrong sglang pin exit 2
with a one-line reason, before SGLang starts any process (no port is ever opened)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipemax_sglang.sglang.version import SGLANG_PIN

ROOT = Path(__file__).resolve().parent.parent


def _launch(args: list[str], env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipemax_sglang.launch_server", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "error:" in line]


@pytest.mark.parametrize("args, needle", [
    (["--model-path", "m", "--pipemax-selector", "nope"], "--pipemax-selector must be one of"),
    (["--model-path", "m", "--pipemax-budget-margin", "2"], "--pipemax-budget-margin"),
    (["--model-path", "m", "--disable-pipemax", "--pipemax-host-kv-gb", "4"], "no effect with --disable-pipemax"),
])
def test_bad_pipemax_flag_exits_2_with_one_line(args, needle):
    proc = _launch(args)
    assert proc.returncode == 2
    lines = _error_lines(proc)
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_combination_with_sglang_flag_exits_before_any_process(tiny_model):
    proc = _launch(["--model-path", tiny_model, "--disable-radix-cache"])
    assert proc.returncode == 2
    assert "--disable-radix-cache" in _error_lines(proc)[0]
    assert "Traceback" not in proc.stderr


def test_wrong_sglang_version_names_both_versions(tmp_path):
    # A distribution record that shadows the installed sglang's metadata.
    dist = tmp_path / "sglang-0.5.22.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang\nVersion: 0.5.22\n")
    proc = _launch(["--model-path", "m"], env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert proc.returncode == 2
    (line,) = _error_lines(proc)
    assert f"sglang=={SGLANG_PIN}" in line and "sglang==0.5.22 is installed" in line


def test_help_lists_sglang_and_pipemax_flags():
    proc = _launch(["--help"])
    assert proc.returncode == 0
    for flag in ("--model-path", "--pp-size", "--pipemax-selector", "--disable-pipemax", "--pipemax-emulate-link-gbps"):
        assert flag in proc.stdout
