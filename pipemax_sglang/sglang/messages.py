"""The decision that travels with the requests: stage 0 decides, every stage applies.

Each PP stage runs its own scheduler and must build identical batches. Stage 0's scheduler
(pp_rank 0, the TP/CP rank that polls the tokenizer) decides; the decision is added to the
requests it relays to the next stage (as SGLang's own timeout aborts are), so every stage,
stage 0 included, dispatches it in process_input_requests of the same loop iteration.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipeMaxPlan:
    turn: int                    # the turn (scheduling call) at whose end it was decided
    mb: int                      # micro-batch of that turn
    park: tuple[str, ...]        # members of that turn's decode batch to park after its forward
    rejoin: tuple[str, ...]      # parked requests to bring back ...
    target_turn: int             # ... for this turn (mb's next one)
    issue_turn: int              # prefetch starts at the ingest before this turn
    budget_bytes: int = 0
    plan_bytes: int = 0
    admit_mbs: int = 0           # micro-batches that keep rows from now on (0: unchanged)
