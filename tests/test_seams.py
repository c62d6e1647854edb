"""The seams record (pipemax_sglang/sglang/seams.py) against the pinned SGLang: every seam
holds, the check notices a symbol, a parameter or an attribute going away, every SGLang
import in our code is recorded, and docs/seams.md is the generated table. No engine."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from pipemax_sglang.sglang import seams
from pipemax_sglang.sglang.seams import SEAMS, Seam, check

REPO = Path(__file__).resolve().parents[1]


def _broken() -> set[str]:
    return {s.target for s, _ in check()}


def test_every_seam_holds_on_the_pin():
    assert len(SEAMS) >= 80
    assert check() == []


def test_a_method_removed_from_the_scheduler_is_noticed(monkeypatch):
    from sglang.srt.managers.scheduler import Scheduler

    owner = next(c for c in Scheduler.__mro__ if "_pp_launch_batch" in vars(c))
    monkeypatch.delattr(owner, "_pp_launch_batch")
    assert _broken() == {"sglang.srt.managers.scheduler:Scheduler._pp_launch_batch"}


def test_a_module_function_renamed_is_noticed(monkeypatch):
    common = importlib.import_module("sglang.srt.mem_cache.common")
    monkeypatch.setattr(common, "evict_from_tree_cache_v2", common.evict_from_tree_cache, raising=False)
    monkeypatch.delattr(common, "evict_from_tree_cache")
    assert _broken() == {"sglang.srt.mem_cache.common:evict_from_tree_cache"}


def test_a_parameter_renamed_is_noticed(monkeypatch):
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

    monkeypatch.setattr(UnifiedRadixCache, "root_node_handle", lambda self, key=None: None)
    bad = dict((s.target, why) for s, why in check())
    assert list(bad) == ["sglang.srt.mem_cache.unified_radix_cache:UnifiedRadixCache.root_node_handle"]
    assert "extra_key" in bad[next(iter(bad))]


def test_an_instance_attribute_never_assigned_is_noticed():
    ok = Seam("sglang.srt.managers.scheduler:Scheduler.max_total_num_tokens", "attr", "", "", "")
    gone = Seam("sglang.srt.managers.scheduler:Scheduler.max_total_num_tokenz", "attr", "", "", "")
    assert [s.target for s, _ in check((ok, gone))] == [gone.target]


def _sglang_imports() -> set[str]:
    """module:name for every `from sglang... import name` in the package (seams.py aside)."""
    out = set()
    for path in (REPO / "pipemax_sglang").rglob("*.py"):
        if path.name == "seams.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sglang":
                out |= {f"{node.module}:{a.name}" for a in node.names}
    return out


def test_every_sglang_import_in_the_package_is_a_recorded_seam():
    imports = _sglang_imports()
    assert imports, "the package imports nothing from sglang?"
    recorded = {s.target for s in SEAMS}
    # a recorded seam on a symbol inside an imported module counts for `from pkg import module`
    modules = {s.target.split(":")[0] for s in SEAMS}
    missing = sorted(i for i in imports
                     if not any(t == i or t.startswith(i + ".") for t in recorded)
                     and i.replace(":", ".") not in modules)
    assert missing == [], f"record these in pipemax_sglang/sglang/seams.py: {missing}"


def test_docs_seams_md_is_the_generated_table():
    assert (REPO / "docs" / "seams.md").read_text() == seams.markdown(), \
        "regenerate: python -m pipemax_sglang.sglang.seams --markdown > docs/seams.md"


def test_the_command_exits_zero_when_every_seam_holds_and_one_when_not(monkeypatch, capsys):
    assert seams.main(["--check"]) == 0
    assert f"{len(SEAMS)} of {len(SEAMS)} hold" in capsys.readouterr().out
    monkeypatch.setattr(seams, "SEAMS", SEAMS + (Seam("sglang.srt.managers.scheduler:NoSuchThing", "class", "", "", ""),))
    monkeypatch.setattr(seams.check, "__defaults__", (seams.SEAMS,))
    assert seams.main(["--check"]) == 1
    assert "seam broken: sglang.srt.managers.scheduler:NoSuchThing" in capsys.readouterr().err
