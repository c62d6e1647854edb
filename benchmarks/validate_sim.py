"""Does the simulator predict what we measure? One question, asked of the CPU benchmark.

benchmarks/bench_offline.py (the scheduler issue's CPU run of the real stack) writes a
JSON record: measured throughput of stock SGLang and PipeMax at the same settings, their
ratio, the settings, and the decode steps it timed per stage. This script:

1. fits a hardware profile to those steps with the core's `fit_profile` (a = weight
   bytes / HBM rate, b = 2 params / FLOP rate) and, beside it, the step model itself
   with `fit_step_cost` (a, b and c free: the CPU is no roofline device);
2. simulates the benchmark's settings (model config, pp size, micro-batches, device KV
   tokens, requests and lengths, the emulated link) with each, stock (pp) and PipeMax;
3. prints predicted against measured, the error of the ratio, and if it exceeds 25%
   which term of the model is the suspect:
       step fit residual > 15%        the step-time form a + b*rows + c*sum_ctx itself
       stock off by > 25%             the pipeline: prefill, bubbles, admission
       only PipeMax off by > 25%      the transfer and budget terms (link, window)
       profile path off, direct not   c: per-token attention cost is not k_s / HBM rate

    python benchmarks/validate_sim.py RECORD.json [--json OUT.json]

Record keys: stock_tok_s, pipemax_tok_s, ratio, ceiling_tok_s (optional), settings
{model_config (path to config.json or its folder, relative to the record), pp_size,
micro_batches, device_kv_tokens, requests, prompt_len, output_len (ints, or lists per
request), link_gbps (optional: the emulated link; default 10), host_kv_tokens
(optional)}, step_samples [{rows, sum_context, seconds[, stage]}].
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipemax_sglang.core import (HardwareProfile, Measurements, StepCost, StepSample,  # noqa: E402
                                 fit_profile, fit_step_cost)
from pipemax_sglang.sim import Machine, SimConfig, load_model, simulate  # noqa: E402
from pipemax_sglang.sim.costs import Layout, StageCost, pp_layout  # noqa: E402
from pipemax_sglang.sim.workload import Workload  # noqa: E402

TOLERANCE = 0.25
_DEFAULT_LINK_GBPS = 10.0


def _lengths(value, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.int64)
    return np.full(n, int(arr)) if arr.ndim == 0 else arr[:n]


def load_record(path: Path) -> dict:
    rec = json.loads(path.read_text())
    s = rec["settings"]
    cfg = Path(s.get("model_config") or s.get("model_path") or s["model"])
    rec["_model_path"] = str(cfg if cfg.is_absolute() else (path.parent / cfg))
    return rec


def cpu_base(link_gbps: float) -> HardwareProfile:
    """Placeholder figures for what the steps do not measure (the link: the benchmark's
    emulated rate). HBM and FLOP rates are replaced by the fit."""
    return HardwareProfile("cpu", link_gbps, link_gbps, 0.0, 10.0, 1e3, 1e11, "datasheet",
                           "placeholder for fit_profile")


def fitted_layouts(rec: dict) -> dict[str, tuple[Layout, Machine, dict]]:
    """Two layouts for the benchmark's pipeline: from the fitted profile (roofline form),
    and from the step model fitted directly (a, b, c as measured)."""
    s = rec["settings"]
    model = load_model(rec["_model_path"])
    pp = int(s["pp_size"])
    link = float(s.get("link_gbps") or _DEFAULT_LINK_GBPS)
    samples = tuple(StepSample(int(x["rows"]), int(x["sum_context"]), float(x["seconds"]))
                    for x in rec["step_samples"])
    # Every stage was timed alike: fit one stage's worth (the widest stage's weights).
    weights = max(model.stage_read_params(pp)) * model.dtype_bytes
    params = max(model.stage_read_params(pp))
    prof = fit_profile(Measurements("cpu-fitted", cpu_base(link), steps=samples,
                                    stage_weight_bytes=weights, stage_params=params))
    machine = Machine(prof, num_gpus=pp, host_mem_gb=1e6, reserve_gb=0.0, step_overhead_s=0.0)
    cap = int(s["device_kv_tokens"])
    roof = pp_layout(model, replace(machine, profile=replace(prof, hbm_gb=1e6)), pp)
    roof = replace(roof, stages=tuple(replace(st, capacity_tokens=cap) for st in roof.stages))
    direct = fit_step_cost(tuple(tuple(x) for x in samples), StepCost(0.0, 0.0, 0.0))
    x = np.array([[1.0, r, c] for r, c, _ in samples])
    y = np.array([t for _, _, t in samples])
    resid = float(np.median(np.abs(x @ np.array([direct.a, direct.b, direct.c]) - y) / y))
    stages = tuple(StageCost(step=direct, prefill_b=direct.b, head_b=0.0, attn=direct.c / 2,
                             kv_bytes=st.kv_bytes, weight_bytes=0, capacity_tokens=cap)
                   for st in roof.stages)
    fit = {"profile": {"hbm_gbps": prof.hbm_gbps, "tflops": prof.flops / 1e12, "note": prof.note},
           "step_cost": {"a": direct.a, "b": direct.b, "c": direct.c},
           "step_fit_median_rel_residual": resid}
    return {"profile": (roof, machine, fit),
            "direct": (Layout("pp", stages, 0.0, 0.0), machine, fit)}


def predict(rec: dict) -> dict:
    s = rec["settings"]
    model = load_model(rec["_model_path"])
    n = int(s["requests"])
    work = Workload("bench_offline", _lengths(s["prompt_len"], n), _lengths(s["output_len"], n))
    out = {}
    for name, (layout, machine, fit) in fitted_layouts(rec).items():
        host_tokens = s.get("host_kv_tokens")
        mach = machine
        if host_tokens:
            mach = replace(machine, host_mem_gb=host_tokens * model.kv_bytes_per_token / 1e9)
        base = SimConfig(model, mach, work, policy="pp", micro_batches=int(s["micro_batches"]),
                         max_candidates=None)
        stock = simulate(base, layout)
        pm = simulate(replace(base, policy="pipemax"), layout)
        out[name] = {"stock_tok_s": stock.tok_s, "pipemax_tok_s": pm.tok_s,
                     "ratio": pm.tok_s / stock.tok_s, "ceiling_tok_s": pm.ceiling_tok_s,
                     "fit": fit}
    return out


def _err(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas if meas else float("inf")


def diagnose(rec: dict, pred: dict) -> str:
    d, p = pred["direct"], pred["profile"]
    if d["fit"]["step_fit_median_rel_residual"] > 0.15:
        return "step-time form: a + b*rows + c*sum_ctx does not fit the measured steps"
    if _err(d["stock_tok_s"], rec["stock_tok_s"]) > TOLERANCE:
        return "pipeline term: stock is mispredicted while single steps fit (prefill, bubbles, admission)"
    if _err(d["pipemax_tok_s"], rec["pipemax_tok_s"]) > TOLERANCE:
        return "transfer/budget term: only PipeMax is mispredicted (link rate, window, stalls)"
    if _err(p["ratio"], rec["ratio"]) > TOLERANCE:
        return "c term: the profile's k_s / HBM-rate attention cost; the direct fit predicts well"
    return "none: within tolerance"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="bench_offline.py's JSON record")
    ap.add_argument("--json", default=None, help="write the comparison here")
    a = ap.parse_args(argv)
    rec = load_record(Path(a.record))
    pred = predict(rec)
    s = rec["settings"]
    print(f"# {Path(rec['_model_path']).parent.name}: pp {s['pp_size']}, M {s['micro_batches']}, "
          f"{s['device_kv_tokens']} device KV tokens, {s['requests']} requests, link "
          f"{s.get('link_gbps') or _DEFAULT_LINK_GBPS} GB/s; {len(rec['step_samples'])} step samples")
    fit = pred["direct"]["fit"]
    print(f"fitted profile: HBM {fit['profile']['hbm_gbps']:.2f} GB/s, {fit['profile']['tflops']:.3f} "
          f"TFLOP/s; step model a {fit['step_cost']['a'] * 1e3:.3f} ms, b {fit['step_cost']['b'] * 1e3:.4f} "
          f"ms/row, c {fit['step_cost']['c'] * 1e6:.4f} us/token (median residual "
          f"{fit['step_fit_median_rel_residual']:.1%})")
    print(f"measured:            stock {rec['stock_tok_s']:8.2f} tok/s  pipemax {rec['pipemax_tok_s']:8.2f} "
          f"tok/s  ratio {rec['ratio']:.3f}")
    errors = {}
    for name in ("profile", "direct"):
        p = pred[name]
        errors[name] = _err(p["ratio"], rec["ratio"])
        print(f"predicted ({name:7s}): stock {p['stock_tok_s']:8.2f} tok/s  pipemax {p['pipemax_tok_s']:8.2f} "
              f"tok/s  ratio {p['ratio']:.3f}  ratio error {errors[name]:.1%}")
    if rec.get("ceiling_tok_s") is not None:
        print(f"ceiling: benchmark {rec['ceiling_tok_s']:.2f} tok/s, simulator dT_max "
              f"{pred['direct']['ceiling_tok_s']:.2f} tok/s")
    worst = max(errors.values())
    verdict = "within" if worst <= TOLERANCE else "OVER"
    suspect = diagnose(rec, pred)
    print(f"ratio error {worst:.1%}: {verdict} the {TOLERANCE:.0%} tolerance; suspect term: {suspect}")
    if a.json:
        Path(a.json).write_text(json.dumps({"measured": {k: rec[k] for k in ("stock_tok_s", "pipemax_tok_s", "ratio")},
                                            "predicted": pred, "ratio_error": errors,
                                            "within_tolerance": bool(worst <= TOLERANCE),
                                            "suspect": suspect}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
