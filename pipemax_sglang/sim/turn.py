"""A turn: one pass of one micro-batch through the pipeline, as a scheduler decided it.

Turns are numbered k = 0, 1, 2, ... in the order stage 0 runs them; micro-batch m owns
turns m, m + M, m + 2M, ... The decision for turn k is taken when turn k - M (the same
micro-batch's previous turn) leaves stage 0, exactly where docs/core.md takes it:

    stage 0  ..| k-M |k-M+1| ... | k-1 |  k  |..
                     ^ decide(k): park, rejoin, admit; commit the prefetch
    stage s  ......| k-M |  ...  | k-1 |  k  |..
                         ^ apply(s, k): once k-M's write-through (D2H) has landed on s,
                           free what the decision released, reserve what it kept, and
                           queue k's ring allocation (+ its H2D prefetch) on s's link

`Effects` are those ledger changes: identical token counts on every stage (every stage
holds the same requests), applied at each stage's own time. Everything a turn needs
before it may start on stage s: decided, applied on s, its ring tokens allocated and its
prefetch landed on s, the previous stage done with it (s > 0), and the outputs of its
members' previous turns back from the last stage (s = 0).
"""

from __future__ import annotations

from typing import NamedTuple

DECODE, PREFILL, EMPTY = "decode", "prefill", "empty"


class Effects(NamedTuple):
    """Ledger changes on every stage at apply(s, k) (tokens), in this order: the previous
    turn's ring entry is released except `keep` tokens, which become residents; then
    `free` resident tokens are released and `reserve` are reserved."""

    free: int = 0        # resident tokens released: finished, parked, retracted
    keep: int = 0        # of the previous turn's ring entry: tokens that stay, as residents
    reserve: int = 0     # resident tokens reserved for this turn (recompute policies only:
                         # the offload policies put a turn's new tokens in its ring entry)


class Turn:
    """One decided turn. `times[s]`: its step time on stage s. `reqs`: the requests that
    compute in it (each makes one output token at the last stage). `ring`: tokens this turn
    brings onto the device for itself only (rejoins + their new tokens, or an offload
    prefill's prompts), of which `h2d` are loaded from host; freed when it leaves.
    `release[s]`: the scheduler's as-late-as-possible start for that on stage s.
    `moves`: parks and rejoins its decision made (each costs every stage's scheduler CPU
    time before this turn can launch: engine.py)."""

    __slots__ = ("k", "mb", "kind", "reqs", "rows", "sum_ctx", "tokens", "times", "ring",
                 "h2d", "d2h", "effects", "deps", "hop", "arrived", "applied", "landed",
                 "release", "moves", "decided_at", "arrived_at", "launch_at", "pressed",
                 "finished")

    def __init__(self, k: int, mb: int, kind: str, reqs: tuple[int, ...], times: tuple[float, ...],
                 *, rows: int = 0, sum_ctx: int = 0, tokens: int = 0, ring: int = 0,
                 h2d: int = 0, d2h: int = 0, effects: Effects = Effects(), deps: int = -1,
                 hop: float = 0.0, release: tuple[float, ...] | None = None) -> None:
        self.k, self.mb, self.kind, self.reqs, self.times = k, mb, kind, reqs, times
        self.rows, self.sum_ctx, self.tokens = rows, sum_ctx, tokens
        self.ring, self.h2d, self.d2h = ring, h2d, d2h
        self.effects, self.deps, self.hop = effects, deps, hop
        p = len(times)
        self.arrived = [False] * p      # reached stage s (stage 0: always, once decided)
        self.applied = [False] * p      # its decision's Effects applied on stage s
        self.landed = [False] * p       # ring allocated and prefetch landed on stage s
        self.release = release          # per stage: start the ring item no earlier (ALAP)
        self.moves = 0                  # parks + rejoins of its decision
        # the engine's books: when it was decided, reached each stage, was launched there
        self.decided_at = 0.0
        self.arrived_at = [0.0] * p
        self.launch_at: list[float | None] = [None] * p
        self.pressed = False            # requests waiting or parked when it was decided
        self.finished = 0               # requests finished when it was decided

    def __repr__(self) -> str:
        return f"Turn(k={self.k}, mb={self.mb}, {self.kind}, rows={self.rows}, ring={self.ring})"
