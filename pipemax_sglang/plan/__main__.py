"""`python -m pipemax_sglang.plan`: recommend PipeMax's settings and print the launch command.

    python -m pipemax_sglang.plan --model llama-3-70b --gpu l40 --gpus 8 --host-gb 512
    python -m pipemax_sglang.plan --model path/to/config.json --gpu rtx4090 --quick
"""

from __future__ import annotations

import argparse
import json
import sys

from pipemax_sglang.sim.__main__ import add_machine_args, machine_from
from pipemax_sglang.sim.model_shapes import load_model
from pipemax_sglang.sim.workload import sharegpt_like

from .command import launch_command, model_path
from .search import plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipemax_sglang.plan", description=__doc__.splitlines()[0])
    add_machine_args(p)
    p.add_argument("--requests", type=int, default=1500, help="simulated workload size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--os-reserve-gb", type=float, default=8.0, help="host memory not for KV")
    p.add_argument("--quick", action="store_true",
                   help="first setting of each family and 1,500 requests (rougher, much faster)")
    p.add_argument("--no-baselines", action="store_true", help="PipeMax's settings only")
    p.add_argument("--json", default=None, help="write the plan here")
    a = p.parse_args(argv)
    model = load_model(a.model)
    machine = machine_from(a)
    work = sharegpt_like(1500 if a.quick else a.requests, a.seed)
    print(f"# planning {model.name} on {a.gpus}x {a.gpu}, {a.host_gb:g} GB host; {work.describe()}")
    pl = plan(model, machine, work, a.os_reserve_gb, log=lambda s: print("  " + s, flush=True),
              baselines=not a.no_baselines, quick=a.quick)
    b = pl.best
    r = b.result
    reps = f" x {r.replicas} replicas" if r.replicas > 1 else ""
    print(pl.summary())
    print(f"recommended PipeMax setting: {f'tp {b.tp} x ' if b.tp > 1 else ''}pp {b.pp}{reps}, micro-batches {b.micro_batches} "
          f"(pp_async_batch_depth {b.micro_batches - b.pp}), row cap {pl.row_cap}, "
          f"host KV {pl.host_kv_tokens} tokens = {pl.host_kv_gb_per_stage:.1f} GB a stage, "
          f"budget margin {b.margin:g}")
    line = f"predicted: {r.tok_s:.1f} tok/s output"
    if pl.baseline is not None:
        line += f", stock SGLang pp{b.pp} {pl.baseline.tok_s:.1f} tok/s ({r.tok_s / pl.baseline.tok_s:.2f}x)"
    line += f"; prefetch adds {r.streamed_tok_s:.1f} tok/s = {r.ceiling_fraction:.0%} of dT_max {r.ceiling_tok_s:.1f}"
    print(line)
    cmd = launch_command(model_path(model, a.model), b.pp, b.micro_batches, pl.row_cap,
                         pl.host_kv_gb_per_stage, b.margin, r.replicas, tp=b.tp)
    print(cmd)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": pl.summary(), "winner": pl.winner.family,
                       "baselines": {k: {"setting": c.setting(), "tok_s": c.tok_s,
                                         "steady_tok_s": c.result.steady_tok_s}
                                     for k, c in pl.baselines.items()},
                       "best": {"tp": b.tp, "pp": b.pp, "micro_batches": b.micro_batches, "margin": b.margin,
                                "row_cap": pl.row_cap, "host_kv_tokens": pl.host_kv_tokens,
                                "host_kv_gb_per_stage": pl.host_kv_gb_per_stage,
                                "result": r.to_dict()},
                       "baseline": pl.baseline.to_dict() if pl.baseline else None,
                       "tried": [dict(family=c.family, stage=c.stage, tp=c.tp, pp=c.pp,
                                      micro_batches=c.micro_batches,
                                      margin=c.margin, row_cap=c.row_cap, tok_s=c.result.tok_s)
                                 for c in pl.tried],
                       "command": cmd}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
