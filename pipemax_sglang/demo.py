"""The main job in miniature: an offline batch through pipemax_sglang.Engine, pp_size 2, on the
built-in tiny model (built locally on first use). `make demo` runs it.

    python -m pipemax_sglang.demo [--requests 64] [--pp-size 2] [--model-path DIR]

The device KV pool holds half of what the batch keeps in flight (--kv-fraction), and four
micro-batches run on the two stages (--depth 2): PipeMax parks the inactive micro-batches'
KV in host memory and brings it back within its budget. Prints one line: requests, prompt
and output tokens, wall time and output throughput, then what PipeMax moved.
"""

from __future__ import annotations

import argparse
import random
import time


def workload(n: int, seed: int, vocab: int) -> tuple[list[list[int]], list[int]]:
    """Seeded prompts (token ids) and output lengths, ShareGPT-like in shape: many short
    prompts, a tail of long ones."""
    rng = random.Random(seed)
    prompts, outs = [], []
    for _ in range(n):
        plen = min(512, max(8, int(rng.lognormvariate(4.6, 0.7))))
        prompts.append([rng.randrange(4, vocab) for _ in range(plen)])
        outs.append(rng.randint(16, 64))
    return prompts, outs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipemax_sglang.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--pp-size", type=int, default=2)
    ap.add_argument("--model-path", default=None, help="default: the built-in tiny model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kv-fraction", type=float, default=0.5,
                    help="device KV tokens as a fraction of the batch's KV in flight")
    ap.add_argument("--depth", type=int, default=2, help="pp_async_batch_depth (micro-batches = pp + depth)")
    args = ap.parse_args(argv)

    from pipemax_sglang import Engine
    from pipemax_sglang.models import TINY_MODEL_RECIPE, ensure_tiny_model

    model = args.model_path or ensure_tiny_model()
    prompts, outs = workload(args.requests, args.seed, TINY_MODEL_RECIPE["vocab_size"])
    params = [{"temperature": 0.0, "max_new_tokens": n, "ignore_eos": True} for n in outs]

    need = sum(len(p) + n for p, n in zip(prompts, outs))
    extra = {"pp_async_batch_depth": args.depth} if args.pp_size > 1 else {}
    t0 = time.perf_counter()
    engine = Engine(model_path=model, pp_size=args.pp_size, log_level="error",
                    max_total_tokens=int(need * args.kv_fraction), pipemax_host_kv_tokens=2 * need, **extra)
    started = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        results = engine.generate(input_ids=prompts, sampling_params=params)
        wall = time.perf_counter() - t1
        stages = engine.pipemax_status()["stages"]
    finally:
        engine.shutdown()

    out_tokens = sum(len(r["output_ids"]) for r in results)
    print(
        f"pipemax demo: {len(results)} requests, pp_size {args.pp_size} ({len(stages)} PipeMax stages), "
        f"{sum(map(len, prompts))} prompt tokens, {out_tokens} output tokens in {wall:.1f} s: "
        f"{out_tokens / wall:.0f} output tok/s (engine start {started:.1f} s)"
    )
    st = stages[0]["pipemax"]
    print(
        f"pipemax: device KV {int(need * args.kv_fraction)} of {need} tokens in flight; "
        f"{st['parks']} parks, {st['rejoins']} rejoins, {st['recomputes']} recomputes, "
        f"H2D {st['h2d_bytes'] / 1e6:.1f} MB, D2H {st['d2h_bytes'] / 1e6:.1f} MB, "
        f"mean batch {st['effective_batch_mean']:.1f}, parked peak {st['parked_peak']}"
    )


if __name__ == "__main__":
    main()
