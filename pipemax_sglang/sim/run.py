"""simulate(config) -> SimResult: build the layout, the scheduler and the engine; run.

Replicas (data parallel) are identical pipelines: replica 0 gets every replicas-th
request and its share of host memory, and the machine's throughput is replicas times its
own. Throughput is output tokens over the makespan (all requests there at t = 0).

The ceiling (performance-model.md) for the whole machine: dT_max = G * BW_pcie / (L * kv_tok),
G the GPUs, BW_pcie what one GPU's H2D sustains when all pull at once, L the mean context
of the decode rows this run actually computed, kv_tok the whole model's KV bytes a token.
`streamed_tok_s` is what prefetch really added: output tokens of rows that were loaded from
host for that turn; its ratio to dT_max is PipeMax's fraction of the ceiling.

Beside the whole run, the steady window (steady.py: pressed, past the fill, before the
drain) and the capacity optimum (core/capacity.py) from the same cost model: X*, the most
context a micro-batch can hold a turn on the binding stage (its device tokens, M, the row
cap, the policy's budget margin, the link's tokens in a slot of the simulated step, L the
steady mean context a row). `optimum_fraction` is the steady context a decode turn over X*.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from pipemax_sglang.core import TurnOptimum, turn_optimum

from .config import OFFLOAD, SimConfig
from .costs import Layout, layout, pcie_ceiling
from .engine import Engine
from .pipemax import PipeMaxScheduler
from .recompute import RecomputeScheduler
from .steady import steady_state
from .tdpipe import TDPipeScheduler
from .workload import Workload


@dataclass(frozen=True)
class SimResult:
    config: str
    policy: str
    gpu: str
    model: str
    workload: str
    requests: int
    tp: int                       # GPUs a stage
    pp: int                       # stages
    micro_batches: int
    replicas: int
    host_gb: float
    row_cap: int | None
    makespan_s: float
    output_tokens: int
    tok_s: float                  # output tokens a second, whole machine
    mean_rows: float              # rows per decode turn
    max_rows: int                 # most rows in one decode turn
    mean_context: float           # attention context per decode row
    capacity_tokens: int          # device KV tokens a stage
    ledger_peak: int
    ledger_violations: int
    h2d_gb: float
    d2h_gb: float
    link_util: float              # H2D busy time / (links * makespan)
    stall_frac: float             # stage time waiting for a prefetch / (stages * makespan)
    streamed_tok_s: float
    ceiling_tok_s: float          # dT_max
    host_peak_tokens: int         # most host KV tokens reserved at once (a replica)
    retractions: int
    recomputed_tokens: int
    budget_utilisation: float
    rejoined: int
    parked: int
    forced: int
    selector_s: float
    turns: dict
    moves: int                    # parks + rejoins (each on every stage's CPU)
    cpu_wait_frac: float          # stage time waiting for the scheduler's moves / (stages * makespan)
    steady: dict | None           # steady.Steady (tok_s for the whole machine), or None
    optimum: dict                 # core TurnOptimum at the run's settings, and `fraction`
    sim_wall_s: float

    @property
    def steady_tok_s(self) -> float | None:
        return self.steady["tok_s"] if self.steady else None

    @property
    def optimum_fraction(self) -> float:
        return self.optimum["fraction"]

    @property
    def ceiling_fraction(self) -> float:
        return self.streamed_tok_s / self.ceiling_tok_s if self.ceiling_tok_s > 0 else 0.0

    def line(self) -> str:
        par = f"tp{self.tp}" + (f" pp{self.pp} M{self.micro_batches}" if self.pp > 1 else "")
        s = (f"{self.policy:16s} {self.gpu:8s} {self.model:12s} {par:13s}"
             f" host {self.host_gb:5.0f}GB  {self.tok_s:8.1f} tok/s  rows/turn {self.mean_rows:6.1f}"
             f"  L {self.mean_context:5.0f}")
        if self.steady:
            s += (f"  steady {self.steady['tok_s']:8.1f} tok/s, {self.steady['ctx_per_turn']:7.0f} ctx/turn"
                  f" = {self.optimum_fraction:4.0%} of X* {self.optimum['context']:.0f}"
                  f" ({self.optimum['bound']}), link {self.steady['link_util']:4.0%}")
        if self.cpu_wait_frac > 0.001:
            s += f"  cpu wait {self.cpu_wait_frac:4.1%}"
        if self.policy in OFFLOAD:
            s += (f"  streamed {self.streamed_tok_s:7.1f} tok/s = {self.ceiling_fraction:4.0%} of "
                  f"dT_max {self.ceiling_tok_s:7.1f}  link {self.link_util:4.0%}"
                  f"  budget {self.budget_utilisation:4.0%}  stall {self.stall_frac:4.1%}")
        elif self.retractions:
            s += f"  retracted {self.retractions} (recomputed {self.recomputed_tokens} tok)"
        return s

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ceiling_fraction"] = self.ceiling_fraction
        d["optimum_fraction"] = self.optimum_fraction
        return d


def layout_for(cfg: SimConfig) -> Layout:
    return layout(cfg.model, cfg.machine, cfg.tp_size, cfg.stages)


def replica_workload(cfg: SimConfig) -> Workload:
    w = cfg.workload
    if cfg.replicas == 1:
        return w
    return Workload(w.name, w.prompt[::cfg.replicas], w.output[::cfg.replicas])


def host_kv_tokens(cfg: SimConfig) -> int:
    """Whole-model KV tokens one replica's share of host memory holds."""
    return int(cfg.machine.host_mem_gb / cfg.replicas * 1e9 // cfg.model.kv_bytes_per_token)


def build(cfg: SimConfig, layout: Layout | None = None
          ) -> tuple[Engine, PipeMaxScheduler | RecomputeScheduler | TDPipeScheduler]:
    """The engine and scheduler of one replica, not run yet (tests inspect them after).
    `layout` replaces the one the model and machine imply (a fitted one: validate_sim)."""
    layout = layout or layout_for(cfg)
    work = replica_workload(cfg)
    sched: PipeMaxScheduler | RecomputeScheduler | TDPipeScheduler
    if cfg.policy in OFFLOAD:
        sched = PipeMaxScheduler(
            layout, cfg.machine, work, cfg.M, OFFLOAD[cfg.policy], cfg.chunk_tokens, cfg.cap,
            cfg.budget_margin, host_kv_tokens(cfg), cfg.max_candidates)
    elif cfg.policy == "td-pipe":
        sched = TDPipeScheduler(layout, work, cfg.M, cfg.cap)
    else:
        sched = RecomputeScheduler(layout, work, cfg.M, cfg.chunk_tokens, cfg.cap)
    return Engine(layout, cfg.machine, sched, cfg.M, record=cfg.record,
                  gpus_per_stage=cfg.tp_size), sched


def simulate(cfg: SimConfig, layout: Layout | None = None) -> SimResult:
    t0 = perf_counter()
    eng, sched = build(cfg, layout)
    st = eng.run()
    met = sched.metrics()
    span = max(st.makespan_s, 1e-12)
    reps = cfg.replicas
    mean_ctx = st.decode_ctx / st.decode_rows if st.decode_rows else 0.0
    ceiling = pcie_ceiling(cfg.machine.num_gpus, cfg.machine.pcie_bytes_per_s(), mean_ctx,
                           cfg.model.kv_bytes_per_token) if cfg.policy != "tp" else 0.0
    streamed = met.get("rejoined", 0)
    n_links = len(st.h2d_busy_s)
    n_stages = len(st.stage_stall_s)
    steady = steady_state(st.series, st.h2d_intervals, eng.sched.book.n, st.makespan_s)
    lay = eng.layout
    per_turn = st.decode_ctx / st.turns["decode"] if st.turns["decode"] else 0.0
    ctx_turn = steady.ctx_per_turn if steady else per_turn
    opt = capacity_optimum(cfg, lay, steady.mean_context if steady else mean_ctx)
    optimum = dict(opt._asdict(), fraction=ctx_turn / opt.context if opt.context > 0 else 0.0)
    steady_d = None
    if steady:
        steady_d = steady._asdict()
        steady_d["tok_s"] *= reps
    return SimResult(
        config=cfg.describe(), policy=cfg.policy, gpu=cfg.machine.profile.name,
        model=cfg.model.name, workload=cfg.workload.name, requests=cfg.workload.n,
        tp=cfg.tp_size, pp=cfg.stages, micro_batches=cfg.M, replicas=reps, host_gb=cfg.machine.host_mem_gb,
        row_cap=cfg.row_cap, makespan_s=st.makespan_s, output_tokens=st.tokens_out * reps,
        tok_s=st.tokens_out * reps / span,
        mean_rows=st.decode_rows / st.turns["decode"] if st.turns["decode"] else 0.0,
        max_rows=st.max_rows,
        mean_context=mean_ctx, capacity_tokens=st.capacity_tokens,
        ledger_peak=max(st.ledger_peak), ledger_violations=st.ledger_violations,
        h2d_gb=st.h2d_bytes * reps / 1e9, d2h_gb=st.d2h_bytes * reps / 1e9,
        link_util=sum(st.h2d_busy_s) / (n_links * span),
        stall_frac=sum(st.stage_stall_s) / (len(st.stage_stall_s) * span),
        streamed_tok_s=streamed * reps / span, ceiling_tok_s=ceiling,
        host_peak_tokens=met.get("max_host_tokens", 0),
        retractions=met.get("retractions", 0) * reps,
        recomputed_tokens=met.get("recomputed_tokens", 0) * reps,
        budget_utilisation=met.get("budget_utilisation", 0.0), rejoined=streamed * reps,
        parked=met.get("parked", 0) * reps, forced=met.get("forced", 0) * reps,
        selector_s=met.get("selector_s", 0.0), turns=st.turns, moves=st.moves * reps,
        cpu_wait_frac=sum(st.cpu_wait_s) / (n_stages * span), steady=steady_d, optimum=optimum,
        sim_wall_s=perf_counter() - t0)


def capacity_optimum(cfg: SimConfig, lay: Layout, mean_context: float) -> TurnOptimum:
    """X* (core/capacity.py) of this run's pipeline: the binding stage's device tokens, the
    link's tokens a second on its stage with the largest k_s, the slowest stage's simulated
    step, the run's M, row cap and budget margin; one token of growth a row."""
    rate = cfg.machine.policy_transfer_model().h2d_bytes_per_s / max(lay.kv_bytes)

    def step(rows: float, ctx: float) -> float:
        r, c = max(1, round(rows)), round(ctx)
        return max(s.decode_time(r, c) for s in lay.stages)

    return turn_optimum(lay.capacity_tokens, cfg.M, max(mean_context, 1.0), rate, step,
                        row_cap=cfg.row_cap or float("inf"), margin=cfg.budget_margin,
                        move_price=cfg.machine.move_price)
