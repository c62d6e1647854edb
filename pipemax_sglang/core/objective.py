"""What a plan is worth and whether it is allowed: defined once, used by every selector.

Plan = (rejoin set S, park set P) for target micro-batch m with residents R. After it,
m holds K = (R - P) + S. With t(.) the step-cost model (0 for an empty micro-batch):

  Hard constraints (`feasible`)
    bytes    k * |host tokens of S, each shared radix node once|    <= budget_bytes
    device   host tokens of S + |K| (one new token per member)      <= device_tokens_free
                                                                       + freeable tokens of P
    rows     |K|                                                    <= row_cap
    ids      each request at most once; S among candidates, P among residents

  Objective (`objective`, maximised), in units of "rows of decode work":

    J(S, P) = sum_{r in S} v_r  -  |P|  +  eps * bytes / budget
              - lambda * rho * (B(t(K)) - B(t(R)))

    v_r = 1 + rounds_waited_r / A       one row of decode work per step, aged; a resident
                                        parked gives up one row (value 1)
    B(t) = max(0, P_st * max(t_max_o, t) - (T_o + t))
                                        pipeline bubble per cycle: with M micro-batches on
                                        P_st stages a cycle lasts about max(sum of all t,
                                        P_st * max t); B is the idle part. T_o, t_max_o: sum
                                        and max of the other micro-batches' t
    rho = (rows in flight) / (cycle before the decision)
                                        tokens per second the pipeline makes now, so
                                        rho * (bubble seconds) = tokens lost to idling
    eps * bytes / budget                a full budget is worth eps (0.05) rows: the link is
                                        a renewable resource, use it, but never trade a
                                        row, or one round of ageing (eps < 1/A = 1/16), for it

Why not penalise |t(m) - mean(other t)| (docs/design.md section 4's "t(m) near the mean")? That
penalty has no natural unit, so lambda becomes a tuning knob, and it freezes growth: once
all micro-batches are equal no one may grow past the mean, however much budget and memory
are free. What balance costs in a pipeline is bubble time, and only once m is the slowest
micro-batch by enough that P_st * t(m) exceeds everyone's work: below that a bigger m is
pure gain (weight reads amortised over more rows), above it each second of t(m) idles
P_st - 1 stages. Pricing that idle time at the pipeline's own token rate makes lambda = 1
the exact first-order throughput trade-off, makes filling a micro-batch that is SHORTER
than the slowest one free (it shrinks the bubble), and keeps J linear in S except for one
convex kink, so a density greedy is close to exact. The per-row and per-token costs that
every request pays sooner or later (b, c * L) are not charged: deferring them gains
nothing in an offline run; only idling is waste.

The ageing bound lives in frame.py (forced rejoins); this file has no policy, only the
definitions. Everything is a pure function of the SelectorInput.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .selector_types import SelectorInput

_MIN_CYCLE_S = 1e-9     # shorter cycles are "no step measured": keeps rho finite


class PipelineModel(NamedTuple):
    """The decision's constants (see the module note)."""

    a: float
    b: float
    c: float
    stages: int
    others_sum: float      # T_o
    others_max: float      # t_max_o
    rho: float             # rows per second of the whole pipeline before the decision
    ref_bubble: float      # B(t(R)): the bubble if nothing changes
    lam: float
    eps: float
    kv_bytes_per_token: int
    budget_bytes: int


class PlanTotals(NamedTuple):
    value: float           # sum of v over S, minus |P|
    host_tokens: int       # unique host tokens of S
    rows: int              # |K|
    sum_context: int       # sum of context over K
    device_tokens: int     # host_tokens + rows
    device_cap: int        # device_tokens_free + freeable tokens of P


def candidate_value(rounds_waited: np.ndarray | int, force_after_rounds: int) -> np.ndarray | float:
    """v = 1 + rounds_waited / A."""
    return 1.0 + np.asarray(rounds_waited, dtype=np.float64) / force_after_rounds


