"""Does PipeMax beat stock SGLang when the device KV is short, and how close does it get to
SGLang with ample KV? One offline workload, three ways, same model and pp size, one run:

    ceiling   stock SGLang, device KV ample for everything in flight
    stock     stock SGLang, device KV capped below what is in flight (the baseline)
    pipemax   PipeMax, the same cap (parked KV in host memory, budgeted prefetch)

    python benchmarks/bench_offline.py [--quick] [--repeat N] [--pp-size 2] [--depth 2]
        [--cap 0.5] [--sweep-depth 0,1,2,3] [--extra-cap 0.25] [--emulate-link-gbps X]
        [--stock-cache hicache|plain] [--trace lengths.jsonl] [--json PATH]

Stock runs use SGLang's hierarchical cache configured as PipeMax's host tier (same host
size, write-through, page 1, MRU eviction), so that only the scheduling differs; on these
2-core machines SGLang's PP loop with the hierarchical cache on also runs 1.5-1.8x faster
than with SGLang's defaults (measured; why is not known), which a baseline without it
would charge to PipeMax. --stock-cache plain runs SGLang's defaults.

Prints one line per configuration and a summary line; --json writes the record (keys
ceiling_tok_s, stock_tok_s, pipemax_tok_s, ratio, fraction_of_ceiling, outputs_identical,
h2d_bytes, d2h_bytes, parked_peak, recomputes, budget_utilisation, plus settings and the
turns timed on stage 0 for benchmarks/validate_sim.py: `calibration_step_samples` from one
more run of the ceiling's configuration (ample KV, M = pp) through PipeMax's scheduler,
where nothing presses, drains or parks, so SGLang's own path runs (stock SGLang records no
steps; validate_sim fits on these and predicts PipeMax's run), and PipeMax's own
`step_samples`). Each configuration runs in
its own process (a fresh engine; a crash fails that line, not the run). Throughput is output
tokens over the generate call's wall time, engine start excluded. --repeat N runs the three
N times, interleaved (ceiling, stock, pipemax, ceiling, ...) so that a slow spell of a
shared machine lands on all three alike, and reports each one's median: single runs of a
few seconds swing by +-15% here (and by half in a bad spell). It also reports the median of
the rounds' own ratios (round_fraction_of_ceiling_median, round_ratio_median), which pair
runs that saw the same machine speed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sharegpt_like(n: int, seed: int, prompt_mean: float, output_mean: float) -> list[tuple[int, int]]:
    """Lognormal prompt and output lengths (sigma 0.6), the long tail of chat traces,
    clipped to [8, 4 x mean]: (prompt_len, output_len) per request."""
    rng = random.Random(seed)

    def draw(mean: float) -> int:
        mu = math.log(mean) - 0.18          # lognormal mean = exp(mu + sigma^2 / 2)
        return int(min(4 * mean, max(8, rng.lognormvariate(mu, 0.6))))

    return [(draw(prompt_mean), draw(output_mean)) for _ in range(n)]


def read_trace(path: str) -> list[tuple[int, int]]:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return [(int(r["prompt_len"]), int(r["output_len"])) for r in rows]


# ---- one configuration, in a child process ---------------------------------------------------
def worker(spec: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    from pipemax_sglang import Engine

    rng = random.Random(spec["seed"])
    prompts = [[rng.randrange(4, spec["vocab"]) for _ in range(p)] for p, _ in spec["lengths"]]
    params = [{"temperature": 0.0, "max_new_tokens": o, "ignore_eos": True} for _, o in spec["lengths"]]
    engine = Engine(model_path=spec["model"], log_level="error", **spec["engine"])
    try:
        t0 = time.perf_counter()
        outs = engine.generate(input_ids=prompts, sampling_params=params)
        wall = time.perf_counter() - t0
        status = engine.pipemax_status()
    finally:
        engine.shutdown()
    tokens = sum(len(o["output_ids"]) for o in outs)
    return {"tok_s": tokens / wall, "wall_s": wall, "output_tokens": tokens,
            "outputs": [o["output_ids"] for o in outs], "stages": status["stages"]}


def run(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"configuration failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def stats_of(result: dict) -> dict:
    stages = [s["pipemax"] for s in result["stages"]]
    if not stages:
        return {}
    s0 = stages[0]
    return {"h2d_bytes": sum(s["h2d_bytes"] for s in stages), "d2h_bytes": sum(s["d2h_bytes"] for s in stages),
            "parked_peak": s0["parked_peak"], "recomputes": max(s["recomputes"] for s in stages),
            "budget_utilisation": s0["budget_utilisation"], "over_budget_plans": s0["over_budget_plans"],
            "prefetch_stall_s": max(s["prefetch_stall_s"] for s in stages),
            "effective_batch_mean": s0["effective_batch_mean"], "imbalance": s0["imbalance"],
            "parks": s0["parks"], "rejoins": s0["rejoins"],
            "kv_move_ms": max(s.get("kv_move_ms", 0.0) for s in stages)}


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (the lower middle of an even count)."""
    return sorted(runs, key=lambda r: r["tok_s"])[(len(runs) - 1) // 2]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="48 short requests (minutes on 2 cores)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the three main runs; medians")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--prompt-mean", type=float, default=None)
    ap.add_argument("--output-mean", type=float, default=None)
    ap.add_argument("--trace", default=None, help="JSONL of {prompt_len, output_len}")
    ap.add_argument("--pp-size", type=int, default=2)
    ap.add_argument("--depth", type=int, default=2, help="pp_async_batch_depth: M = pp + depth")
    ap.add_argument("--cap", type=float, default=0.5, help="device KV / KV in flight, capped runs")
    ap.add_argument("--extra-cap", type=float, default=None, help="also run PipeMax and stock at this cap")
    ap.add_argument("--sweep-depth", default="", help="also run stock (ample KV) and PipeMax at these depths, e.g. 0,1,3")
    ap.add_argument("--emulate-link-gbps", type=float, default=None)
    ap.add_argument("--selector", default="greedy")
    ap.add_argument("--stock-cache", choices=("hicache", "plain"), default="hicache",
                    help="stock runs with SGLang's hierarchical cache configured as PipeMax's host "
                         "tier (default), or with SGLang's defaults")
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    sys.path.insert(0, str(ROOT))
    from pipemax_sglang.models import TINY_MODEL_RECIPE, ensure_tiny_model

    model = args.model_path or ensure_tiny_model()
    n = args.requests or (48 if args.quick else 96)
    lengths = read_trace(args.trace) if args.trace else sharegpt_like(
        n, args.seed, args.prompt_mean or (130 if args.quick else 265), args.output_mean or (48 if args.quick else 96))
    need = sum(p + o for p, o in lengths)
    base = {"model": model, "seed": args.seed, "vocab": TINY_MODEL_RECIPE["vocab_size"], "lengths": lengths}
    pp, depth = args.pp_size, args.depth
    ample = int(need * 1.25) + 1024          # device KV of the ceiling runs

    def engine(cap_frac: float | None, pipemax: bool, d: int = depth) -> dict:
        kw = {"pp_size": pp, "max_total_tokens": int(need * cap_frac) if cap_frac else ample}
        if pp > 1:
            kw["pp_async_batch_depth"] = d
        if pipemax:
            kw.update(pipemax_host_kv_tokens=2 * need + 4096, pipemax_selector=args.selector)
        else:
            kw["disable_pipemax"] = True
            if args.stock_cache == "hicache":
                # SGLang's own host tier, sized and written as PipeMax's: the comparison is
                # then of the scheduling alone (and stock may keep evicted prefixes on host)
                kw.update(enable_hierarchical_cache=True, hicache_write_policy="write_through",
                          page_size=1, radix_eviction_policy="mru",
                          hicache_ratio=(2 * need + 4096) / kw["max_total_tokens"])
        if args.emulate_link_gbps:
            kw["pipemax_emulate_link_gbps"] = args.emulate_link_gbps
        return {**base, "engine": kw}

    rows: dict[str, dict] = {}

    def go(name: str, spec: dict) -> dict:
        r = run(spec)
        rows[name] = r
        st = stats_of(r)
        extra = (f"  parks {st['parks']} rejoins {st['rejoins']} recomputes {st['recomputes']} "
                 f"H2D {st['h2d_bytes'] / 1e6:.1f} MB util {st['budget_utilisation']:.2f} "
                 f"batch {st['effective_batch_mean']:.1f} move {st['kv_move_ms']:.2f} ms") if st else ""
        print(f"{name:<22} {r['tok_s']:8.1f} tok/s  ({r['output_tokens']} tokens, {r['wall_s']:.1f} s){extra}",
              flush=True)
        return r

    print(f"bench_offline: {len(lengths)} requests, {need} KV tokens in flight, pp {pp}, "
          f"micro-batches {pp + depth if pp > 1 else 1}, cap {args.cap:g}, stock cache "
          f"{args.stock_cache}", flush=True)
    main_runs: dict[str, list[dict]] = {"ceiling": [], "stock": [], "pipemax": []}
    for r in range(args.repeat):
        tag = f" #{r + 1}" if args.repeat > 1 else ""
        main_runs["ceiling"].append(go(f"ceiling (stock, ample){tag}", engine(None, False)))
        main_runs["stock"].append(go(f"stock (cap {args.cap:g}){tag}", engine(args.cap, False)))
        main_runs["pipemax"].append(go(f"pipemax (cap {args.cap:g}){tag}", engine(args.cap, True)))
    ceiling, stock, pm = (median_run(main_runs[k]) for k in ("ceiling", "stock", "pipemax"))
    # stock's path, timed: PipeMax's scheduler at ample KV and M = pp never presses, drains,
    # parks or rejoins (validate_sim.py fits the simulator's step on this run alone)
    calib = go("calibration (stock path, timed, M = pp)", engine(None, True, 0))
    calib_stage = calib["stages"][0]["pipemax"]
    if args.extra_cap:
        go(f"stock (cap {args.extra_cap:g})", engine(args.extra_cap, False))
        go(f"pipemax (cap {args.extra_cap:g})", engine(args.extra_cap, True))
    sweep = []
    for d in [int(x) for x in args.sweep_depth.split(",") if x.strip()]:
        # each depth against stock's own ceiling at that depth: on CPU stock's best depth
        # is not always the main runs' one
        c = go(f"ceiling depth {d} (M={pp + d})", engine(None, False, d))
        p = go(f"pipemax depth {d} (M={pp + d})", engine(args.cap, True, d))
        sweep.append({"micro_batches": pp + d, "ceiling_tok_s": c["tok_s"], "pipemax_tok_s": p["tok_s"]})
        print(f"  M={pp + d}: pipemax / ceiling at M={pp + d} {p['tok_s'] / c['tok_s']:.2f}, "
              f"/ main ceiling {p['tok_s'] / ceiling['tok_s']:.2f}", flush=True)

    identical = all(r["outputs"] == ceiling["outputs"] for runs in main_runs.values() for r in runs)
    st = stats_of(pm)
    record = {
        "ceiling_tok_s": ceiling["tok_s"], "stock_tok_s": stock["tok_s"], "pipemax_tok_s": pm["tok_s"],
        "ratio": pm["tok_s"] / stock["tok_s"], "fraction_of_ceiling": pm["tok_s"] / ceiling["tok_s"],
        "outputs_identical": identical, **st,
        "repeat": args.repeat,
        "rounds": [{k: main_runs[k][i]["tok_s"] for k in main_runs} for i in range(args.repeat)],
        "runs": {k: {"tok_s": v["tok_s"], "wall_s": v["wall_s"], **stats_of(v)} for k, v in rows.items()},
        "depth_sweep": sweep,
        "settings": {"model_config": str(Path(model) / "config.json"), "pp_size": pp,
                     "stock_cache": args.stock_cache,
                     "micro_batches": pp + depth if pp > 1 else 1, "device_kv_tokens": int(need * args.cap),
                     "requests": len(lengths), "prompt_len": [p for p, _ in lengths],
                     "output_len": [o for _, o in lengths], "host_kv_tokens": 2 * need + 4096,
                     "ceiling_kv_tokens": ample,
                     **({"link_gbps": args.emulate_link_gbps} if args.emulate_link_gbps else {})},
        "calibration_step_samples": [dict(x, stage=0) for x in calib_stage["step_samples"]],
        "calibration_prefill_samples": [dict(x, stage=0) for x in calib_stage.get("prefill_samples", [])],
        "calibration_parks": calib_stage.get("parks", 0),
        "step_samples": [dict(x, stage=0) for x in pm["stages"][0]["pipemax"]["step_samples"]],
        "prefill_samples": [dict(x, stage=0) for x in pm["stages"][0]["pipemax"].get("prefill_samples", [])],
    }
    if args.emulate_link_gbps:
        # performance-model.md: a link of BW per stage streams BW / (L * k_s) tokens/s per stage,
        # i.e. P * BW / (L * kv_tok) for the pipeline, L the mean context
        mean_ctx = sum(p + o / 2 for p, o in lengths) / len(lengths)
        kv_tok = 2 * TINY_MODEL_RECIPE["num_hidden_layers"] * TINY_MODEL_RECIPE["num_key_value_heads"] * \
            (TINY_MODEL_RECIPE["hidden_size"] // TINY_MODEL_RECIPE["num_attention_heads"]) * 4
        record["link_bound_tok_s"] = pp * args.emulate_link_gbps * 1e9 / (mean_ctx * kv_tok)
        record["fraction_of_link_bound"] = pm["tok_s"] / record["link_bound_tok_s"]
    if args.repeat > 1:
        # a round runs its three back to back, so its ratios see one speed of a shared
        # machine; the medians above pair runs from different rounds
        fr = [x["pipemax"] / x["ceiling"] for x in record["rounds"]]
        rr = [x["pipemax"] / x["stock"] for x in record["rounds"]]
        record["round_fraction_of_ceiling_median"] = statistics.median(fr)
        record["round_ratio_median"] = statistics.median(rr)
        print(f"medians of {args.repeat} rounds; pipemax/ceiling by round: "
              + ", ".join(f"{f:.2f}" for f in fr) + f" (median {record['round_fraction_of_ceiling_median']:.2f}); "
              + "pipemax/stock by round: " + ", ".join(f"{f:.2f}" for f in rr)
              + f" (median {record['round_ratio_median']:.2f})", flush=True)
    print(f"bench_offline: ceiling {ceiling['tok_s']:.1f}, stock {stock['tok_s']:.1f}, pipemax {pm['tok_s']:.1f} tok/s; "
          f"pipemax/stock {record['ratio']:.2f}x, pipemax/ceiling {record['fraction_of_ceiling']:.2f}; "
          f"outputs identical: {identical}; recomputes {st.get('recomputes')}, parked peak {st.get('parked_peak')}, "
          f"H2D {st.get('h2d_bytes', 0) / 1e6:.1f} MB, D2H {st.get('d2h_bytes', 0) / 1e6:.1f} MB, "
          f"budget utilisation {st.get('budget_utilisation', 0):.2f}"
          + (f"; link-bound {record['link_bound_tok_s']:.1f} tok/s ({record['fraction_of_link_bound']:.2f})"
             if args.emulate_link_gbps else ""), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
