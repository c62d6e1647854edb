"""The launch command for a plan (flags of pipemax_sglang/config.py and SGLang's own).

    --tp-size T                    GPUs a stage (only when > 1)
    --pp-size P                    stages
    --pp-async-batch-depth D       micro-batches in flight beyond P: D = M - P
    --pp-max-micro-batch-size B    row cap of one micro-batch
    --pipemax-host-kv-gb H         host KV per pipeline stage, GB: the host tokens times the
                                   largest stage's KV bytes a token (every stage holds the
                                   same requests, so each needs room for all of them)
    --pipemax-budget-margin X      fraction of each prefetch window held back
    --dp-size R                    only when the pipeline is shorter than the server
"""

from __future__ import annotations

from pipemax_sglang.sim.model_shapes import ModelShape

_HUB = {"llama-2-13b": "meta-llama/Llama-2-13b-hf",
        "qwen2.5-32b": "Qwen/Qwen2.5-32B-Instruct",
        "llama-3-70b": "meta-llama/Meta-Llama-3-70B"}


def model_path(model: ModelShape, spec: str) -> str:
    """What --model-path should say: the hub id of a preset, else what the user gave."""
    return _HUB.get(model.name, spec)


def launch_command(path: str, pp: int, micro_batches: int, row_cap: int, host_kv_gb: float,
                   margin: float, replicas: int = 1, selector: str = "greedy", tp: int = 1) -> str:
    parts = ["python -m pipemax_sglang.launch_server", f"--model-path {path}",
             f"--pp-size {pp}", f"--pp-async-batch-depth {micro_batches - pp}",
             f"--pp-max-micro-batch-size {row_cap}", f"--pipemax-host-kv-gb {host_kv_gb:.1f}",
             f"--pipemax-budget-margin {margin:g}", f"--pipemax-selector {selector}"]
    if tp > 1:
        parts.insert(2, f"--tp-size {tp}")
    if replicas > 1:
        parts.insert(3 + (tp > 1), f"--dp-size {replicas}")
    return " ".join(parts)
