"""Two stage-local rules that run on every stage (not only stage 0), as pure functions:

    admission(view)        does this turn's micro-batch take new requests?
    park_order(order, left, by_priority)
                           in which order a step that does not fit parks its rows

Every stage evaluates them at the same loop point on the same state, so all stages agree
without a message (as SGLang's own admission and retraction do). The live scheduler
(sglang/stage.py) and the simulator call these; neither has a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .selector_types import SelectorParams

FORCE_AFTER = SelectorParams().force_after_rounds


class Admission(Enum):
    ADMIT = "admit"                    # the scheduler admits as it would without PipeMax
    DEFER = "defer"                    # no new request this turn
    IF_HOST_ROOM = "if_host_room"      # admit while the host tier can take more parked KV


@dataclass(frozen=True)
class AdmissionView:
    turn: int
    num_mbs: int                # M
    admit_mbs: int              # micro-batches keeping rows (stage 0's plans: concentration)
    prefill_in_progress: bool   # a chunked prefill is part-way
    parked: int                 # requests in the parked pool
    running_rows: int           # rows of this turn's micro-batch
    inflight_rows: int          # every live request: running and parked
    row_cap: int                # rows a micro-batch may hold
    oldest_wait: int = 0        # rounds the longest-waiting parked request has waited
    force_after: int = FORCE_AFTER   # A: rounds after which a parked request is forced back in


def admission(v: AdmissionView) -> Admission:
    """While stage 0's plans concentrate the rows in the first admit_mbs micro-batches, a
    prefill there would cost one of them a decode turn, every row a cycle: so new requests
    are prefilled in the others, whose turns are empty, and drain into the busy ones from
    there; a busy micro-batch admits only when it has no rows (the first fill). Parked
    requests waiting for room go first: nothing is admitted while any waits (they rejoin
    within a bounded number of turns: the decider's oldest rule). This rule does not hold
    back a chunked prefill part-way. In any case nothing is admitted while the pipeline is
    full (M micro-batches of row_cap rows), and, while anything is in flight, only if the
    host tier can take more parked KV. Liveness: an empty pipeline always admits, and once
    a parked request has waited A rounds (the selector then forces it back in first,
    core/frame.py) nothing new is admitted until it is back: new requests would otherwise
    take the device room it waits for, for as long as they keep arriving."""
    M = v.num_mbs
    if v.parked and v.oldest_wait >= v.force_after:
        return Admission.DEFER
    if v.admit_mbs < M and not v.prefill_in_progress:
        busy = v.turn % M < v.admit_mbs
        if v.parked or (busy and v.running_rows):
            return Admission.DEFER
    elif not v.parked:
        return Admission.ADMIT
    if v.inflight_rows >= M * v.row_cap:
        return Admission.DEFER
    if v.inflight_rows == 0:
        return Admission.ADMIT
    return Admission.IF_HOST_ROOM


def park_order(sglang_order: list[int], left: list[int], by_priority: bool = False) -> list[int]:
    """Indices of a decode batch, the last parked first (a step that does not fit pops from
    the end): the most left to generate kept longest, the scheduler's retraction order
    among equals. `sglang_order`: SGLang's retraction order, most preferred to keep first;
    `left[i]`: tokens request i may still generate. An offline batch ends with its longest
    request, and every turn that one spends parked adds a pipeline cycle to the batch,
    while a short one rejoins within its slack. SGLang keeps the most advanced requests
    because a retraction throws their work away; a park throws nothing away. Retraction by
    priority (the user's choice) keeps SGLang's order as it is."""
    if by_priority:
        return list(sglang_order)
    return sorted(sglang_order, key=lambda i: -left[i])
