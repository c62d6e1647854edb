"""The main job in miniature: an offline batch through pipemax_sglang.Engine, pp_size 2, on the
built-in tiny model (built locally on first use). `make demo` runs it.

    python -m pipemax_sglang.demo [--requests 64] [--pp-size 2] [--model-path DIR]

Prints one line: requests, prompt and output tokens, wall time and output throughput.
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
    args = ap.parse_args(argv)

    from pipemax_sglang import Engine
    from pipemax_sglang.models import TINY_MODEL_RECIPE, ensure_tiny_model

    model = args.model_path or ensure_tiny_model()
    prompts, outs = workload(args.requests, args.seed, TINY_MODEL_RECIPE["vocab_size"])
    params = [{"temperature": 0.0, "max_new_tokens": n, "ignore_eos": True} for n in outs]

    t0 = time.perf_counter()
    engine = Engine(model_path=model, pp_size=args.pp_size, log_level="error")
    started = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        results = engine.generate(input_ids=prompts, sampling_params=params)
        wall = time.perf_counter() - t1
        stages = len(engine.pipemax_status()["stages"])
    finally:
        engine.shutdown()

    out_tokens = sum(len(r["output_ids"]) for r in results)
    print(
        f"pipemax demo: {len(results)} requests, pp_size {args.pp_size} ({stages} PipeMax stages), "
        f"{sum(map(len, prompts))} prompt tokens, {out_tokens} output tokens in {wall:.1f} s: "
        f"{out_tokens / wall:.0f} output tok/s (engine start {started:.1f} s)"
    )


if __name__ == "__main__":
    main()
