"""The sliding-window prefetch budget (docs/design.md section 4, "Prefetch budget").

One `LinkTimeline` per stage knows two things: when that stage's H2D link is next free
(FIFO: transfers queue behind each other), and the predicted slot time of every micro-batch
on that stage (round robin, micro-batch ids 0..M-1). When micro-batch m leaves the stage at
`now`, its next turn starts after the other M-1 micro-batches' slots:

    M = 3, m = 0 leaves at now; the stage runs mb1 then mb2, then mb0 again

    compute   ..| mb0 |   mb1 (t1)   |   mb2 (t2)   | mb0 |..
                      ^ now                         ^ turn = now + t1 + t2
    H2D link        |=== held ===|----- budget(mb0) ---|margin|
                      ^ now      ^ link_free_at        ^ turn - margin

    budget(m) = bytes the link carries in [max(now, link_free_at), turn - margin]
              = h2d_bytes_in((turn - max(now, free)) * (1 - margin_fraction)) - margin_bytes
              , never negative.

Committing a prefetch queues it on the link (start = max(now, free), end = start + latency
+ bytes / bw) and moves `link_free_at` to its end. The next micro-batch to leave the stage
sees a later `link_free_at` inside its own window, so its budget shrinks: that is the
sliding window. Nothing here reads a clock; every method takes `now`, and every object is
frozen (methods return a new timeline), so a simulator can branch and a test can script.

The window estimate assumes the stage runs the other slots back to back. Idle gaps (a late
activation from the previous stage) only push the turn later, so the budget errs on the
safe side. When the transfer engine knows better, `with_link_free_at` reconciles.

`PrefetchBudget` wraps one timeline per stage. A plan is a set of requests, i.e. a number
of host TOKENS, which costs tokens * k_s bytes on stage s (k_s differs when layers split
unevenly). The binding stage is the one whose budget holds the fewest tokens; a plan within
it fits every stage, so every stage can honour the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from .cost_model import TransferModel


@dataclass(frozen=True)
class BudgetPolicy:
    """Safety margin kept free in every window (prediction error of slot times, jitter)."""

    margin_fraction: float = 0.1   # of the window
    margin_bytes: int = 0          # absolute, after the fraction

    def __post_init__(self) -> None:
        if not (0.0 <= self.margin_fraction < 1.0) or self.margin_bytes < 0:
            raise ValueError(f"invalid BudgetPolicy {self}")


class Commitment(NamedTuple):
    """A prefetch queued on the link: `nbytes` for `mb`, on the wire during [start, end)."""

    mb: int
    nbytes: int
    start: float
    end: float


class StageBudget(NamedTuple):
    mb: int
    nbytes: int          # what m may prefetch on this stage (>= 0)
    link_start: float    # max(now, link_free_at): when a new transfer would start
    turn_start: float    # predicted start of m's next turn on this stage
    held_s: float        # link time already committed to earlier prefetches after `now`


@dataclass(frozen=True)
class LinkTimeline:
    """One stage's H2D link and predicted slots. Immutable: `commit` returns a new one."""

    transfer: TransferModel
    slot_times: tuple[float, ...]          # predicted t of micro-batch i on this stage
    link_free_at: float = 0.0
    commitments: tuple[Commitment, ...] = ()   # still on the wire at the last commit
    policy: BudgetPolicy = BudgetPolicy()

    def __post_init__(self) -> None:
        if not self.slot_times or min(self.slot_times) < 0.0:
            raise ValueError("slot_times: one non-negative predicted time per micro-batch")

    @property
    def num_microbatches(self) -> int:
        return len(self.slot_times)

    def _check_mb(self, mb: int) -> None:
        if not 0 <= mb < len(self.slot_times):
            raise ValueError(f"micro-batch {mb} not in 0..{len(self.slot_times) - 1}")

    def next_turn(self, mb: int, now: float) -> float:
        """Start of mb's next turn if it left the stage at `now`: after the other M-1 slots."""
        self._check_mb(mb)
        m = len(self.slot_times)
        return now + sum(self.slot_times[(mb + j) % m] for j in range(1, m))

    def budget(self, mb: int, now: float) -> StageBudget:
        """Bytes mb may prefetch on this stage, having just left it at `now`."""
        turn = self.next_turn(mb, now)
        start = max(now, self.link_free_at)
        usable_s = (turn - start) * (1.0 - self.policy.margin_fraction)
        nbytes = max(0, self.transfer.h2d_bytes_in(usable_s) - self.policy.margin_bytes)
        return StageBudget(mb, nbytes, start, turn, max(0.0, self.link_free_at - now))

    def commit(self, mb: int, nbytes: int, now: float) -> "LinkTimeline":
        """Queue a prefetch of `nbytes` for mb at `now`; the link is busy until it lands.
        Committing more than the budget is allowed (the runtime then stalls at the turn);
        the timeline records what the link really has to carry."""
        self._check_mb(mb)
        if nbytes < 0:
            raise ValueError(f"negative commitment {nbytes}")
        if nbytes == 0:
            return self
        start = max(now, self.link_free_at)
        end = start + self.transfer.h2d_time(nbytes)
        live = tuple(c for c in self.commitments if c.end > now)   # slide: drop landed ones
        return replace(self, link_free_at=end,
                       commitments=live + (Commitment(mb, nbytes, start, end),))

    def with_slot_time(self, mb: int, seconds: float) -> "LinkTimeline":
        """New prediction for mb's slot (from the step-cost model after a plan is applied)."""
        self._check_mb(mb)
        times = list(self.slot_times)
        times[mb] = float(seconds)
        return replace(self, slot_times=tuple(times))

    def with_link_free_at(self, t: float) -> "LinkTimeline":
        """Reconcile with the transfer engine: the link is really free at `t`."""
        return replace(self, link_free_at=float(t))


