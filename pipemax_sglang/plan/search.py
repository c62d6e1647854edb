"""What should a user run? PipeMax's settings, and the baselines a user would pick instead,
each at its best setting, all scored by the simulator on the same seeded workload.

Families (a replica is tp x pp GPUs; the rest of the server runs replicas, data parallel):

    tp        stock SGLang, tensor parallel: tp = G, G/2, G/4 (one stage, M = 1)
    tp4xpp2   stock SGLang, a hybrid: tp 4 x pp 2, M in {P, 1.5P}
    tp2xpp4   stock SGLang, a hybrid: tp 2 x pp 4, M in {P, 1.5P}
    pp        stock SGLang, pipeline parallel: pp = G, G/2, M in {P, 1.5P}
    td-pipe   TD-Pipe's phases and work stealing on a pipeline, no offload (sim/tdpipe.py):
              pp = G, G/2, M = P
    pipemax   PipeMax, a staged search (each stage keeps the best so far):
                1. layout        tp 1 x pp G, G/2, G/4, tp 2 x pp G/2, G/4 and tp 4 x
                                 pp G/4; M = P
                2. micro-batches M in {P + 1, 1.25P, 1.5P, 2P}: more in flight against
                                 more weight reads a cycle (docs/design.md: M R + 2 C <= D)
                3. budget margin {0.05, 0.2}: budget used against stalls when slots run long
                4. row cap       1.25 x the mean rows of a turn

`quick` keeps the first setting of each family (tp G; hybrids, pp and TD-Pipe at M = P;
PipeMax at tp 1 x pp G, tp 2 x pp G/2 and tp 4 x pp G/4, M = P): a projection in minutes, not hours. A simulated PipeMax
decision costs milliseconds and a run has one per turn (the drain of a batch alone is
thousands: its longest request takes a cycle of M turns a token), so PipeMax's runs are
most of the time.

Host KV: the host memory less an OS reserve (`os_reserve_gb`, 8 GB by default). Whole-run
throughput (output tokens over the makespan of the workload) ranks the candidates: it is
what a user's offline job gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

from pipemax_sglang.sim import Machine, ModelShape, SimConfig, SimResult, simulate
from pipemax_sglang.sim.costs import DoesNotFit
from pipemax_sglang.sim.workload import Workload

BASELINES = ("tp", "tp4xpp2", "tp2xpp4", "pp", "td-pipe")
FAMILIES = BASELINES + ("pipemax",)


class Candidate(NamedTuple):
    family: str
    stage: str              # the search step that tried it
    tp: int
    pp: int
    micro_batches: int
    margin: float
    row_cap: int | None
    result: SimResult

    @property
    def tok_s(self) -> float:
        return self.result.tok_s

    def setting(self) -> str:
        s = f"tp{self.tp}" if self.pp == 1 else f"tp{self.tp} pp{self.pp} M{self.micro_batches}"
        if self.result.replicas > 1:
            s += f" dp{self.result.replicas}"
        if self.family == "pipemax":
            s += f" margin {self.margin:g}" + (f" cap {self.row_cap}" if self.row_cap else "")
        return s


@dataclass(frozen=True)
class Plan:
    best: Candidate                     # PipeMax's best setting
    baseline: SimResult | None          # stock SGLang, pp without offload, at PipeMax's layout
    tried: tuple[Candidate, ...]
    host_kv_tokens: int                 # whole-model KV tokens the host keeps
    host_kv_gb_per_stage: float
    row_cap: int                        # what to pass as --pp-max-micro-batch-size
    baselines: dict[str, Candidate] = field(default_factory=dict)   # each family's best

    @property
    def best_baseline(self) -> Candidate | None:
        return max(self.baselines.values(), key=lambda c: c.tok_s, default=None)

    @property
    def winner(self) -> Candidate:
        bb = self.best_baseline
        return self.best if bb is None or self.best.tok_s >= bb.tok_s else bb

    def summary(self) -> str:
        b, bb = self.best, self.best_baseline
        line = f"PipeMax ({b.setting()}) {b.tok_s:.1f} tok/s"
        if bb is not None:
            w = self.winner
            verdict = "PipeMax wins" if w is b else f"{w.family} wins"
            line += (f"; best baseline {bb.family} ({bb.setting()}) {bb.tok_s:.1f} tok/s: "
                     f"{verdict}, PipeMax {b.tok_s / bb.tok_s:.2f}x it")
        pp = self.baselines.get("pp")
        if pp is not None:
            line += f"; {b.tok_s / pp.tok_s:.2f}x stock pp ({pp.setting()})"
        return line


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan(model: ModelShape, machine: Machine, work: Workload, os_reserve_gb: float = 8.0,
         log: Callable[[str], None] = lambda s: None, baselines: bool = True,
         quick: bool = False) -> Plan:
    host_gb = max(0.0, machine.host_mem_gb - os_reserve_gb)
    mach = replace(machine, host_mem_gb=host_gb)
    G = machine.num_gpus
    tried: list[Candidate] = []

    def run(family: str, stage: str, tp: int, pp: int, m: int, margin: float = 0.1,
            cap: int | None = None) -> Candidate | None:
        if G % (tp * pp):
            return None
        policy = family if family in ("pipemax", "td-pipe") else ("tp" if pp == 1 else "pp")
        cfg = SimConfig(model, mach, work, policy=policy, tp=tp, pp=pp,
                        micro_batches=m, row_cap=cap, budget_margin=margin)
        try:
            r = simulate(cfg)
        except DoesNotFit:
            return None
        c = Candidate(family, stage, tp, pp, m, margin, cap, r)
        tried.append(c)
        log(f"{family:8s} {stage:7s} {c.setting():28s} {r.tok_s:8.1f} tok/s"
            + (f"  steady {r.steady_tok_s:8.1f}" if r.steady else ""))
        return c

    def better(a: Candidate | None, b: Candidate | None) -> Candidate | None:
        if a is None:
            return b
        return b if b is not None and b.tok_s > a.tok_s else a

    # ---- PipeMax ------------------------------------------------------------------
    # tp 4 x pp G/4 as well: where a hybrid at M = P = 2 is the best stock setting,
    # PipeMax there runs as stock (at M <= 2 nothing streams) and so never loses to it
    layouts = [(t, G // t) for t in (1, 2, 4) if G % t == 0 and G // t >= 2] if quick else (
        [(1, p) for p in sorted(_divisors(G), reverse=True) if 2 <= p and p >= G // 4]
        + [(2, p) for p in sorted(_divisors(G // 2), reverse=True) if 2 <= p and p >= G // 8]
        + ([(4, G // 4)] if G % 4 == 0 and G // 4 >= 2 else []))
    best = None
    for tp, pp in layouts:
        best = better(best, run("pipemax", "layout", tp, pp, pp))
    if best is None:
        raise DoesNotFit(f"{model.name} fits no pipeline on {G} {machine.profile.name}")
    tp, pp = best.tp, best.pp
    ms = [] if quick else [pp + 1, pp + max(1, pp // 4), pp + max(1, pp // 2), 2 * pp]
    done = {c.micro_batches for c in tried if (c.tp, c.pp) == (tp, pp)}
    for m in sorted(set(ms) - done):
        best = better(best, run("pipemax", "M", tp, pp, m))
    if not quick:
        for margin in (0.05, 0.2):
            best = better(best, run("pipemax", "margin", tp, pp, best.micro_batches, margin))
        cap = max(1, math.ceil(1.25 * best.result.mean_rows))
        best = better(best, run("pipemax", "cap", tp, pp, best.micro_batches, best.margin, cap))

    # ---- baselines, each at its best ------------------------------------------------
    fam: dict[str, Candidate] = {}
    if baselines:
        spaces = {
            "tp": [(t, 1, 1) for t in (G, G // 2, G // 4) if t >= 2],
            "tp4xpp2": [(4, 2, 2), (4, 2, 3)],
            "tp2xpp4": [(2, 4, 4), (2, 4, 6)],
            "pp": [(1, p, m) for p in (G, G // 2) if p >= 2 for m in (p, p + max(1, p // 2))],
            "td-pipe": [(1, p, p) for p in (G, G // 2) if p >= 2],
        }
        for name, space in spaces.items():
            b = None
            for t, p, m in (space[:1] if quick else space):
                b = better(b, run(name, "base", t, p, m))
            if b is not None:
                fam[name] = b
    base = fam.get("pp").result if "pp" in fam and (fam["pp"].tp, fam["pp"].pp) == (1, pp) else None
    if base is None and tp == 1:
        try:
            base = simulate(SimConfig(model, mach, work, policy="pp", pp=pp))
        except DoesNotFit:
            base = None
    host_tokens = int(host_gb / best.result.replicas * 1e9 // model.kv_bytes_per_token)
    per_stage = host_tokens * max(model.stage_kv(best.pp, best.tp)) / 1e9
    row_cap = best.row_cap if best.row_cap is not None else max(1, best.result.max_rows)
    return Plan(best, base, tuple(tried), host_tokens, per_stage, row_cap, fam)
