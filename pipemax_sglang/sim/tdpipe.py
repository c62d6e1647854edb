"""TD-Pipe's scheduling on a pipeline: prefill and decode in separate phases, no offload.

TD-Pipe (arXiv 2506.10470, the same group as PipeMax) as its scheduler runs
(github MLSysU/TD-Pipe, TD_Pipe/core/scheduler.py): a centralized engine feeds P
micro-batches through P stages and switches the whole pipeline between two phases.

- Prefill phase: each micro-batch's turn prefills waiting requests FCFS while their prompts
  fit the device, until the batch holds >= 192 padded tokens (len x longest; TD-Pipe's
  peak_batch_size). The phase ends when the queue is empty or the KV the running requests
  will hold reaches 90% of the device: for each midpoint m of {5, 8, 16, ..., 4096}, the sum
  of (context + m) over requests predicted to generate at least m more tokens, in 16-token
  blocks; the largest such sum is the predicted peak.
- Decode phase: every decode turn takes total // P requests (one more for the first
  total % P turns of a round) from the ready queue in arrival order: inter-batch work
  stealing, so micro-batches stay even as requests finish. A step that lacks a slot
  preempts the last ready request by recompute (freed, to the front of the queue). Every P
  decode turns, with requests waiting, the phase switches to prefill when the decode
  batch's compute intensity (b / t(b), against 256 / t(256)) is below a prefill phase's
  (its work over work plus the bubble its longest prompt leaves), computed over the
  waiting requests whose predicted KV still fits.

What the simulator gives it: output lengths are known exactly (TD-Pipe predicts them with a
classifier: this is its best case), and its profile (time of a forward of n tokens on the
whole model) is the simulated step summed over the stages. Not modelled: its Ray control
plane's own latency. M = P, as TD-Pipe runs.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .costs import Layout
from .requests import RUNNING, WAITING, RequestBook
from .turn import DECODE, EMPTY, PREFILL, Effects, Turn
from .workload import Workload

PEAK_BATCH = 192                 # TD-Pipe's peak_batch_size: prefill batch target, decode cap
BLOCK = 16                       # vLLM's KV block (tokens)
MIDPOINTS = np.array([5, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
PREFILL_STOP = 0.9               # predicted peak KV / device that ends a prefill phase
REF_BATCH = 256                  # intensity reference batch


class TDPipeScheduler:
    def __init__(self, layout: Layout, workload: Workload, M: int, row_cap: int) -> None:
        self.layout = layout
        self.P = layout.pp
        self.M = M
        self.book = RequestBook(workload)
        self.D = layout.capacity_tokens
        self.row_cap = row_cap
        self.waiting: deque[int] = deque(range(workload.n))
        self.ready: list[int] = []             # prefilled, not in flight (arrival order)
        self.inflight: set[int] = set()
        self.used = 0                          # device tokens, every stage
        self.prefill_mode = True
        self.decode_count = 0
        self.retractions = 0
        self.switches = 0
        for r in range(workload.n):
            if workload.prompt[r] + 1 > self.D:
                raise ValueError(f"request {r} ({workload.prompt[r]} tokens) cannot fit "
                                 f"{self.D} device tokens")

    def done(self) -> bool:
        return self.book.all_done()

    def backlog(self) -> int:
        return len(self.waiting)

    def finished(self) -> int:
        return self.book.done_count

    # ---- the profile TD-Pipe reads: a forward of n tokens, the whole model --------------
    def _forward(self, n: int) -> float:
        return sum(s.decode_time(max(1, n), 0) for s in self.layout.stages)

    def _prefill_s(self, n: int) -> float:
        return sum(s.prefill_time(n, 1, n * n) for s in self.layout.stages)

    def _intensity(self, b: int) -> float:
        if b >= PEAK_BATCH:
            return 1.0
        ref = REF_BATCH / self._forward(REF_BATCH)
        return (b / self._forward(b)) / ref if b > 0 else 0.0

    def _peak_kv(self, reqs, extra: list[tuple[int, int]] = ()) -> float:
        """TD-Pipe's predicted peak: max over midpoints m of the blocks of (context + m) of
        the requests with at least m tokens still to generate."""
        book = self.book
        ids = np.fromiter(reqs, dtype=np.int64)
        ctx = (book.prompt[ids] + book.gen[ids]) if ids.size else np.zeros(0, np.int64)
        left = (book.out[ids] - book.gen[ids]) if ids.size else np.zeros(0, np.int64)
        if extra:
            e = np.array(extra, dtype=np.int64).reshape(-1, 2)
            ctx, left = np.concatenate([ctx, e[:, 0]]), np.concatenate([left, e[:, 1]])
        if ctx.size == 0:
            return 0.0
        use = np.where(left[None, :] >= MIDPOINTS[:, None],
                       np.ceil((ctx[None, :] + MIDPOINTS[:, None]) / BLOCK) * BLOCK, 0.0)
        return float(use.sum(axis=1).max())

    # ---- one decision --------------------------------------------------------------------
    def decide(self, k: int, now: float, prev: Turn | None) -> Turn:
        freed = 0
        book = self.book
        if prev is not None and prev.kind != EMPTY:
            fin = set(book.retire(prev))
            for r in prev.reqs:
                self.inflight.discard(r)
                if r in fin:
                    freed += int(book.kv[r])
                else:
                    self.ready.append(r)
            self.used -= freed
            self.ready.sort()                  # FCFS: arrival order
        if self.decode_count % self.P == 0 or not (self.ready or self.inflight):
            self._update_mode()
        if self.prefill_mode:
            ids = self._prefill_batch()
            if ids:
                self.decode_count = 0
                return self._prefill(k, ids, freed)
            self.prefill_mode = False
        return self._decode(k, freed)

    def _update_mode(self) -> None:
        live = len(self.ready) + len(self.inflight)
        if self.prefill_mode:
            self.prefill_mode = bool(self.waiting) and (
                self._peak_kv(list(self.ready) + list(self.inflight)) < PREFILL_STOP * self.D)
            return
        if not self.waiting:
            return
        if live == 0:                          # nothing to decode: admit
            self._switch()
            return
        if live // self.P > PEAK_BATCH:
            return
        decode_int = self._intensity(live // self.P)
        running = list(self.ready) + list(self.inflight)
        book = self.book
        extra: list[tuple[int, int]] = []
        prefill_s = longest = 0.0
        batch = live
        for r in self.waiting:
            if self._peak_kv(running, extra) >= self.D:
                break
            n = int(book.prompt[r] + book.gen[r])
            extra.append((n, int(book.out[r] - book.gen[r])))
            t = self._prefill_s(n)
            prefill_s += t / self.P
            longest = max(longest, t)
            batch += 1
        if prefill_s <= 0:
            return
        prefill_s += longest / self.P * (self.P - 1)
        bubble = (longest / self.P - self._forward(batch // self.P)) * (self.P - 1)
        if decode_int < (prefill_s - bubble) / prefill_s:
            self._switch()

    def _switch(self) -> None:
        self.prefill_mode = True
        self.switches += 1

    def _prefill_batch(self) -> list[int]:
        book = self.book
        out: list[int] = []
        longest = 0
        room = self.D - self.used
        while self.waiting and len(out) < self.row_cap:
            r = self.waiting[0]
            n = book.prefill_len(r)
            if n > room:
                break
            self.waiting.popleft()
            out.append(r)
            room -= n
            longest = max(longest, n)
            if len(out) * longest >= PEAK_BATCH:
                break
        return out

    def _prefill(self, k: int, ids: list[int], freed: int) -> Turn:
        book = self.book
        lens = [book.prefill_len(r) for r in ids]
        for r in ids:
            book.recomputed += int(book.gen[r])
            book.where[r] = RUNNING
            self.inflight.add(r)
        tokens = sum(lens)
        self.used += tokens
        return Turn(k, k % self.M, PREFILL, tuple(ids),
                    self.layout.prefill_times(tokens, len(ids), sum(x * x for x in lens)),
                    rows=len(ids), tokens=tokens, effects=Effects(free=freed, reserve=tokens),
                    deps=int(book.last[ids].max()))

    def _decode(self, k: int, freed: int) -> Turn:
        book = self.book
        total = len(self.ready) + len(self.inflight)
        target = total // self.P + (self.decode_count % self.P < total % self.P)
        self.decode_count += 1
        out: list[int] = []
        while self.ready and len(out) < self.row_cap:
            if self.used + 1 > self.D:
                if len(self.ready) > 1:
                    freed += self._preempt(self.ready.pop())
                    continue
                break
            r = self.ready.pop(0)
            out.append(r)
            self.used += 1
            if len(out) > 1 and len(out) >= target and not 0 < len(self.ready) <= self.P:
                break
        if not out:
            return Turn(k, k % self.M, EMPTY, (), (0.0,) * self.P, effects=Effects(free=freed))
        for r in out:
            self.inflight.add(r)
        rows = len(out)
        kv = int(book.kv[out].sum())
        return Turn(k, k % self.M, DECODE, tuple(out), self.layout.decode_times(rows, kv + rows),
                    rows=rows, sum_ctx=kv + rows, effects=Effects(free=freed, reserve=rows),
                    deps=int(book.last[out].max()))

    def _preempt(self, r: int) -> int:
        book = self.book
        kvr = int(book.kv[r])
        self.used -= kvr
        book.kv[r] = 0
        book.where[r] = WAITING
        self.waiting.appendleft(r)
        self.retractions += 1
        return kvr

    def metrics(self) -> dict:
        return {"retractions": self.retractions, "recomputed_tokens": int(self.book.recomputed),
                "phase_switches": self.switches}
