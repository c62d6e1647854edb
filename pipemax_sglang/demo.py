"""The main job in miniature: the batch runner on a sample file, pp_size 2, on the built-in tiny
model (built locally on first use). `make demo` runs it.

    python -m pipemax_sglang.demo [--requests 64] [--pp-size 2] [--out-dir demo-out]

Writes a seeded sample of chat and completions requests to OUT_DIR/requests.jsonl, then runs
`pipemax-run-batch` on it (printing the command first) into OUT_DIR/results.jsonl, starting
afresh each time. The device KV pool holds half of the tokens the batch keeps in flight
(--kv-fraction) and four micro-batches run on the two stages (--depth 2), so PipeMax parks the
inactive micro-batches' KV in host memory and brings it back within its budget; the summary
shows its parks, rejoins and bytes moved. Any further flags go to the runner unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from pipemax_sglang import env


def in_flight_tokens(requests_path: str, model_path: str) -> int:
    """Prompt tokens (as the model's tokenizer and chat template make them) plus max_tokens,
    summed over the file: the KV the batch holds if every request is in flight at once."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    total = 0
    with open(requests_path) as f:
        for line in f:
            body = json.loads(line)["body"]
            if "messages" in body:
                text = tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
                ids = tok(text, add_special_tokens=False)["input_ids"]   # the template has the BOS
            else:
                ids = tok(body["prompt"])["input_ids"]
            total += len(ids) + body["max_tokens"]
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipemax_sglang.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--pp-size", type=int, default=2)
    ap.add_argument("--model-path", default=None, help="default: the built-in tiny model")
    ap.add_argument("--out-dir", default="demo-out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kv-fraction", type=float, default=0.5,
                    help="device KV tokens as a fraction of the batch's KV in flight")
    ap.add_argument("--depth", type=int, default=2, help="pp_async_batch_depth (micro-batches = pp + depth)")
    args, runner_flags = ap.parse_known_args(argv)

    env.silence_python_warnings()   # as the runner does, before transformers is imported here
    from pipemax_sglang import run_batch
    from pipemax_sglang.batch.sample import write_sample
    from pipemax_sglang.models import ensure_tiny_model

    model = args.model_path or ensure_tiny_model()
    os.makedirs(args.out_dir, exist_ok=True)
    requests = os.path.join(args.out_dir, "requests.jsonl")
    results = os.path.join(args.out_dir, "results.jsonl")
    write_sample(requests, args.requests, seed=args.seed, max_tokens=(16, 64))
    if os.path.exists(results):   # the demo starts afresh: an old results file would be resumed
        os.remove(results)
    need = in_flight_tokens(requests, model)

    cmd = ["-i", requests, "-o", results, "--model-path", model, "--pp-size", str(args.pp_size),
           "--max-total-tokens", str(int(need * args.kv_fraction)), "--pipemax-host-kv-tokens", str(2 * need),
           "--summary-json", os.path.join(args.out_dir, "summary.json")]
    if args.pp_size > 1:
        cmd += ["--pp-async-batch-depth", str(args.depth)]
    cmd += runner_flags
    print(f"pipemax demo: {args.requests} requests keep {need} KV tokens in flight; the device holds "
          f"{int(need * args.kv_fraction)} ({args.kv_fraction:.0%})", flush=True)
    print("$ pipemax-run-batch " + shlex.join(cmd), flush=True)
    return run_batch.main(cmd)


if __name__ == "__main__":
    sys.exit(main())
