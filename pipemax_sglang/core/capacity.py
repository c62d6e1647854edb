"""The most context a micro-batch can hold a turn: docs/design.md section 4's capacity arithmetic,
solved as a fixed point. Pure: the decider can aim at it, the simulator measures against it.

On a stage with D device KV tokens and M micro-batches in flight, a micro-batch's turn holds
X context tokens: R of them resident (they stay on the device across turns) and C streamed
(loaded from host for this turn, during the slot before it). While one micro-batch computes,
the next one's stream is loading, so the device holds every micro-batch's residents and two
streams:

    M R + 2 C <= D'          D' = (D - reserve) / (1 + g / L): the reserve kept free, and g
                             new tokens a row each step (SGLang: 1) for rows of L tokens
    X = R + C  =>  X <= D'/M + (1 - 2/M) C

and C is what the link carries in one slot, the turn of the micro-batch ahead, which holds
X tokens too:

    C(X) = min(X, (1 - margin) * link_tokens_per_s * t(X / L, X))

A bigger batch makes a longer turn and so a bigger C: X* is the largest X with
X <= D'/M + (1 - 2/M) C(X), and rows X / L <= row_cap. With C(X) = X (a link that brings a
whole turn in a slot) that is X = D'/2: everything streams, nothing stays. M <= 2 gains
nothing from streaming (X* = D'/M): the next micro-batch is always the one loading.

    stage   |  m-1 computes  |  m computes   |
    link    | m's C loading  | m+1's C loads |
    device  | M R (residents) + C(m) + C(m+1) <= D'

Not in it: the scheduler's CPU time for moves (2 a streamed row, a park and a rejoin).
Where it outlasts the GPU's turn the optimum is not reachable at that price; `cpu_s` says how
much a turn at X* would take, to set beside `turn_s`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from .cost_model import StepCost
from .move_price import MovePrice

StepFn = Callable[[float, float], float]       # (rows, context tokens) -> seconds


class TurnOptimum(NamedTuple):
    context: float      # X*: context tokens a micro-batch holds a turn
    rows: float         # X* / L
    resident: float     # R*: of them resident
    streamed: float     # C*: of them loaded from host for the turn
    turn_s: float       # t(X*): the turn's step
    cpu_s: float        # scheduler time of the turn's moves at X* (2 C* / L moves, at
                        # `move_price`; 0 without one)
    bound: str          # what binds: "link", "row cap", "device" (all streamed), "no stream"


def turn_optimum(device_tokens: float, micro_batches: int, mean_context: float,
                 link_tokens_per_s: float, step: StepCost | StepFn, *, reserve_tokens: float = 0.0,
                 row_cap: float = float("inf"), margin: float = 0.0, growth_per_row: float = 1.0,
                 move_price: MovePrice | None = None) -> TurnOptimum:
    """X* for one stage (module note). `step(rows, context)` is the turn's time on the
    binding stage; `link_tokens_per_s` its H2D rate in tokens (bytes/s over k_s)."""
    if micro_batches < 1 or mean_context <= 0 or link_tokens_per_s < 0 or not 0 <= margin < 1:
        raise ValueError("need M >= 1, mean_context > 0, link rate >= 0, 0 <= margin < 1")
    t = step.predict if isinstance(step, StepCost) else step
    L, M = float(mean_context), int(micro_batches)
    d = max(0.0, device_tokens - reserve_tokens) / (1.0 + growth_per_row / L)
    cap = row_cap * L

    def stream(x: float) -> float:
        return min(x, (1.0 - margin) * link_tokens_per_s * t(x / L, x))

    def result(x: float, bound: str) -> TurnOptimum:
        c = stream(x) if M > 2 else 0.0
        r = max(0.0, x - c)
        cpu = move_price.seconds(2.0 * c / L) if move_price is not None else 0.0
        return TurnOptimum(x, x / L, r, c, t(x / L, x) if x > 0 else 0.0, cpu, bound)

    if d <= 0:
        return result(0.0, "device")
    if M <= 2:
        x = d / M
        return result(min(x, cap), "row cap" if cap < x else "no stream")
    k = 1.0 - 2.0 / M

    def feasible(x: float) -> bool:
        return x <= d / M + k * stream(x) + 1e-9

    hi = min(cap, d / 2.0)
    if feasible(hi):
        return result(hi, "row cap" if cap < d / 2.0 else "device")
    # the largest feasible X below hi: scan down a grid, then bisect the crossing
    n = 256
    prev = hi
    for i in range(n - 1, -1, -1):
        x = hi * i / n
        if feasible(x):
            lo, up = x, prev
            for _ in range(60):
                mid = 0.5 * (lo + up)
                if feasible(mid):
                    lo = mid
                else:
                    up = mid
            return result(lo, "link")
        prev = x
    return result(0.0, "link")
