"""One frozen SimConfig: what to simulate, validated where it is built.

Policies (docs/sim.md has each one's description and sources):

    tp               tensor parallel over all GPUs of a replica, no offload (SGLang --tp)
    pp               pipeline parallel, no offload: admission by HBM, recompute on
                     shortage (SGLang --pp-size; vLLM behaves alike)
    pp-offload-fcfs  pipeline parallel with KV offload and a naive selector (core fcfs)
    pipemax          pipeline parallel with offload, budget and the greedy selector
    td-pipe          pipeline parallel, no offload, TD-Pipe's prefill and decode phases
                     and inter-batch work stealing (tdpipe.py); M = pp

A replica is `pp` stages of `tp` GPUs each (tp x pp GPUs; policy "tp" is stock SGLang
with one stage, whose `tp` defaults to all the GPUs, or to `pp` when given: the old
spelling); num_gpus / (tp x pp) replicas split the requests and the host memory (data
parallel), and the machine's throughput is the replicas' sum. Hybrids (tp 2 x pp 4) are
policy "pp" (or an offload policy) with tp > 1. Defaults: M = pp for every pipeline policy
(SGLang's pp_async_batch_depth 0). For the offload policies that is not "nothing gained":
docs/design.md's tokens in flight D + (M - 2) * C already gain 6 C at M = pp = 8, and every
micro-batch past pp re-reads all weights once more a cycle; the planner searches M > pp
too (in our projections M = pp won). chunked_prefill_size 4,096 (SGLang's default for
24-60 GB GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass


from .machine import Machine
from .model_shapes import ModelShape
from .workload import Workload

POLICIES = ("tp", "pp", "pp-offload-fcfs", "pipemax", "td-pipe")
OFFLOAD = {"pp-offload-fcfs": "fcfs", "pipemax": "greedy"}
NO_CAP = 1 << 30


@dataclass(frozen=True)
class SimConfig:
    model: ModelShape
    machine: Machine
    workload: Workload
    policy: str = "pipemax"
    pp: int | None = None                 # stages; None: the GPUs over tp (policy tp: see above)
    tp: int = 1                           # GPUs a stage (tensor parallel inside a stage)
    micro_batches: int | None = None      # M; None: the policy's default
    row_cap: int | None = None            # --pp-max-micro-batch-size; None: no cap
    chunk_tokens: int = 4096
    budget_margin: float = 0.1
    max_candidates: int | None = 128      # parked requests shown to the selector (core Decider.shortlist)
    record: bool = False                  # keep every transfer's interval (tests)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.tp < 1 or (self.pp is not None and self.pp < 1):
            raise ValueError("tp and pp must be >= 1")
        if self.machine.num_gpus % self.gpus:
            raise ValueError(f"tp {self.tp_size} x pp {self.stages} must divide the "
                             f"{self.machine.num_gpus} GPUs")
        if self.micro_batches is not None:
            if self.micro_batches < 1:
                raise ValueError("micro_batches must be >= 1")
            if self.policy == "tp" and self.micro_batches != 1:
                raise ValueError("tensor parallel runs one batch (micro_batches 1)")
            if self.policy in OFFLOAD and self.micro_batches < self.stages:
                raise ValueError(f"offload needs micro_batches >= pp ({self.stages})")
            if self.policy == "td-pipe" and self.micro_batches != self.stages:
                raise ValueError(f"TD-Pipe runs pp ({self.stages}) micro-batches")
        if self.row_cap is not None and self.row_cap < 1:
            raise ValueError("row_cap must be >= 1")
        if self.chunk_tokens < 1 or not 0.0 <= self.budget_margin < 1.0:
            raise ValueError("chunk_tokens >= 1 and 0 <= budget_margin < 1")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError("max_candidates must be >= 1 (or None: all)")

    @property
    def tp_size(self) -> int:
        if self.policy == "tp" and self.tp == 1:
            return self.pp if self.pp is not None else self.machine.num_gpus
        return self.tp

    @property
    def stages(self) -> int:
        if self.policy == "tp":
            return 1
        return self.pp if self.pp is not None else max(1, self.machine.num_gpus // self.tp)

    @property
    def gpus(self) -> int:
        """GPUs of one replica."""
        return self.tp_size * self.stages

    @property
    def replicas(self) -> int:
        return self.machine.num_gpus // self.gpus

    @property
    def M(self) -> int:
        if self.micro_batches is not None:
            return self.micro_batches
        if self.policy == "tp":
            return 1
        return self.stages

    @property
    def cap(self) -> int:
        return self.row_cap if self.row_cap is not None else NO_CAP

    def describe(self) -> str:
        rc = self.row_cap if self.row_cap is not None else "-"
        par = f"tp{self.tp_size}" if self.stages == 1 else f"tp{self.tp_size} pp{self.stages} M{self.M}"
        dp = f" dp{self.replicas}" if self.replicas > 1 else ""
        return (f"{self.policy} {self.machine.profile.name}x{self.machine.num_gpus} {self.model.name} "
                f"{par}{dp} cap {rc} host {self.machine.host_mem_gb:g}GB")
