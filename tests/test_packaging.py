"""One pin, stated once and obeyed everywhere; the GPU path never gets the CPU shim."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pipemax_sglang.sglang.version import SGLANG_PIN, installed_sglang_version

ROOT = Path(__file__).resolve().parent.parent


def test_installed_sglang_is_the_pin():
    assert installed_sglang_version() == SGLANG_PIN


def test_gpu_extra_pins_the_same_sglang_and_nothing_cpu_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    gpu = project["optional-dependencies"]["gpu"]
    assert f"sglang=={SGLANG_PIN}" in gpu
    names = " ".join(project["dependencies"] + gpu)
    assert "pipemax-sglang-cpu" not in names and "sgl_kernel" not in names and "torch==" not in names
    # the main wheel ships only the pipemax_sglang package (the shim is its own distribution)
    assert (tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
            ["targets"]["wheel"]["packages"] == ["pipemax_sglang"])


def test_cpu_environment_uses_the_pin():
    makefile = (ROOT / "Makefile").read_text()
    assert "pipemax_sglang/sglang/version.py" in makefile  # the Makefile reads the pin from there
    reqs = (ROOT / "requirements" / "cpu.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", reqs, re.M)
    assert not re.search(r"^sglang", reqs, re.M)  # sglang comes --no-deps, from the pin


def test_every_patch_has_its_header():
    for patch in sorted((ROOT / "patches").glob("*.patch")):
        head = patch.read_text().split("\n---", 1)[0]
        for field in ("Target:", "Why:", "How:", "Upstream:", "Drop when:"):
            assert field in head, f"{patch.name} lacks {field}"
