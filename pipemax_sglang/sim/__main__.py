"""`python -m pipemax_sglang.sim`: simulate one configuration, one line per policy.

    python -m pipemax_sglang.sim --model llama-3-70b --gpu rtx4090 --gpus 8 --host-gb 256
    python -m pipemax_sglang.sim --model path/to/config.json --policy pipemax,pp --requests 5000
    python -m pipemax_sglang.sim --trace lengths.jsonl --gpu l20 --gpus-per-switch 4

Prints each policy's throughput, and for the offload policies what the prefetch added
against the PCIe ceiling dT_max (run.py); with pp and pipemax both run, PipeMax's gain
over pp as a fraction of dT_max. --json writes every result.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from pipemax_sglang.core import PROFILES

from .config import POLICIES, SimConfig
from .costs import DoesNotFit
from .machine import Machine
from .model_shapes import PRESETS, load_model
from .run import SimResult, simulate
from .workload import load_jsonl, sharegpt_like


def add_machine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="llama-3-70b",
                   help=f"preset ({', '.join(PRESETS)}) or a config.json / model folder")
    p.add_argument("--gpu", default="rtx4090", choices=sorted(PROFILES))
    p.add_argument("--gpus", type=int, default=8, help="GPUs in the server")
    p.add_argument("--host-gb", type=float, default=256.0, help="host memory for KV, GB")
    p.add_argument("--gpus-per-switch", type=int, default=1,
                   help="GPUs sharing one PCIe switch uplink (1: a link each)")
    p.add_argument("--uplink-gbps", type=float, default=None,
                   help="switch uplink GB/s per direction (default: the GPU's link)")
    p.add_argument("--move-us", type=float, default=None,
                   help="the scheduler's CPU time per park or rejoin, microseconds "
                        f"(default {Machine.move_s * 1e6:.0f}: our measurement, sim/machine.py)")
    p.add_argument("--move-turn-us", type=float, default=None,
                   help="... and per turn that moves at all (its batched copies and decode batch), "
                        f"microseconds (default {Machine.move_turn_s * 1e6:.0f})")


def move_price_fields(move_us: float | None, move_turn_us: float | None) -> dict:
    """Machine fields for the price flags (microseconds; None keeps the default)."""
    extra = {}
    for flag, v, key in (("--move-us", move_us, "move_s"), ("--move-turn-us", move_turn_us, "move_turn_s")):
        if v is not None:
            if v < 0:
                raise ValueError(f"{flag} must be >= 0")
            extra[key] = v * 1e-6
    return extra


def machine_from(a: argparse.Namespace) -> Machine:
    try:
        extra = move_price_fields(getattr(a, "move_us", None), getattr(a, "move_turn_us", None))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return Machine.named(a.gpu, num_gpus=a.gpus, host_mem_gb=a.host_gb,
                         gpus_per_switch=a.gpus_per_switch, uplink_gbps=a.uplink_gbps, **extra)


def gain_fraction(results: list[SimResult]) -> str | None:
    by = {r.policy: r for r in results}
    if "pipemax" in by and "pp" in by and by["pipemax"].ceiling_tok_s > 0:
        pm, pp = by["pipemax"], by["pp"]
        gain = pm.tok_s - pp.tok_s
        return (f"pipemax over pp: +{gain:.1f} tok/s ({pm.tok_s / pp.tok_s:.2f}x) = "
                f"{gain / pm.ceiling_tok_s:.0%} of dT_max {pm.ceiling_tok_s:.1f} tok/s "
                f"(L {pm.mean_context:.0f}, {pm.gpu} x{pm.tp * pm.pp * pm.replicas})")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipemax_sglang.sim", description=__doc__.splitlines()[0])
    add_machine_args(p)
    p.add_argument("--policy", default="all", help=f"comma list of {', '.join(POLICIES)}, or all")
    p.add_argument("--pp", type=int, default=None, help="stages a replica (default: all the GPUs over --tp)")
    p.add_argument("--tp", type=int, default=1, help="GPUs a stage (tensor parallel; 2 with --pp 4: a hybrid)")
    p.add_argument("--micro-batches", type=int, default=None, help="M (default: policy's)")
    p.add_argument("--row-cap", type=int, default=None, help="--pp-max-micro-batch-size")
    p.add_argument("--margin", type=float, default=0.1, help="budget margin (fraction)")
    p.add_argument("--chunk", type=int, default=4096, help="chunked prefill tokens")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply ShareGPT-like lengths")
    p.add_argument("--trace", default=None, help="JSONL of prompt_len/output_len per request")
    p.add_argument("--max-candidates", type=int, default=128,
                   help="parked requests the selector sees (0: all)")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    policies = POLICIES if a.policy == "all" else tuple(a.policy.split(","))
    model = load_model(a.model)
    work = (load_jsonl(a.trace, a.requests) if a.trace
            else sharegpt_like(a.requests, a.seed, scale=a.scale))
    print(f"# {model.name}: {model.params / 1e9:.1f} B params, {model.kv_bytes_per_token / 1024:.0f} "
          f"KiB KV a token; {work.describe()}", flush=True)
    base = SimConfig(model, machine_from(a), work, policy=policies[0], pp=a.pp, tp=a.tp,
                     row_cap=a.row_cap, chunk_tokens=a.chunk, budget_margin=a.margin,
                     max_candidates=a.max_candidates or None)
    results = []
    for pol in policies:
        m = a.micro_batches if pol != "tp" else None
        try:
            r = simulate(replace(base, policy=pol, micro_batches=m))
        except DoesNotFit as e:
            print(f"{pol:16s} does not fit: {e}")
            continue
        results.append(r)
        print(r.line() + f"  [{r.sim_wall_s:.1f}s]", flush=True)
    line = gain_fraction(results)
    if line:
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump([r.to_dict() for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