def pipeline_model(inp: SelectorInput) -> PipelineModel:
    cost = inp.cost
    rows_r = len(inp.residents)
    ctx_r = sum(r.context_len for r in inp.residents)
    t_r = cost.predict(rows_r, ctx_r)
    t_sum = float(sum(inp.other_step_times))
    t_max = float(max(inp.other_step_times, default=0.0))
    p = inp.num_stages
    cycle = max(t_sum + t_r, p * max(t_max, t_r))
    in_flight = rows_r + sum(inp.other_rows)
    if in_flight > 0 and cycle > _MIN_CYCLE_S:
        rho = in_flight / cycle
    else:
        # Empty pipeline: price bubble time at what a one-row micro-batch would make.
        mean_ctx = (sum(c.context_len for c in inp.candidates) / len(inp.candidates)
                    if inp.candidates else 1.0)
        rho = 1.0 / max(cost.a + cost.b + cost.c * mean_ctx, _MIN_CYCLE_S)
    ref = max(0.0, p * max(t_max, t_r) - (t_sum + t_r))
    return PipelineModel(cost.a, cost.b, cost.c, p, t_sum, t_max, rho, ref,
                         inp.params.balance_weight, inp.params.utilisation_weight,
                         inp.kv_bytes_per_token, inp.budget_bytes)


def step_time(m: PipelineModel, rows, sum_context):
    """t = a + b*rows + c*sum_context, 0 for an empty micro-batch. Scalars or arrays."""
    if isinstance(rows, np.ndarray) or isinstance(sum_context, np.ndarray):
        t = m.a + m.b * rows + m.c * sum_context
        return np.where(rows > 0, t, 0.0)
    return m.a + m.b * rows + m.c * sum_context if rows > 0 else 0.0


def bubble(m: PipelineModel, t):
    """B(t): idle stage time per cycle when m's step takes t (see the module note)."""
    if isinstance(t, np.ndarray):
        return np.maximum(0.0, m.stages * np.maximum(m.others_max, t) - (m.others_sum + t))
    return max(0.0, m.stages * max(m.others_max, t) - (m.others_sum + t))


def score(m: PipelineModel, value, host_tokens, rows, sum_context):
    """J from plan totals: the one definition every selector scores with. Takes scalars
    (plain float arithmetic, fast) or numpy arrays (broadcast, vectorised)."""
    util_per_token = m.kv_bytes_per_token / m.budget_bytes if m.budget_bytes > 0 else 0.0
    j = value + (m.eps * util_per_token) * host_tokens
    if m.lam > 0.0 and m.stages > 1:
        # With one stage B(t) = max(0, max(t_o, t) - T_o - t) = 0: no bubble term at all.
        j = j - (m.lam * m.rho) * (bubble(m, step_time(m, rows, sum_context)) - m.ref_bubble)
    return j


def plan_totals(inp: SelectorInput, rejoin: tuple[str, ...],
                park: tuple[str, ...] = ()) -> PlanTotals:
    """Totals of (S, P) computed from scratch, request by request (the reference; the
    selectors compute the same vectorised). Raises KeyError for an unknown id."""
    cands = {c.req_id: c for c in inp.candidates}
    res = {r.req_id: r for r in inp.residents}
    a = inp.params.force_after_rounds
    value = float(sum(candidate_value(cands[i].rounds_waited, a) for i in rejoin)) - len(park)
    nodes: dict[int, int] = {}
    private = 0
    for i in rejoin:
        c = cands[i]
        private += c.host_tokens - sum(n.tokens for n in c.nodes)
        for n in c.nodes:
            nodes[n.node_id] = n.tokens
    host = private + sum(nodes.values())
    rows = len(inp.residents) - len(park) + len(rejoin)
    ctx = (sum(r.context_len for r in inp.residents) - sum(res[i].context_len for i in park)
           + sum(cands[i].context_len for i in rejoin))
    cap = inp.device_tokens_free + sum(res[i].freeable for i in park)
    return PlanTotals(value, host, rows, ctx, host + rows, cap)


def feasible(inp: SelectorInput, rejoin: tuple[str, ...], park: tuple[str, ...] = ()) -> bool:
    """Every hard constraint of the module note."""
    if len(set(rejoin)) != len(rejoin) or len(set(park)) != len(park):
        return False
    cand_ids = {c.req_id for c in inp.candidates}
    res_ids = {r.req_id for r in inp.residents}
    if not (set(rejoin) <= cand_ids and set(park) <= res_ids):
        return False
    t = plan_totals(inp, rejoin, park)
    return (inp.kv_bytes_per_token * t.host_tokens <= inp.budget_bytes
            and t.device_tokens <= t.device_cap
            and t.rows <= inp.row_cap)


def objective(inp: SelectorInput, rejoin: tuple[str, ...], park: tuple[str, ...] = ()) -> float:
    """J(S, P) of the module note (defined for infeasible plans too)."""
    t = plan_totals(inp, rejoin, park)
    return float(score(pipeline_model(inp), t.value, t.host_tokens, t.rows, t.sum_context))
