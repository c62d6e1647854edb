"""Step-time and transfer-time models.

Step time of a micro-batch on one stage (docs/design.md section 4):

    t(m) = a + b * rows + c * sum(context)      (0 when the micro-batch is empty: no step runs)

    a  the per-step fixed cost: the stage's weights are re-read once per micro-batch
    b  the per-row cost: GEMM work, sampling, bookkeeping
    c  the per-token cost: attention reads every context token's KV once

`StepCostModel` fits (a, b, c) online from measured steps: a sliding window of the last
`window` samples, a robust non-negative fit (core/fitting.py: Huber then Tukey IRLS, exact
NNLS, ridge towards the prior where the data do not decide). Until `min_samples` steps have
been seen it answers with its prior, usually `prior_step_cost(profile, ...)`. The fit is a
pure function of the window, so two models fed the same samples agree bit for bit.

Transfer time of n bytes over one direction of the host link: latency + n / bandwidth;
H2D and D2H are independent links (PCIe is full duplex).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .fitting import robust_nnls
from .hardware import HardwareProfile


@dataclass(frozen=True)
class StepCost:
    """t = a + b * rows + c * sum_context seconds; coefficients are never negative."""

    a: float
    b: float
    c: float

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            v = getattr(self, name)
            if not (v >= 0.0 and math.isfinite(v)):
                raise ValueError(f"StepCost.{name} must be finite and >= 0, got {v!r}")

    def predict(self, rows: int, sum_context: int) -> float:
        """Seconds for one step of `rows` requests whose contexts sum to `sum_context`.
        An empty micro-batch runs no step: 0 seconds, not `a`."""
        if rows <= 0:
            return 0.0
        return self.a + self.b * rows + self.c * sum_context


def prior_step_cost(profile: HardwareProfile, stage_weight_bytes: float, stage_params: float,
                    kv_bytes_per_token: float, overhead_s: float = 0.0) -> StepCost:
    """A roofline prior for one stage: weights read once per step (a), 2 FLOPs per parameter
    per row (b), every context token's KV read once (c). Decode is memory bound, so the
    linear sum over-estimates small steps slightly; the online fit replaces it."""
    hbm = profile.hbm_bytes_per_s
    return StepCost(a=overhead_s + stage_weight_bytes / hbm,
                    b=2.0 * stage_params / profile.flops,
                    c=kv_bytes_per_token / hbm)


class StepCostModel:
    """Online robust fit of StepCost from observed steps (one model per stage).

    Contract: `current()` never returns a negative coefficient; it returns `prior` until
    `min_samples` valid samples are in the window; equal sample sequences, asked at the
    same points, give equal fits (the fit is a function of the window when it was made).
    The fit is refreshed once `refit_every` samples arrived since the last one, not on
    every step: the scheduler asks at every turn, a robust fit of a full window costs
    ~1 ms on our CPU hosts (it was a fifth of a CPU stage's loop when refitted per step),
    and a window of hundreds of steps barely moves in a few.
    """

    def __init__(self, prior: StepCost, window: int = 256, min_samples: int = 16,
                 prior_strength: float = 1e-6, refit_every: int = 32) -> None:
        if window < 3 or min_samples < 3 or min_samples > window:
            raise ValueError("need 3 <= min_samples <= window")
        if refit_every < 1:
            raise ValueError("refit_every must be >= 1")
        self.refit_every = refit_every
        self.prior = prior
        self.window = window
        self.min_samples = min_samples
        self.prior_strength = prior_strength
        self._samples: deque[tuple[int, int, float]] = deque(maxlen=window)
        self._seen = 0
        self._fit: StepCost | None = None     # cache
        self._fit_seen = 0                    # samples_seen when _fit was computed

    @property
    def samples_seen(self) -> int:
        return self._seen

    def observe(self, rows: int, sum_context: int, seconds: float) -> None:
        """Record one measured step. Empty or non-finite steps are ignored (no step ran or
        the timer failed); negative inputs are a caller bug."""
        if rows < 0 or sum_context < 0:
            raise ValueError(f"negative rows/sum_context: {rows}, {sum_context}")
        if rows == 0 or not math.isfinite(seconds) or seconds < 0.0:
            return
        self._samples.append((int(rows), int(sum_context), float(seconds)))
        self._seen += 1

    def current(self) -> StepCost:
        if len(self._samples) < self.min_samples:
            return self.prior
        if self._fit is None or self._seen - self._fit_seen >= self.refit_every:
            self._fit = fit_step_cost(tuple(self._samples), self.prior, self.prior_strength)
            self._fit_seen = self._seen
        return self._fit


def fit_step_cost(samples: tuple[tuple[int, int, float], ...], prior: StepCost,
                  prior_strength: float = 1e-6) -> StepCost:
    """Robust non-negative fit of (a, b, c) to (rows, sum_context, seconds) samples."""
    arr = np.array(samples, dtype=np.float64).reshape(-1, 3)
    x = np.column_stack([np.ones(len(arr)), arr[:, 0], arr[:, 1]])
    a, b, c = robust_nnls(x, arr[:, 2], np.array([prior.a, prior.b, prior.c]), prior_strength)
    # robust_nnls keeps theta >= 0 exactly; max() only guards against -0.0.
    return StepCost(max(float(a), 0.0), max(float(b), 0.0), max(float(c), 0.0))


@dataclass(frozen=True)
class TransferModel:
    """Time on one direction of the host link: latency + n / bandwidth (n > 0)."""

    latency_s: float
    h2d_bytes_per_s: float
    d2h_bytes_per_s: float

    def __post_init__(self) -> None:
        if not (self.latency_s >= 0.0 and self.h2d_bytes_per_s > 0.0
                and self.d2h_bytes_per_s > 0.0):
            raise ValueError(f"invalid TransferModel {self}")

    @classmethod
    def from_profile(cls, profile: HardwareProfile) -> "TransferModel":
        return cls(profile.link_latency_s, profile.h2d_bytes_per_s, profile.d2h_bytes_per_s)

    def h2d_time(self, nbytes: int) -> float:
        return 0.0 if nbytes <= 0 else self.latency_s + nbytes / self.h2d_bytes_per_s

    def d2h_time(self, nbytes: int) -> float:
        return 0.0 if nbytes <= 0 else self.latency_s + nbytes / self.d2h_bytes_per_s

    def h2d_bytes_in(self, seconds: float) -> int:
        """Most bytes one H2D transfer can finish within `seconds` (inverse of h2d_time)."""
        usable = seconds - self.latency_s
        if usable <= 0.0:
            return 0
        return int(math.floor(usable * self.h2d_bytes_per_s))


# What it costs the scheduler to find and relock a parked request's prompt in the radix tree
# at its rejoin (one match of the prompt's key, one path of slots, one lock): measured with
# benchmarks/bench_moves.py at 64 requests of 512 prompt tokens on the 2-core CI hosts, the
# prefetch issue took ~100 us more per rejoin with the match than without.
PREFIX_MATCH_S = 100e-6


def prefix_reuse_min_tokens(link_bytes_per_s: float | None, kv_bytes_per_token: int,
                            match_s: float = PREFIX_MATCH_S) -> int | None:
    """The fewest prompt tokens worth relocking rather than loading: where the link would
    carry them in less time than the match costs the scheduler, loading is cheaper. None
    where there is no link to spare (host and device are one memory, as on CPU: a load is a
    copy on another thread, and the match only adds scheduler time)."""
    if not link_bytes_per_s or kv_bytes_per_token <= 0:
        return None
    return max(1, math.ceil(match_s * link_bytes_per_s / kv_bytes_per_token))
