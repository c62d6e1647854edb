"""Per-request state, as the schedulers keep it (numpy columns, one row per request).

    gen[r]   output tokens produced so far (the first one by the prefill)
    kv[r]    KV tokens it holds: prompt + gen - 1 once prefilled (the newest token's KV is
             written by the next decode step, which is why a decode step needs one new slot)
    last[r]  the last turn it computed in; its next turn may not start on stage 0 before
             that one's output is back from the last stage
    where[r] WAITING (not admitted, or retracted), RUNNING, PARKED (host only), DONE

A decision first `retire`s the micro-batch's previous turn: the scheduler knows at stage 0
what the last stage will produce (lengths are known: max_new_tokens with ignore_eos), so
it advances its books then; the engine counts the tokens when they really come out.
A prefill over prompt + g already generated tokens (a recompute after retraction, g > 0)
makes token g + 1: kv = prompt + g, gen = g + 1, the same formula as a fresh one (g = 0).
"""

from __future__ import annotations

import numpy as np

from .turn import DECODE, PREFILL, Turn
from .workload import Workload

WAITING, RUNNING, PARKED, DONE = 0, 1, 2, 3


class RequestBook:
    def __init__(self, workload: Workload) -> None:
        n = workload.n
        self.n = n
        self.prompt = workload.prompt.astype(np.int64)
        self.out = workload.output.astype(np.int64)
        self.gen = np.zeros(n, dtype=np.int64)
        self.kv = np.zeros(n, dtype=np.int64)
        self.last = np.full(n, -1, dtype=np.int64)
        self.where = np.full(n, WAITING, dtype=np.int8)
        self.done_count = 0
        self.recomputed = 0          # tokens prefilled again after a retraction

    def all_done(self) -> bool:
        return self.done_count == self.n

    def retire(self, turn: Turn) -> list[int]:
        """Advance the members of a finished turn; return those that are now complete."""
        if turn.kind not in (DECODE, PREFILL) or not turn.reqs:
            return []
        ids = np.fromiter(turn.reqs, dtype=np.int64, count=len(turn.reqs))
        if turn.kind == DECODE:
            self.gen[ids] += 1
            self.kv[ids] += 1
        else:
            self.kv[ids] = self.prompt[ids] + self.gen[ids]
            self.gen[ids] += 1
        self.last[ids] = turn.k
        fin = ids[self.gen[ids] >= self.out[ids]]
        if fin.size:
            self.where[fin] = DONE
            self.done_count += int(fin.size)
        return fin.tolist()

    def prefill_len(self, r: int) -> int:
        """Tokens a prefill of r computes: its prompt and whatever it had generated."""
        return int(self.prompt[r] + self.gen[r])

    def final_len(self, r: int) -> int:
        """KV tokens r holds at its end (what an admission reserves on host)."""
        return int(self.prompt[r] + self.out[r])
