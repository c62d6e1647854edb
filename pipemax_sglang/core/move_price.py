"""What KV moves cost the scheduler: a price per turn that moves, plus one per moved request.

    seconds(moves) = turn_s + move_s * moves       (0 for a turn that moves nothing)

A turn's parks are one batched copy to host, its prefetch one batched copy back, its rejoins
one rebuilt decode batch merged into the running one: each a fixed piece of scheduler work
(the copy's submission, SGLang's batch build) whatever its size, plus the tree and pool work
of each request. A single price per move (the run's average) makes a move look as dear as
the batch sizes it happened to be measured at: on our 2-core CPU hosts a move cost 300 us in
steps of 8 and 90-130 us in steps of 32 (benchmarks/bench_moves.py), so a decider pricing
a stream of 60 rows a turn from the first would refuse what the second makes cheap.

`MovePriceFit` fits (turn_s, move_s) from (moves, seconds) per turn that moved: the robust
non-negative fit the step model uses (core/fitting.py), anchored where the samples do not
decide (a run whose turns all move about as many requests) to the measured shape
TURN_SHARE_MOVES: the turn's fixed price in moves, scaled to the run's own median turn.
The live stage 0 feeds it and shows the decider its price (TurnView.move_s, .move_turn_s);
the simulator charges its engine's CPU timeline with the same MovePrice (sim/machine.py).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .fitting import robust_nnls

# The fixed price of a turn that moves, in moves: fitted over benchmarks/bench_moves.py's
# points on our 2-core CPU hosts (1-64 requests a step; docs/design.md, "What a move costs").
# Used only as the fit's anchor where a run's own turns do not spread enough to separate the
# two prices.
TURN_SHARE_MOVES = 80.0
MOVES_TO_PRICE = 32      # parks and rejoins timed before their price steers the decider


@dataclass(frozen=True)
class MovePrice:
    """turn_s: a turn's scheduler seconds for moving at all; move_s: each park or rejoin's."""

    turn_s: float
    move_s: float

    def __post_init__(self) -> None:
        for name in ("turn_s", "move_s"):
            v = getattr(self, name)
            if not (v >= 0.0 and math.isfinite(v)):
                raise ValueError(f"MovePrice.{name} must be finite and >= 0, got {v!r}")

    def seconds(self, moves: float) -> float:
        """Scheduler seconds of a turn with `moves` parks and rejoins."""
        return self.turn_s + self.move_s * moves if moves > 0 else 0.0

    @classmethod
    def per_move(cls, seconds: float) -> "MovePrice":
        """A flat price (no turn share): what a single average per move says."""
        return cls(0.0, seconds)


class MovePriceFit:
    """Online fit of a MovePrice from turns that moved (a sliding window of `window`).

    Contract: None until `min_moves` moves were observed; never a negative price; equal
    sample sequences give equal prices; the fit at the run's mean batch predicts about the
    run's mean turn (both prices scale with what was measured, only the split between them
    comes from the anchor where the samples do not decide it). Refitted once `refit_every`
    turns arrived since the last fit, not at every turn: a fit of a full window costs the
    scheduler ~1 ms on our CPU hosts, and a window of hundreds of turns barely moves in a
    few (as the step model, cost_model.StepCostModel)."""

    def __init__(self, window: int = 256, min_moves: int = MOVES_TO_PRICE,
                 turn_share_moves: float = TURN_SHARE_MOVES, refit_every: int = 32) -> None:
        if window < 1 or min_moves < 1 or turn_share_moves < 0 or refit_every < 1:
            raise ValueError("need window, min_moves, refit_every >= 1 and turn_share_moves >= 0")
        self.min_moves = min_moves
        self.shape = turn_share_moves
        self.refit_every = refit_every
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self._moves = 0
        self._seen = 0
        self._fit: MovePrice | None = None
        self._fit_seen = 0

    def observe(self, moves: int, seconds: float) -> None:
        """One turn's moves and the scheduler seconds they took. A turn without moves, or a
        timer that failed, is not a sample."""
        if moves <= 0 or not math.isfinite(seconds) or seconds < 0.0:
            return
        self._samples.append((int(moves), float(seconds)))
        self._moves += int(moves)
        self._seen += 1

    def current(self) -> MovePrice | None:
        if self._moves < self.min_moves or not self._samples:
            return None
        if self._fit is None or self._seen - self._fit_seen >= self.refit_every:
            self._fit = fit_move_price(tuple(self._samples), self.shape)
            self._fit_seen = self._seen
        return self._fit


# How strongly the anchor holds the split where the samples barely decide it (a ridge
# relative to the samples' weight, core/fitting.py): turns of 30-33 moves with 10% noise
# say little about how the price splits, and a free fit there swings to either extreme;
# turns of 8 and 64 moves outweigh it.
ANCHOR_STRENGTH = 1e-2


def fit_move_price(samples: tuple[tuple[int, float], ...],
                   turn_share_moves: float = TURN_SHARE_MOVES) -> MovePrice:
    """Robust non-negative fit of (turn_s, move_s) to (moves, seconds) samples, anchored to
    the price of shape `turn_share_moves` through the samples' medians (an outlier does not
    move the anchor; module note)."""
    if not samples:
        raise ValueError("fit_move_price needs at least one (moves, seconds) sample")
    arr = np.array(samples, dtype=np.float64).reshape(-1, 2)
    mid_x, mid_y = float(np.median(arr[:, 0])), float(np.median(arr[:, 1]))
    p0 = mid_y / (turn_share_moves + mid_x)
    x = np.column_stack([np.ones(len(arr)), arr[:, 0]])
    turn, per = robust_nnls(x, arr[:, 1], np.array([turn_share_moves * p0, p0]), ANCHOR_STRENGTH)
    return MovePrice(max(float(turn), 0.0), max(float(per), 0.0))


__all__ = ["MOVES_TO_PRICE", "TURN_SHARE_MOVES", "MovePrice", "MovePriceFit", "fit_move_price"]
