"""Stock SGLang 0.5.23 without offload: admission by HBM, recompute on shortage.

Used for two baselines: pipeline parallel (M micro-batches, default M = pp_size, SGLang's
pp_async_batch_depth = 0) and tensor parallel (one stage, M = 1). Modelled on the pinned
sources (paths under sglang/srt/):

- Each micro-batch slot keeps its own running batch (scheduler_pp_mixin: running_mbs);
  all slots share one KV pool. At its turn a slot runs a prefill of newly admitted
  requests if any can be admitted (get_next_batch_to_run prefers prefill), else a decode
  of its running batch. Admitted requests join that slot's running batch.
- Admission (schedule_policy.PrefillAdder): FCFS; a request needs its prefill tokens plus
  min(max_new - generated, 4096) * new_token_ratio, on top of the same reserve for every
  request in the running batch the adder is given (under PP: this slot's only,
  scheduler.get_new_batch_prefill(running_batch=running_mbs[m])), within the free tokens; at most chunked_prefill_size tokens a prefill
  (one longer request is taken alone; SGLang would split it into chunks, same total work)
  and pp_max_micro_batch_size rows a slot.
- new_token_ratio (scheduler_components/new_token_ratio_tracker): starts at 0.7, decays
  by (0.7 - 0.098) / 600 every decode step to 0.098, and after a retraction becomes
  min(1, (decoded + 20 * n) / (sum of max_new + 1)) over the batch's remaining requests.
- Decode needs one free token per row; if the pool lacks them, retract_decode removes
  requests, fewest output tokens first (ties: longest prompt first), until it fits
  (always at least one, keeping at least one). A retracted request's KV is freed; it
  rejoins the waiting queue in arrival order and is prefilled again over prompt +
  generated tokens (recompute), then continues decoding. vLLM V1 always recomputes too.
"""

from __future__ import annotations

import heapq

import numpy as np

from .costs import Layout
from .requests import DONE, RUNNING, WAITING, RequestBook
from .turn import DECODE, EMPTY, PREFILL, Effects, Turn
from .workload import Workload

CLIP_MAX_NEW = 4096
RETRACT_DECODE_STEPS = 20
INIT_RATIO, MIN_RATIO_FACTOR, DECAY_STEPS = 0.7, 0.14, 600


