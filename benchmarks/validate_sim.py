"""Does the simulator predict what we measure? One question, asked of the CPU benchmark,
in a way that can fail.

benchmarks/bench_offline.py (the real stack on CPU) writes a JSON record: measured
throughput of the ceiling (stock SGLang, ample KV), stock SGLang and PipeMax at the same
settings, the settings, and timed turns of stage 0. This script:

1. fits the stage step on the calibration run only: stock SGLang's own path, recorded by a
   PipeMax engine at ample KV where nothing presses and nothing parks (stock SGLang
   records no steps). PipeMax's own samples are never fitted: they are what is predicted.
   Two fits, as before: a hardware profile (the core's `fit_profile`: a = weight bytes /
   HBM rate, b = 2 params / FLOP rate, with the linear form of the old model: a CPU is no
   L20) and the step model itself (`fit_step_cost`: a, b, c free);
2. takes a stage's step on the CPU from its turn (stage 0's launch to next launch), scaled
   by the pipeline's occupancy (a launch waits for the round trip when fewer than P of the
   last M turns were busy); records without turn times fall back to the forward alone;
3. simulates the benchmark's settings with each fit: the ceiling, stock (pp) and PipeMax,
   on a CPU machine (the scheduler's moves share the cores with the forward: they add to
   the turn, at the simulator's default price of a move, not the run's own measurement);
4. prints predicted against measured and judges the direct fit:

       ratio (PipeMax / stock)            within RATIO_TOLERANCE (15%)
       ceiling, stock, PipeMax tok/s      each within ABS_TOLERANCE (25%)

   and exits 1 if either misses (2 if the record has no calibration samples), naming the
   suspect term:
       step fit residual > 15%        the step-time form a + b*rows + c*sum_ctx itself
       ceiling off                    the turn: overhead, prefill, pipeline bubbles
       stock off                      stock's admission and retraction (recompute)
       only PipeMax off               the transfer, budget and move terms
       profile path off, direct not   c: per-token attention cost is not k_s / HBM rate

    python benchmarks/validate_sim.py RECORD.json [--json OUT.json]

Record keys: stock_tok_s, pipemax_tok_s, ratio, ceiling_tok_s (optional), settings
{model_config (path to config.json or its folder, relative to the record), pp_size,
micro_batches, device_kv_tokens, requests, prompt_len, output_len (ints, or lists per
request), link_gbps (optional: the emulated link; default 10), host_kv_tokens
(optional), ceiling_kv_tokens (optional; default 1.25 x in flight + 1024, as the
benchmark)}, calibration_step_samples [{rows, sum_context, seconds[, turn_seconds,
active_mbs][, stage]}], calibration_prefill_samples (optional, {rows, tokens, ...}).
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
from pipemax_sglang.sim.calibration import NO_OVERLAP  # noqa: E402
from pipemax_sglang.sim.costs import Layout, StageCost, pp_layout  # noqa: E402
from pipemax_sglang.sim.workload import Workload  # noqa: E402

RATIO_TOLERANCE = 0.15
ABS_TOLERANCE = 0.25
_DEFAULT_LINK_GBPS = 10.0


class NoCalibration(ValueError):
    """The record has no calibration samples: fitting PipeMax's own would not validate."""


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


def _stage_step(x: dict, pp: int) -> float:
    """A sample's stage step: its turn scaled by the pipeline's occupancy (module
    docstring, 2), else its forward."""
    turn = x.get("turn_seconds")
    busy = x.get("active_mbs") or pp
    return float(x["seconds"] if turn is None else turn * min(busy, pp) / pp)


def calibration_samples(rec: dict) -> list[dict]:
    xs = rec.get("calibration_step_samples")
    if not xs:
        raise NoCalibration("the record has no calibration_step_samples (bench_offline.py's run "
                            "of stock's path); PipeMax's own step_samples are what is predicted")
    return xs


def stage_steps(rec: dict) -> list[tuple[int, int, float, float]]:
    """(rows, sum_context, forward s, stage step s) per calibration decode sample."""
    pp = int(rec["settings"]["pp_size"])
    return [(int(x["rows"]), int(x["sum_context"]), float(x["seconds"]), _stage_step(x, pp))
            for x in calibration_samples(rec)]


