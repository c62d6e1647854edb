"""Small hand-made set-ups for the simulator's tests: layouts whose step times are round
numbers, a machine whose link moves a known number of tokens a second, tiny workloads."""

from __future__ import annotations

import numpy as np

from pipemax_sglang.core import HardwareProfile, StepCost
from pipemax_sglang.sim.costs import Layout, StageCost
from pipemax_sglang.sim.engine import Engine
from pipemax_sglang.sim.machine import Machine
from pipemax_sglang.sim.model_shapes import ModelShape
from pipemax_sglang.sim.workload import Workload

MS = 1e-3


def flat_layout(stages: int, step_s: float, capacity: int, kv_bytes: int = 1000,
                per_row_s: float = 0.0) -> Layout:
    """Every stage: decode and prefill both take step_s (+ per_row_s a row), nothing else."""
    st = StageCost(step=StepCost(step_s, per_row_s, 0.0), prefill_b=0.0, head_b=per_row_s,
                   attn=0.0, kv_bytes=kv_bytes, weight_bytes=0, capacity_tokens=capacity)
    return Layout("pp", (st,) * stages, 0.0, 0.0)


def link_machine(gbps: float = 25.0, latency_s: float = 0.0, gpus: int = 8,
                 per_switch: int = 1) -> Machine:
    prof = HardwareProfile("test", gbps, gbps, latency_s, 1000.0, 48.0, 1e14, "datasheet")
    return Machine(prof, num_gpus=gpus, gpus_per_switch=per_switch, host_mem_gb=1e6)


def workload(prompts, outputs) -> Workload:
    return Workload("test", np.array(prompts, dtype=np.int64), np.array(outputs, dtype=np.int64))


def run(layout: Layout, sched, M: int, machine: Machine | None = None, record: bool = True):
    eng = Engine(layout, machine or link_machine(gpus=layout.pp), sched, M, record=record)
    return eng, eng.run()


# A small transformer and a small GPU, so that a few hundred requests overflow HBM and the
# offload policies really park and stream (k_s = 2 * 2 layers * 2 heads * 64 * 2 B = 1 KiB).
TINY_MODEL = ModelShape("tiny", num_layers=16, hidden=1024, heads=16, kv_heads=2, head_dim=64,
                        intermediate=4096, vocab=32000)
TINY_GPU = HardwareProfile("tiny-gpu", 2.0, 2.0, 10e-6, 400.0, 0.135, 5e13, "datasheet")


def tiny_machine(host_gb: float = 4.0, per_switch: int = 1) -> Machine:
    return Machine(TINY_GPU, num_gpus=8, host_mem_gb=host_gb, gpus_per_switch=per_switch,
                   reserve_gb=0.0)


def small_workload(n: int = 60, seed: int = 0) -> Workload:
    """Prompts 50-299 and outputs 5-39 tokens: ~1,300 output tokens, about 2x what the
    tiny GPU's HBM (~9,500 tokens a stage) holds at once, so offload really streams."""
    rng = np.random.default_rng(seed)
    return Workload("small", rng.integers(50, 300, n), rng.integers(5, 40, n))