class PipelineBudget(NamedTuple):
    tokens: int                      # host tokens every stage can bring back before the turn
    binding_stage: int               # the stage that set `tokens` (lowest index on ties)
    stage_bytes: tuple[int, ...]     # each stage's own budget in bytes
    stage_tokens: tuple[int, ...]    # stage_bytes[s] // k_s
    kv_bytes_per_token: int          # k of the binding stage

    @property
    def selector_bytes(self) -> int:
        """Budget to hand the selector together with `kv_bytes_per_token`: a plan of at most
        this many bytes there is at most `tokens` tokens, which fits every stage."""
        return self.tokens * self.kv_bytes_per_token


@dataclass(frozen=True)
class PrefetchBudget:
    """One LinkTimeline per stage; the binding stage decides (see module note)."""

    stages: tuple[LinkTimeline, ...]
    kv_bytes_per_token: tuple[int, ...]    # k_s, core/kv.py: stage_kv_bytes_per_token

    def __post_init__(self) -> None:
        if not self.stages or len(self.stages) != len(self.kv_bytes_per_token):
            raise ValueError("one kv_bytes_per_token per stage timeline")
        if min(self.kv_bytes_per_token) <= 0:
            raise ValueError("kv_bytes_per_token must be positive")
        if len({t.num_microbatches for t in self.stages}) != 1:
            raise ValueError("every stage must cycle the same micro-batches")

    def _nows(self, nows: tuple[float, ...]) -> tuple[float, ...]:
        if len(nows) != len(self.stages):
            raise ValueError(f"need one `now` per stage ({len(self.stages)}), got {len(nows)}")
        return nows

    def budget(self, mb: int, nows: tuple[float, ...]) -> PipelineBudget:
        """nows[s]: when mb leaves stage s (see `pipelined_nows`)."""
        nows = self._nows(nows)
        per = [t.budget(mb, now).nbytes for t, now in zip(self.stages, nows, strict=True)]
        toks = [b // k for b, k in zip(per, self.kv_bytes_per_token, strict=True)]
        s = min(range(len(toks)), key=lambda i: (toks[i], i))
        return PipelineBudget(toks[s], s, tuple(per), tuple(toks), self.kv_bytes_per_token[s])

    def commit(self, mb: int, tokens: int, nows: tuple[float, ...]) -> "PrefetchBudget":
        """Queue `tokens` host tokens for mb on every stage (tokens * k_s bytes on stage s)."""
        nows = self._nows(nows)
        return replace(self, stages=tuple(
            t.commit(mb, tokens * k, now)
            for t, k, now in zip(self.stages, self.kv_bytes_per_token, nows, strict=True)))

    def with_slot_time(self, mb: int, seconds: tuple[float, ...]) -> "PrefetchBudget":
        return replace(self, stages=tuple(
            t.with_slot_time(mb, x) for t, x in zip(self.stages, seconds, strict=True)))


def pipelined_nows(now: float, stage_slot_times: tuple[float, ...]) -> tuple[float, ...]:
    """When a micro-batch that leaves stage 0 at `now` leaves each later stage, if it flows
    through without waiting: now_s = now + t_1 + ... + t_s (t_s its slot on stage s)."""
    out, t = [], now
    for s, dt in enumerate(stage_slot_times):
        if s > 0:
            t += dt
        out.append(t)
    return tuple(out)
