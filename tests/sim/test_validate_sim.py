"""benchmarks/validate_sim.py against a hand-written bench_offline record (fixtures/).

The record's 13 calibration samples (stock's path) were written from t = 4 ms + 0.2 ms *
rows + 2 us * sum_ctx, plus one 50 ms outlier (a GC pause). The measured throughputs are
made up: this checks the path (fit on stock only, simulate, compare, judge, exit code), not
the numbers of a real CPU run.
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
    rc = mod.main([str(FIXTURE), "--json", str(out)])
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert rc == (0 if res["within_tolerance"] else 1)        # a miss fails the run
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
        assert f"errors: ratio {res['ratio_error'][name]:.1%}" in text
    # judged on the direct fit: the ratio within 15%, each absolute figure within 25%
    d = res["verdicts"]["direct"]["errors"]
    assert set(d) == {"ratio", "ceiling_tok_s", "stock_tok_s", "pipemax_tok_s"}
    assert res["within_tolerance"] == (d["ratio"] <= 0.15 and max(d.values()) <= 0.25)
    assert res["tolerance"] == {"ratio": 0.15, "absolute": 0.25}
    assert "suspect term:" in text and res["suspect"]


def test_only_stock_samples_are_fitted_and_a_record_without_them_is_refused(tmp_path, capsys):
    mod = _module()
    rec = json.loads(FIXTURE.read_text())
    (tmp_path / "tiny_config").mkdir()
    (tmp_path / "tiny_config" / "config.json").write_text(
        (FIXTURE.parent / "tiny_config" / "config.json").read_text())
    # PipeMax's own samples, however wild, do not move the fit
    rec["step_samples"] = [dict(x, seconds=x["seconds"] * 7) for x in rec["step_samples"]]
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(rec))
    fit = mod.fitted_layouts(mod.load_record(path))["direct"][2]["step_cost"]
    assert fit["a"] == pytest.approx(4e-3, rel=0.01)
    del rec["calibration_step_samples"]
    path.write_text(json.dumps(rec))
    assert mod.main([str(path)]) == 2
    assert "calibration_step_samples" in capsys.readouterr().err


def test_the_stage_step_is_the_turn_scaled_by_occupancy_and_prefill_is_fitted_per_token(tmp_path):
    """Turn times (launch to next launch on stage 0) written from a stage step of 9 ms +
    0.5 ms * rows + 3 us * sum_ctx: with both of P = 2 stages busy a launch is one stage step
    after the last, with one micro-batch in flight it is the round trip, two stage steps.
    Prefill turns from 9 ms + 40 us per prompt token."""
    mod = _module()
    rec = json.loads(FIXTURE.read_text())
    step = lambda r, c: 9e-3 + 0.5e-3 * r + 3e-6 * c  # noqa: E731
    for i, x in enumerate(rec["calibration_step_samples"][:-1]):
        busy = 1 if i % 3 == 0 else 2 + i % 2
        x.update(turn_seconds=step(x["rows"], x["sum_context"]) * (2 if busy == 1 else 1), active_mbs=busy)
    rec["calibration_prefill_samples"] = [{"rows": r, "tokens": t, "seconds": 1e-3, "active_mbs": 2,
                               "turn_seconds": 9e-3 + 40e-6 * t} for r, t in [(1, 100), (4, 900), (9, 2000), (2, 300)]]
    path = tmp_path / "rec.json"
    (tmp_path / "tiny_config").mkdir()
    (tmp_path / "tiny_config" / "config.json").write_text(
        (FIXTURE.parent / "tiny_config" / "config.json").read_text())
    path.write_text(json.dumps(rec))
    steps = mod.stage_steps(mod.load_record(path))
    assert [round(s, 9) for *_, s in steps[:-1]] == [round(step(r, c), 9) for r, c, *_ in steps[:-1]]
    # the last sample has no turn time (nothing launched after it): its forward stands in
    assert steps[-1][3] == rec["calibration_step_samples"][-1]["seconds"]
    fit = mod.predict(mod.load_record(path))["direct"]["fit"]
    assert fit["step_cost"]["a"] == pytest.approx(9e-3, rel=0.02)
    assert fit["step_cost"]["b"] == pytest.approx(0.5e-3, rel=0.02)
    assert fit["step_cost"]["c"] == pytest.approx(3e-6, rel=0.05)
    assert fit["prefill_s_per_token"] == pytest.approx(40e-6, rel=0.05)
    assert fit["turn_overhead_s"] > 0      # the turns hold more than the 4 ms forwards
