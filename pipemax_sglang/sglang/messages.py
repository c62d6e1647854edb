"""The decision that travels with the requests: stage 0 decides, every stage applies.

Each PP stage runs its own scheduler and must build identical batches. Stage 0's scheduler
(pp_rank 0, the TP/CP rank that polls the tokenizer) decides; the decision is added to the
requests it relays to the next stage (as SGLang's own timeout aborts are), so every stage,
stage 0 included, dispatches it in process_input_requests of the same loop iteration.
The message is the core's TurnPlan (core/decider.py): a frozen dataclass of ids and numbers.
"""

from pipemax_sglang.core.decider import TurnPlan as PipeMaxPlan

__all__ = ["PipeMaxPlan"]
