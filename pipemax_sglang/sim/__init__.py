"""A discrete-event simulator of a pipeline-parallel decode server, driving the real policy.

P stages, M micro-batches in flight, per-GPU H2D and D2H links (or k GPUs behind one
switch uplink), HBM after weights, host memory, prefill and decode. Step and transfer
times come from the core's cost model with a hardware profile; the offload policies call
the core's budget and selector at every decision (docs/core.md's "one decision").
numpy and the standard library only (tests/sim/test_sim_import_boundary.py).

    cfg = SimConfig(load_model("llama-3-70b"), Machine.named("rtx4090", host_mem_gb=256),
                    sharegpt_like(5000, seed=0), policy="pipemax")
    r = simulate(cfg)            # SimResult: tok/s, dT_max, link use, stalls, ...

docs/sim.md has the model, the baselines and their sources, and what is left out.
"""

from .config import POLICIES, SimConfig
from .machine import Machine
from .model_shapes import PRESETS, ModelShape, load_model
from .run import SimResult, simulate
from .workload import Workload, fixed, load_jsonl, sharegpt_like

__all__ = ["POLICIES", "PRESETS", "Machine", "ModelShape", "SimConfig", "SimResult", "Workload",
           "fixed", "load_jsonl", "load_model", "sharegpt_like", "simulate"]
