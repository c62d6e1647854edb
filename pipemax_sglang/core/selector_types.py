"""Plain frozen data in and out of the selector: what the scheduler fills in, what it gets back.

Inputs are NamedTuples for the per-request rows (built by the thousand per decision, and
`zip(*candidates)` turns them into columns at C speed) and a frozen dataclass for the
decision. The plan is a frozen dataclass whose id tuples are sorted, so equal inputs give
`==` plans whatever order the candidates came in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from .cost_model import StepCost


class HostNode(NamedTuple):
    """A radix-tree node on a candidate's path whose KV is on host only. Candidates that
    share a node (a common prefix) pay its transfer once between them."""

    node_id: int
    tokens: int


class Candidate(NamedTuple):
    """A parked (CPU-resident) request that may rejoin the target micro-batch.

    host_tokens: its tokens not on the device, i.e. what a rejoin loads back. Of these,
    `nodes` lists the ones held in radix nodes that other candidates may share; the rest
    (host_tokens - sum of node tokens) are its own. rounds_waited: decisions it has been
    passed over since it was parked (the caller counts). arrival: admission order, for FCFS.
    """

    req_id: str
    context_len: int
    host_tokens: int
    nodes: tuple[HostNode, ...] = ()
    rounds_waited: int = 0
    arrival: int = 0


class Resident(NamedTuple):
    """A member of the target micro-batch whose KV is on the device.

    private_tokens: device tokens parking it would free (its KV no resident shares);
    None means all of context_len.
    """

    req_id: str
    context_len: int
    private_tokens: int | None = None

    @property
    def freeable(self) -> int:
        return self.context_len if self.private_tokens is None else self.private_tokens


@dataclass(frozen=True)
class SelectorParams:
    """Policy knobs, with the values the tests and benchmarks use (core/objective.py
    explains each term)."""

    force_after_rounds: int = 16       # A: a candidate that waited A rounds is forced in first
    balance_weight: float = 1.0        # lambda: price of pipeline-bubble time, 1 = throughput-exact
    utilisation_weight: float = 0.05   # epsilon: worth of a full budget, in rows (< 1/A)
    refine_pool: int = 6               # k: boundary items per side considered by swap moves
    refine_passes: int = 8             # cap on refinement passes (each applies >= 1 move)

    def __post_init__(self) -> None:
        if self.force_after_rounds < 1 or self.refine_pool < 1 or self.refine_passes < 0:
            raise ValueError(f"invalid SelectorParams {self}")
        if not (self.balance_weight >= 0.0 and 0.0 <= self.utilisation_weight < 1.0):
            raise ValueError(f"invalid SelectorParams {self}")


@dataclass(frozen=True)
class SelectorInput:
    """One decision: who rejoins micro-batch m at its next turn, and who of m is parked.

    other_step_times / other_rows: predicted step time and row count of each OTHER
    micro-batch in flight (same order, same length; empty when m is the only one).
    num_stages: pipeline stages P (the bubble model needs it).
    """

    candidates: tuple[Candidate, ...]
    residents: tuple[Resident, ...]
    budget_bytes: int
    kv_bytes_per_token: int
    device_tokens_free: int
    row_cap: int
    cost: StepCost
    other_step_times: tuple[float, ...] = ()
    other_rows: tuple[int, ...] = ()
    num_stages: int = 1
    params: SelectorParams = field(default_factory=SelectorParams)

    def __post_init__(self) -> None:
        # Cheap scalar checks here; per-candidate checks run vectorised in frame.columns().
        if self.budget_bytes < 0 or self.kv_bytes_per_token <= 0 or self.row_cap < 0:
            raise ValueError("budget_bytes >= 0, kv_bytes_per_token > 0, row_cap >= 0")
        if self.num_stages < 1:
            raise ValueError("num_stages >= 1")
        if len(self.other_step_times) != len(self.other_rows):
            raise ValueError("other_step_times and other_rows: one entry per other micro-batch")
        if any(not (t >= 0.0 and math.isfinite(t)) for t in self.other_step_times):
            raise ValueError("other_step_times must be finite and >= 0")
        if any(r < 0 for r in self.other_rows):
            raise ValueError("other_rows must be >= 0")


@dataclass(frozen=True)
class Plan:
    """The selector's answer. Id tuples are sorted by req_id.

    bytes: H2D bytes of the rejoin (shared host nodes counted once). device_tokens: device
    tokens the micro-batch needs for the rejoined KV plus one new token per member, to be
    compared with device_tokens_free plus what parking frees. utilisation: bytes / budget
    (0 when the budget is 0). objective: core/objective.py's value of this plan.
    """

    rejoin: tuple[str, ...]
    park: tuple[str, ...]
    forced: tuple[str, ...]
    bytes: int
    host_tokens: int
    device_tokens: int
    rows: int
    predicted_step_time: float
    utilisation: float
    objective: float
