"""A staged search for PipeMax's settings, each candidate scored by the simulator.

The space is small and the stages nearly independent, so a staged search (each stage
keeps the best so far) finds what a full grid would at a tenth of the runs:

    1. pp size        every divisor of the GPU count the model fits (the rest replicas),
                      M = pp; a shorter pipeline reads fewer weights a token but has
                      less HBM for KV
    2. micro-batches  M in {pp, pp + 1, 1.25 pp, 1.5 pp, 2 pp}: more in flight against
                      more weight reads a cycle (docs/design.md: M*R + 2*C <= D)
    3. budget margin  {0.05, 0.1, 0.2}: budget used against stalls when slots run long
    4. row cap        none, or 1.25 x the mean rows of a turn: a cap keeps one micro-batch
                      from taking the window of the others

Host KV: the host memory less an OS reserve (`os_reserve_gb`, 8 GB by default). Every
candidate runs the same seeded ShareGPT-like workload; stock SGLang (pp, no offload) on
the same workload is run once for reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

from pipemax_sglang.sim import Machine, ModelShape, SimConfig, SimResult, simulate
from pipemax_sglang.sim.costs import DoesNotFit
from pipemax_sglang.sim.workload import Workload


class Candidate(NamedTuple):
    stage: str
    pp: int
    micro_batches: int
    margin: float
    row_cap: int | None
    result: SimResult


@dataclass(frozen=True)
class Plan:
    best: Candidate
    baseline: SimResult | None          # stock SGLang, pp without offload, same machine
    tried: tuple[Candidate, ...]
    host_kv_tokens: int                 # whole-model KV tokens the host keeps
    host_kv_gb_per_stage: float
    row_cap: int                        # what to pass as --pp-max-micro-batch-size


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan(model: ModelShape, machine: Machine, work: Workload, os_reserve_gb: float = 8.0,
         log: Callable[[str], None] = lambda s: None) -> Plan:
    host_gb = max(0.0, machine.host_mem_gb - os_reserve_gb)
    mach = replace(machine, host_mem_gb=host_gb)
    tried: list[Candidate] = []

    def run(stage: str, pp: int, m: int, margin: float, cap: int | None) -> Candidate | None:
        cfg = SimConfig(model, mach, work, policy="pipemax", pp=pp, micro_batches=m,
                        row_cap=cap, budget_margin=margin)
        try:
            r = simulate(cfg)
        except DoesNotFit:
            return None
        c = Candidate(stage, pp, m, margin, cap, r)
        tried.append(c)
        log(f"{stage:7s} pp {pp} M {m:2d} margin {margin:.2f} cap {cap or '-':>4}  "
            f"{r.tok_s:8.1f} tok/s")
        return c

    def better(a: Candidate | None, b: Candidate | None) -> Candidate | None:
        if a is None:
            return b
        return b if b is not None and b.result.tok_s > a.result.tok_s else a

    best = None
    for pp in sorted(_divisors(machine.num_gpus), reverse=True):
        best = better(best, run("pp", pp, pp, 0.1, None))
    if best is None:
        raise DoesNotFit(f"{model.name} fits no pipeline on {machine.num_gpus} "
                         f"{machine.profile.name}")
    pp = best.pp
    done = {c.micro_batches for c in tried if c.pp == pp}
    for m in sorted({pp, pp + 1, pp + max(1, pp // 4), pp + max(1, pp // 2), 2 * pp} - done):
        best = better(best, run("M", pp, m, 0.1, None))
    for margin in (0.05, 0.2):
        best = better(best, run("margin", pp, best.micro_batches, margin, None))
    cap = max(1, math.ceil(1.25 * best.result.mean_rows))
    best = better(best, run("cap", pp, best.micro_batches, best.margin, cap))
    try:
        base = simulate(SimConfig(model, mach, work, policy="pp", pp=pp))
    except DoesNotFit:
        base = None
    host_tokens = int(host_gb / best.result.replicas * 1e9 // model.kv_bytes_per_token)
    per_stage = host_tokens * max(model.stage_kv(pp)) / 1e9
    row_cap = best.row_cap if best.row_cap is not None else max(1, best.result.max_rows)
    return Plan(best, base, tuple(tried), host_tokens, per_stage, row_cap)