def prefill_per_token(rec: dict, a: float) -> float | None:
    """Seconds per prompt token of a prefill stage step beyond the step's fixed a (least
    squares through the origin), from the record's prefill samples; None with fewer than 3
    (the caller then charges a decode row's b per token, as before)."""
    pp = int(rec["settings"]["pp_size"])
    pts = [(int(x["tokens"]), _stage_step(x, pp) - a)
           for x in rec.get("calibration_prefill_samples") or []
           if x.get("turn_seconds") is not None]
    if len(pts) < 3:
        return None
    tok = np.array([t for t, _ in pts], dtype=float)
    y = np.array([v for _, v in pts])
    return max(0.0, float(tok @ y / (tok @ tok)))


def fitted_layouts(rec: dict) -> dict[str, tuple[Layout, Machine, dict]]:
    """Two layouts for the benchmark's pipeline: from the fitted profile (roofline form) plus
    the turn overhead, and from the stage step fitted directly (a, b, c as measured)."""
    s = rec["settings"]
    model = load_model(rec["_model_path"])
    pp = int(s["pp_size"])
    link = float(s.get("link_gbps") or _DEFAULT_LINK_GBPS)
    steps = stage_steps(rec)
    samples = tuple(StepSample(r, c, fwd) for r, c, fwd, _ in steps)
    # Every stage was timed alike: fit one stage's worth (the widest stage's weights).
    weights = max(model.stage_read_params(pp)) * model.dtype_bytes
    params = max(model.stage_read_params(pp))
    prof = fit_profile(Measurements("cpu-fitted", cpu_base(link), steps=samples,
                                    stage_weight_bytes=weights, stage_params=params))
    overhead = max(0.0, float(np.median([st - fwd for _, _, fwd, st in steps])))
    # a CPU: the old linear form (no kernel overlap to speak of), moves on the forward's cores
    machine = Machine(prof, num_gpus=pp, host_mem_gb=1e6, reserve_gb=0.0, step_overhead_s=overhead,
                      kernels=NO_OVERLAP, moves_serialize=True)
    cap = int(s["device_kv_tokens"])
    roof = pp_layout(model, replace(machine, profile=replace(prof, hbm_gb=1e6)), pp)
    roof = with_capacity(roof, cap)
    direct = fit_step_cost(tuple((r, c, st) for r, c, _, st in steps), StepCost(0.0, 0.0, 0.0))
    x = np.array([[1.0, r, c] for r, c, _, _ in steps])
    y = np.array([st for _, _, _, st in steps])
    resid = float(np.median(np.abs(x @ np.array([direct.a, direct.b, direct.c]) - y) / y))
    per_token = prefill_per_token(rec, direct.a)
    prefill = ({"prefill_b": direct.b, "head_b": 0.0, "attn": direct.c / 2} if per_token is None
               else {"prefill_b": per_token, "head_b": 0.0, "attn": 0.0})   # measured: all in
    stages = tuple(StageCost(step=direct, **prefill,
                             kv_bytes=st.kv_bytes, weight_bytes=0, capacity_tokens=cap)
                   for st in roof.stages)
    fit = {"profile": {"hbm_gbps": prof.hbm_gbps, "tflops": prof.flops / 1e12, "note": prof.note},
           "step_cost": {"a": direct.a, "b": direct.b, "c": direct.c},
           "step_fit_median_rel_residual": resid, "turn_overhead_s": overhead,
           "prefill_s_per_token": prefill["prefill_b"]}
    return {"profile": (roof, machine, fit),
            "direct": (Layout("pp", stages, 0.0, 0.0), machine, fit)}


def ceiling_tokens(s: dict) -> int:
    n = int(s["requests"])
    need = int(_lengths(s["prompt_len"], n).sum() + _lengths(s["output_len"], n).sum())
    return int(s.get("ceiling_kv_tokens") or int(need * 1.25) + 1024)


def with_capacity(layout: Layout, tokens: int) -> Layout:
    return replace(layout, stages=tuple(replace(st, capacity_tokens=tokens) for st in layout.stages))


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
        ample = simulate(base, with_capacity(layout, ceiling_tokens(s)))
        stock = simulate(base, layout)
        pm = simulate(replace(base, policy="pipemax"), layout)
        out[name] = {"ceiling_tok_s": ample.tok_s, "stock_tok_s": stock.tok_s,
                     "pipemax_tok_s": pm.tok_s, "ratio": pm.tok_s / stock.tok_s,
                     "dt_max_tok_s": pm.ceiling_tok_s, "fit": fit}
    return out


