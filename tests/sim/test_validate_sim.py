"""benchmarks/validate_sim.py against a hand-written bench_offline record (fixtures/).

The record's 13 step samples were written from t = 4 ms + 0.2 ms * rows + 2 us * sum_ctx,
plus one 50 ms outlier (a GC pause). The measured throughputs are made up: this checks
the path (fit, simulate, compare, diagnose), not the numbers of a real CPU run.
"""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "bench_offline_tiny.json"


def _module():
    spec = importlib.util.spec_from_file_location("validate_sim", REPO / "benchmarks" / "validate_sim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_validate_fits_simulates_and_reports_the_ratio_error(tmp_path, capsys):
    mod = _module()
    out = tmp_path / "val.json"
    assert mod.main([str(FIXTURE), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    # The robust fit recovers the step model the samples were written from; the outlier is out.
    sc = res["predicted"]["direct"]["fit"]["step_cost"]
    assert sc["a"] == pytest.approx(4e-3, rel=0.01)
    assert sc["b"] == pytest.approx(2e-4, rel=0.01)
    assert sc["c"] == pytest.approx(2e-6, rel=0.01)
    # The fitted hardware profile is the core's fit_profile: source "fitted".
    assert "fitted from steps 13 samples" in res["predicted"]["profile"]["fit"]["profile"]["note"]
    measured = json.loads(FIXTURE.read_text())
    for name in ("profile", "direct"):
        p = res["predicted"][name]
        assert p["ratio"] == pytest.approx(p["pipemax_tok_s"] / p["stock_tok_s"])
        assert res["ratio_error"][name] == pytest.approx(abs(p["ratio"] - measured["ratio"]) / measured["ratio"])
        assert f"ratio error {res['ratio_error'][name]:.1%}" in text
    worst = max(res["ratio_error"].values())
    assert res["within_tolerance"] == (worst <= 0.25)
    assert "suspect term:" in text and res["suspect"]