class RecomputeScheduler:
    def __init__(self, layout: Layout, workload: Workload, M: int, chunk_tokens: int,
                 row_cap: int) -> None:
        self.layout = layout
        self.M = M
        self.book = RequestBook(workload)
        self.D = layout.capacity_tokens
        self.chunk = chunk_tokens
        self.row_cap = row_cap
        self.waiting = list(range(workload.n))            # heap by id = arrival order
        self.running: list[list[int]] = [[] for _ in range(M)]
        self.used = 0                                     # device tokens, every stage
        self.ratio = INIT_RATIO
        self.min_ratio = INIT_RATIO * MIN_RATIO_FACTOR
        self.decay = (INIT_RATIO - self.min_ratio) / DECAY_STEPS
        self.retractions = 0
        for r in range(workload.n):
            if workload.prompt[r] + 1 > self.D:
                raise ValueError(f"request {r} ({workload.prompt[r]} tokens) cannot fit "
                                 f"{self.D} device tokens")

    def done(self) -> bool:
        return self.book.all_done()

    def backlog(self) -> int:
        """Requests waiting for admission (retracted ones included)."""
        return len(self.waiting)

    def finished(self) -> int:
        return self.book.done_count

    # ---------------------------------------------------------------------------------
    def decide(self, k: int, now: float, prev: Turn | None) -> Turn:
        m = k % self.M
        freed = self._retire(m, prev)
        if self.waiting:
            admitted = self._admit(m)
            if admitted:
                return self._prefill(k, m, admitted, freed)
        return self._decode(k, m, freed)

    def _retire(self, m: int, prev: Turn | None) -> int:
        """Turn k - M's members made a token; the finished leave micro-batch m. Returns the
        device tokens they freed."""
        if prev is None:
            return 0
        fin = self.book.retire(prev)
        if not fin:
            return 0
        fs = set(fin)
        self.running[m] = [r for r in self.running[m] if r not in fs]
        freed = int(self.book.kv[fin].sum())
        self.used -= freed
        return freed

    def _admit(self, m: int) -> list[int]:
        book = self.book
        # PrefillAdder reserves for the running batch it is given: under PP that is this
        # slot's (running_mbs[m]), not the other slots' requests sharing the pool, so the
        # reserve undercounts by M - 1 slots and decode steps later retract.
        run = np.asarray(self.running[m], dtype=np.int64)
        left = np.minimum(book.out[run] - book.gen[run], CLIP_MAX_NEW)
        rem = self.D - self.used - float(left.sum()) * self.ratio
        chunk = self.chunk
        rows = len(self.running[m])
        out: list[int] = []
        taken = 0
        while self.waiting and rows + len(out) < self.row_cap:
            r = self.waiting[0]
            ext = book.prefill_len(r)
            need = ext + min(int(book.out[r] - book.gen[r]), CLIP_MAX_NEW) * self.ratio
            if need > rem or ext > self.D - self.used - taken:
                break
            if ext > chunk and out:
                break
            heapq.heappop(self.waiting)
            out.append(r)
            taken += ext
            rem -= need
            chunk -= ext
            if chunk <= 0:
                break
        return out

    def _prefill(self, k: int, m: int, ids: list[int], freed: int) -> Turn:
        book = self.book
        lens = [book.prefill_len(r) for r in ids]
        for r in ids:
            book.recomputed += int(book.gen[r])
            book.where[r] = RUNNING
        self.running[m].extend(ids)
        tokens = sum(lens)
        self.used += tokens
        sum_sq = sum(x * x for x in lens)
        return Turn(k, m, PREFILL, tuple(ids), self.layout.prefill_times(tokens, len(ids), sum_sq),
                    rows=len(ids), tokens=tokens, effects=Effects(free=freed, reserve=tokens),
                    deps=int(book.last[ids].max()))

    def _decode(self, k: int, m: int, freed: int) -> Turn:
        book = self.book
        reqs = self.running[m]
        if not reqs:
            return Turn(k, m, EMPTY, (), (0.0,) * self.layout.pp, effects=Effects(free=freed))
        if self.used + len(reqs) > self.D:
            freed += self._retract(m)
            reqs = self.running[m]
        else:
            self.ratio = max(self.ratio - self.decay, self.min_ratio)
        self.used += len(reqs)
        kv = int(book.kv[reqs].sum())
        rows = len(reqs)
        return Turn(k, m, DECODE, tuple(reqs), self.layout.decode_times(rows, kv + rows),
                    rows=rows, sum_ctx=kv + rows, effects=Effects(free=freed, reserve=rows),
                    deps=int(book.last[reqs].max()))

    def _retract(self, m: int) -> int:
        """retract_decode: keep order = (output tokens, -prompt) descending; pop the tail."""
        book = self.book
        keep = sorted(self.running[m], key=lambda r: (int(book.gen[r]), -int(book.prompt[r]), -r),
                      reverse=True)
        freed = 0
        first = True
        while len(keep) > 1 and (first or self.used + len(keep) > self.D):
            first = False
            r = keep.pop()
            kvr = int(book.kv[r])
            self.used -= kvr
            freed += kvr
            book.kv[r] = 0
            book.where[r] = WAITING
            heapq.heappush(self.waiting, r)
            self.retractions += 1
        if self.used + len(keep) > self.D:
            raise RuntimeError("a single request no longer fits the device pool")
        self.running[m] = keep
        decoded = int(book.gen[keep].sum())
        max_new = int(book.out[keep].sum())
        self.ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(keep)) / (max_new + 1))
        return freed

    def metrics(self) -> dict:
        return {"retractions": self.retractions, "recomputed_tokens": int(self.book.recomputed),
                "unfinished": int((self.book.where != DONE).sum())}