def _err(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas if meas else float("inf")


def judge(rec: dict, p: dict) -> dict:
    """Errors of one prediction against the record, and whether each is within tolerance."""
    out = {"ratio": _err(p["ratio"], rec["ratio"])}
    for k in ("ceiling_tok_s", "stock_tok_s", "pipemax_tok_s"):
        if rec.get(k):
            out[k] = _err(p[k], rec[k])
    ok = out["ratio"] <= RATIO_TOLERANCE and all(
        v <= ABS_TOLERANCE for k, v in out.items() if k != "ratio")
    return {"errors": out, "within_tolerance": bool(ok)}


def diagnose(rec: dict, pred: dict) -> str:
    d, p = pred["direct"], pred["profile"]
    if d["fit"]["step_fit_median_rel_residual"] > 0.15:
        return "step-time form: a + b*rows + c*sum_ctx does not fit the measured steps"
    if rec.get("ceiling_tok_s") and _err(d["ceiling_tok_s"], rec["ceiling_tok_s"]) > ABS_TOLERANCE:
        return "turn term: the ceiling (stock, ample KV) is mispredicted (overhead, prefill, bubbles)"
    if _err(d["stock_tok_s"], rec["stock_tok_s"]) > ABS_TOLERANCE:
        return "stock's admission/retraction: the ceiling fits, capped stock does not"
    if _err(d["pipemax_tok_s"], rec["pipemax_tok_s"]) > ABS_TOLERANCE:
        return "transfer/budget/move term: only PipeMax is mispredicted (link, window, moves)"
    if _err(p["ratio"], rec["ratio"]) > RATIO_TOLERANCE:
        return "c term: the profile's k_s / HBM-rate attention cost; the direct fit predicts well"
    return "the ratio: each figure is within its tolerance, their ratio is not"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="bench_offline.py's JSON record")
    ap.add_argument("--json", default=None, help="write the comparison here")
    a = ap.parse_args(argv)
    rec = load_record(Path(a.record))
    try:
        pred = predict(rec)
    except NoCalibration as e:
        print(f"validate_sim: {e}", file=sys.stderr)
        return 2
    s = rec["settings"]
    print(f"# {Path(rec['_model_path']).parent.name}: pp {s['pp_size']}, M {s['micro_batches']}, "
          f"{s['device_kv_tokens']} device KV tokens, {s['requests']} requests, link "
          f"{s.get('link_gbps') or _DEFAULT_LINK_GBPS} GB/s; fitted on {len(rec['calibration_step_samples'])} "
          f"calibration samples (stock's path), none of PipeMax's")
    fit = pred["direct"]["fit"]
    print(f"fitted profile: HBM {fit['profile']['hbm_gbps']:.2f} GB/s, {fit['profile']['tflops']:.3f} "
          f"TFLOP/s; step model a {fit['step_cost']['a'] * 1e3:.3f} ms, b {fit['step_cost']['b'] * 1e3:.4f} "
          f"ms/row, c {fit['step_cost']['c'] * 1e6:.4f} us/token (median residual "
          f"{fit['step_fit_median_rel_residual']:.1%}); turn overhead {fit['turn_overhead_s'] * 1e3:.2f} ms")
    ceil = rec.get("ceiling_tok_s")
    print(f"measured:            ceiling {ceil or float('nan'):8.2f}  stock {rec['stock_tok_s']:8.2f}  pipemax "
          f"{rec['pipemax_tok_s']:8.2f} tok/s  ratio {rec['ratio']:.3f}")
    verdicts = {}
    for name in ("profile", "direct"):
        p = pred[name]
        verdicts[name] = judge(rec, p)
        e = verdicts[name]["errors"]
        print(f"predicted ({name:7s}): ceiling {p['ceiling_tok_s']:8.2f}  stock {p['stock_tok_s']:8.2f}  pipemax "
              f"{p['pipemax_tok_s']:8.2f} tok/s  ratio {p['ratio']:.3f}  errors: ratio {e['ratio']:.1%}, "
              + ", ".join(f"{k.removesuffix('_tok_s')} {v:.1%}" for k, v in e.items() if k != "ratio"))
    v = verdicts["direct"]
    ok = v["within_tolerance"]
    suspect = "none: within tolerance" if ok else diagnose(rec, pred)
    print(f"direct fit {'within' if ok else 'OUTSIDE'} tolerance (ratio {RATIO_TOLERANCE:.0%}, each "
          f"absolute figure {ABS_TOLERANCE:.0%}); suspect term: {suspect}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "measured": {k: rec.get(k) for k in ("ceiling_tok_s", "stock_tok_s", "pipemax_tok_s", "ratio")},
            "predicted": pred, "verdicts": verdicts,
            "ratio_error": {k: x["errors"]["ratio"] for k, x in verdicts.items()},
            "tolerance": {"ratio": RATIO_TOLERANCE, "absolute": ABS_TOLERANCE},
            "within_tolerance": bool(ok), "suspect": suspect}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
