"""PP with KV offload: PipeMax (greedy selector) and the naive baseline (FCFS selector).

Both run the same mechanics; only the core selector differs. Every decision is the one
of docs/core.md, with the core's own objects:

    nows = pipelined_nows(now, slot times of m)          # bounded by queueing, below
    b    = budget.budget(m, nows)                        # binding stage decides
    plan = SELECTORS[name](SelectorInput(parked, m's residents, b.selector_bytes, ...))
    budget = budget.commit(m, plan.host_tokens, nows).with_slot_time(m, t(next turn))

Memory (ledger.py). Every admitted request has a current host copy (write-through: its
prompt's KV after the prefill, each new token after every step), so parking moves
nothing. Residents stay on the device across turns; what a turn brings in (its rejoins,
its prefill) sits in the ring for that turn only. docs/design.md's capacity arithmetic
(M*R + 2*C <= D) is what makes offload pay. The glue around the core (docs/sim.md has
the reasons; a live scheduler needs the same answers):

- loads start as late as possible (land by the turn less the budget's margin), and the
  core's link timeline is told the real end (`with_link_free_at`, its reconcile hook):
  a rejoin holds memory ~2 slots, not a cycle, and each turn's budget is ~1 slot of
  link time, so the first decider after a quiet spell cannot take everyone's window;
- leave times: pipelined_nows assumes no waiting; a fast micro-batch queues behind a
  slow one on every later stage, so each stage's leave is bounded by the turn ahead's;
- device room for m's next turn: ring.py (the other turns' entries its load would
  meet), less one token of growth for every resident;
- after its turn a rejoined or prefilled request stays a resident while residents fit
  D - 2*C (C: what the link carries in one mean slot), m's residents fit 1/M of that,
  and every committed ring entry still fits, at its predicted peak and each on its own
  (ring.largest: else an entry whose turn runs late could wait for ever); the rest are
  parked. A streamed token serves a turn with ~2 slots of memory, a resident one holds
  it a whole cycle;
- prefill first when a request can be admitted (SGLang's order), with device room for
  its prompt at its turn and host room for its final length (host never overflows).
  With the host full a request is admitted pinned, as stock SGLang would (docs/design.md
  invariant 5: degrade, not fail): no host copy, never parked, its final length
  reserved on the device; the selector does not see pinned rows (it may not park them);
- a round of ageing is one pass over all M micro-batches (rounds_waited = decisions
  // M): counted per decision, hundreds of parked requests with ~10 rejoining a decision
  would all pass A = 16 within a cycle and the greedy would turn into FIFO by age
  (bench_selector.py: A must sit above the natural wait);
- at most `max_candidates` parked requests a decision: those past the ageing bound,
  oldest first (at most a quarter of the cap), then the best value per host token (the
  core's 1 + rounds/A over tokens + 1); a live scheduler must bound its latency too;
- when m would be empty and no other micro-batch has work, the budget does not bind (a
  stall beats an idle pipeline; a window of 0 slots has a core budget of 0).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from itertools import repeat
from time import perf_counter

import numpy as np

from pipemax_sglang.core import (SELECTORS, BudgetPolicy, Candidate, LinkTimeline, PrefetchBudget,
                                 Resident, SelectorInput, SelectorParams, pipelined_nows)

from .costs import Layout
from .machine import Machine
from .requests import PARKED, RUNNING, RequestBook
from .ring import RingBook
from .turn import DECODE, EMPTY, PREFILL, Effects, Turn
from .workload import Workload


class OffloadScheduler:
    def __init__(self, layout: Layout, machine: Machine, workload: Workload, M: int,
                 selector: str, chunk_tokens: int, row_cap: int, margin: float,
                 host_tokens: int, params: SelectorParams | None = None,
                 max_candidates: int | None = 128) -> None:
        if selector not in SELECTORS:
            raise ValueError(f"unknown selector {selector!r}")
        self.layout = layout
        self.P = layout.pp
        self.M = M
        self.book = RequestBook(workload)
        self.sid = [str(r) for r in range(workload.n)]       # the selector's request ids
        self.select = SELECTORS[selector]
        self.params = params or SelectorParams()
        self.max_candidates = max_candidates
        self.D = layout.capacity_tokens
        self.H = host_tokens
        self.chunk = chunk_tokens
        self.row_cap = row_cap
        self.waiting = deque(range(workload.n))
        self.residents: list[list[int]] = [[] for _ in range(M)]
        self.pinned: list[list[int]] = [[] for _ in range(M)]   # no host copy: never parked
        self.is_pinned: set[int] = set()
        self.pin_reserve = 0                   # device tokens pinned requests will still grow
        self.transients: list[list[int]] = [[] for _ in range(M)]
        self.parked: dict[int, int] = {}       # request -> selector decisions when parked
        self.R = 0                             # resident tokens on every stage's ledger
        self.host_used = 0
        self.ring = RingBook(self.P)
        self.transfer = machine.policy_transfer_model()
        self.margin = margin
        self.rate = np.array([self.transfer.h2d_bytes_per_s / k for k in layout.kv_bytes])
        policy = BudgetPolicy(margin_fraction=margin)
        self.budget = PrefetchBudget(
            tuple(LinkTimeline(self.transfer, (0.0,) * M, policy=policy) for _ in range(self.P)),
            layout.kv_bytes)
        self.next_times: list[tuple[float, ...]] = [(0.0,) * self.P for _ in range(M)]
        self.ahead = [0.0] * self.P            # predicted leave of the last turn, per stage
        self.next_rows = [0] * M
        # The selector prices time on the slowest stage (it sets the pipeline's beat).
        self.cost_stage = max(range(self.P), key=lambda s: layout.stages[s].step.predict(64, 32768))
        self.cost = layout.stages[self.cost_stage].step
        self.sel_decisions = 0
        self.m = {"budget_bytes": 0, "plan_bytes": 0, "rejoined": 0, "parked": 0, "forced": 0,
                  "converted": 0, "selector_s": 0.0, "selector_calls": 0, "max_parked": 0,
                  "max_host_tokens": 0, "unbound": 0}
        for r in range(workload.n):
            if workload.prompt[r] + 1 > self.D or min(self.H, self.D) < self.book.final_len(r):
                raise ValueError(f"request {r} ({self.book.final_len(r)} tokens at its end) "
                                 f"fits neither {self.H} host nor {self.D} device tokens")

    def done(self) -> bool:
        return self.book.all_done()

    def backlog(self) -> int:
        """Requests that want a row and have none now: waiting or parked."""
        return len(self.waiting) + len(self.parked)

    def finished(self) -> int:
        return self.book.done_count

    # ---- one decision ---------------------------------------------------------------
    def decide(self, k: int, now: float, prev: Turn | None) -> Turn:
        """The decision (below), and how many parks and rejoins it made (the engine charges
        each stage's CPU for them)."""
        before = self.m["parked"] + self.m["rejoined"]
        turn = self._decide(k, now, prev)
        turn.moves = self.m["parked"] + self.m["rejoined"] - before
        return turn

    def _decide(self, k: int, now: float, prev: Turn | None) -> Turn:
        m = k % self.M
        free, keep, live = self._retire(m, prev)
        if not (live or self.residents[m] or self.pinned[m] or self.parked or self.waiting):
            return self._empty(k, m, Effects(free=free, keep=keep))
        nows = self._nows(now, prev)
        tls = self.budget.stages
        turn = np.array([tl.next_turn(m, t) for tl, t in zip(tls, nows)])
        link = np.array([max(t, tl.link_free_at) for tl, t in zip(tls, nows)])
        keep += self._convert(m, live, now)
        if self.waiting:
            admitted = self._admit(m, self.ring.turn_room(self._base(), turn), now)
            if admitted:
                return self._prefill(k, m, admitted, Effects(free=free, keep=keep),
                                     nows, turn, link)
        return self._decode(k, m, Effects(free=free, keep=keep), nows, turn, link)

    def _retire(self, m: int, prev: Turn | None) -> tuple[int, int, list[int]]:
        """Book m's previous turn: finished requests leave, residents that ran move their
        new token from the ring entry into the residents. Returns (resident tokens freed,
        ring tokens kept, the turn's rejoined/prefilled requests still running)."""
        self.transients[m], trans = [], self.transients[m]
        if prev is None:
            return 0, 0, []
        book = self.book
        ran = set(prev.reqs) if prev.kind == DECODE else set()
        fin = set(book.retire(prev))
        self.ring.drop(prev.k)
        for r in fin:
            if r not in self.is_pinned:
                self.host_used -= book.final_len(r)
        free = keep = 0
        for group in (self.residents[m], self.pinned[m]):
            kept = []
            for r in group:
                if r in ran and r in self.is_pinned:
                    self.pin_reserve -= 1       # the token its admission reserved is made
                if r in fin:                    # its ledger tokens: its KV before this turn
                    held = int(book.kv[r]) - (1 if r in ran else 0)
                    free += held
                    self.R -= held
                else:
                    kept.append(r)
                    if r in ran:
                        keep += 1
                        self.R += 1
            group[:] = kept
        self.is_pinned -= fin
        return free, keep, [r for r in trans if r not in fin]

    def _empty(self, k: int, m: int, effects: Effects) -> Turn:
        if self.next_rows[m]:
            self.budget = self.budget.with_slot_time(m, (0.0,) * self.P)
            self.next_times[m], self.next_rows[m] = (0.0,) * self.P, 0
        return Turn(k, m, EMPTY, (), (0.0,) * self.P, effects=effects)

    def _nows(self, now: float, prev: Turn | None) -> tuple[float, ...]:
        """When m's current turn leaves each stage. pipelined_nows(now, its slot times)
        assumes it flows through without waiting; but a fast micro-batch queues behind a
        slower one ahead of it on every later stage, and then the windows and budgets of
        the later stages would be predicted too early (and come out 0). So: the core's
        formula, bounded below by the turn ahead's predicted leave on each stage."""
        times = prev.times if prev is not None else (0.0,) * self.P
        flow = pipelined_nows(now, times)
        out, t = [], now
        for s in range(self.P):
            t = now if s == 0 else max(t, self.ahead[s]) + times[s]
            out.append(max(t, flow[s]))
        self.ahead = out
        return tuple(out)

    # ---- memory ----------------------------------------------------------------------
    def _growth(self) -> int:
        """Resident tokens that appear before m's next turn ends: every resident's new
        token moves from its turn's ring entry into the residents (one turn each at most)."""
        return sum(map(len, self.residents)) + sum(map(len, self.pinned))

    def _base(self) -> int:
        return self.D - self.R - self._growth() - self.pin_reserve

    def _land_by(self, nows: tuple[float, ...], turn: np.ndarray) -> np.ndarray:
        """When m's load must have landed: its turn less the budget's margin (the same
        fraction of the window that the core budget keeps free)."""
        return turn - self.margin * (turn - np.asarray(nows))

    def _stream_reserve(self) -> int:
        """Device tokens kept for the stream: twice what the binding stage's link carries
        in one mean slot (the turn computing and the one loading: docs/design.md's M*R + 2*C <= D
        with C what a saturated link brings a turn)."""
        best = None
        for s in range(self.P):
            ts = [t[s] for t in self.next_times if t[s] > 0.0]
            slot = sum(ts) / len(ts) if ts else self.layout.stages[s].step.a
            c = self.transfer.h2d_bytes_in(slot) // self.layout.kv_bytes[s]
            best = c if best is None else min(best, c)
        return 2 * int(best)

    def _convert(self, m: int, live: list[int], now: float) -> int:
        """Keep some of last turn's streamed requests as residents (smallest first: most
        rows a token), park the rest (module note). Returns the ring tokens kept."""
        book = self.book
        pin = [r for r in live if r in self.is_pinned]
        if pin:                             # admitted without a host copy: they stay
            live = [r for r in live if r not in self.is_pinned]
            self.pinned[m].extend(pin)
            kept = sum(int(book.kv[r]) for r in pin)
            self.R += kept
            return kept + self._convert(m, live, now)
        if not live:
            return 0
        live.sort(key=lambda r: (int(book.kv[r]), r))
        target = self.D - self._stream_reserve()
        room = min(target - self.R, self._base() - max(self.ring.peak(now), self.ring.largest()))
        share = target // self.M - sum(int(book.kv[r]) + 1 for r in self.residents[m])
        room = min(room, share) - len(self.residents[m])
        conv = 0
        for r in live:
            need = int(book.kv[r]) + 1
            if need <= room:
                room -= need
                conv += int(book.kv[r])
                self.residents[m].append(r)
                self.m["converted"] += 1
            else:
                self._park(r)
        self.R += conv
        return conv

    def _park(self, r: int) -> None:
        self.book.where[r] = PARKED
        self.parked[r] = self.sel_decisions
        self.m["parked"] += 1

    # ---- prefill -----------------------------------------------------------------------
    def _admit(self, m: int, room: int, now: float) -> list[int]:
        """FCFS while the prompts fit the device at m's turn. A request gets a host copy
        if the host has room; if not (host full: docs/design.md invariant 5, degrade to SGLang), it
        is admitted pinned, as stock SGLang would, if the device can hold it to its end
        (its whole final length reserved, so it never needs a retraction)."""
        book = self.book
        chunk = self.chunk
        out: list[int] = []
        pin_room = None
        rows = len(self.residents[m]) + len(self.pinned[m])
        while self.waiting and rows + len(out) < self.row_cap:
            r = self.waiting[0]
            ext = book.prefill_len(r)
            if ext > room or (ext > chunk and out):
                break
            fin = book.final_len(r)
            if self.host_used + fin <= self.H:
                self.host_used += fin
            else:
                if pin_room is None:
                    pin_room = self._base() - max(self.ring.peak(now), self.ring.largest())
                if fin > pin_room:
                    break
                pin_room -= fin
                self.is_pinned.add(r)
                self.pin_reserve += int(book.out[r]) - 1
            self.waiting.popleft()
            out.append(r)
            room -= ext
            chunk -= ext
            if chunk <= 0:
                break
        self.m["max_host_tokens"] = max(self.m["max_host_tokens"], self.host_used)
        return out

    def _prefill(self, k, m, ids, effects, nows, turn, link) -> Turn:
        book = self.book
        lens = [book.prefill_len(r) for r in ids]
        for r in ids:
            book.where[r] = RUNNING
        self.transients[m] = list(ids)
        tokens = sum(lens)
        times = self.layout.prefill_times(tokens, len(ids), sum(x * x for x in lens))
        rel = self._commit(k, m, 0, tokens, times, len(ids), nows, turn, link)
        return Turn(k, m, PREFILL, tuple(ids), times, rows=len(ids), tokens=tokens, ring=tokens,
                    d2h=tokens, effects=effects, deps=int(book.last[ids].max()), release=rel)

    # ---- decode: the core's budget and selector ----------------------------------------
    def _decode(self, k, m, effects, nows, turn, link) -> Turn:
        book = self.book
        res = self.residents[m]
        host = 0
        if self.parked or res:
            row_cap = max(0, self.row_cap - len(self.pinned[m]))
            pb = self.budget.budget(m, nows)
            budget_bytes = pb.selector_bytes
            others = [j for j in range(self.M) if j != m]
            if not res and not self.pinned[m] and all(self.next_rows[j] == 0 for j in others):
                budget_bytes = (self.D + 1) * pb.kv_bytes_per_token   # idle pipeline
                self.m["unbound"] += 1
            room = self.ring.load_room(self._base(), self._land_by(nows, turn), link,
                                       self.transfer.latency_s, self.rate)
            inp = SelectorInput(
                self._candidates(), tuple(Resident(self.sid[r], int(book.kv[r])) for r in res),
                budget_bytes=int(budget_bytes), kv_bytes_per_token=pb.kv_bytes_per_token,
                device_tokens_free=room, row_cap=row_cap, cost=self.cost,
                other_step_times=tuple(self.next_times[j][self.cost_stage] for j in others),
                other_rows=tuple(self.next_rows[j] for j in others), num_stages=self.P,
                params=self.params)
            t0 = perf_counter()
            plan = self.select(inp)
            self.m["selector_s"] += perf_counter() - t0
            self.m["selector_calls"] += 1
            self.sel_decisions += 1
            effects = effects._replace(free=effects.free + self._apply_plan(m, plan, budget_bytes))
            host = plan.host_tokens
        reqs = self.residents[m] + self.pinned[m] + self.transients[m]
        rows = len(reqs)
        if rows == 0:
            return self._empty(k, m, effects)
        kv = int(book.kv[reqs].sum())
        times = self.layout.decode_times(rows, kv + rows)
        ring = host + rows              # rejoined KV + every member's new token
        rel = self._commit(k, m, host, ring, times, rows, nows, turn, link)
        return Turn(k, m, DECODE, tuple(reqs), times, rows=rows, sum_ctx=kv + rows, ring=ring,
                    h2d=host, d2h=rows, deps=int(book.last[reqs].max()), effects=effects,
                    release=rel)

    def _candidates(self) -> tuple[Candidate, ...]:
        """Parked requests as the selector sees them (module note on max_candidates)."""
        book = self.book
        sd = self.sel_decisions
        ids = np.fromiter(self.parked.keys(), dtype=np.int64, count=len(self.parked))
        at = np.fromiter(self.parked.values(), dtype=np.int64, count=len(self.parked))
        rounds = (sd - at) // self.M          # rounds: passes over all micro-batches
        kv = book.kv[ids]
        cap = self.max_candidates
        if cap is not None and ids.size > cap:
            a = self.params.force_after_rounds
            aged = np.flatnonzero(rounds >= a)
            if aged.size > cap // 4:             # the oldest: the frame takes them in that order
                aged = aged[np.lexsort((ids[aged], -rounds[aged]))[:cap // 4]]
            key = (1.0 + rounds / a) / (kv + 1.0)
            key[rounds >= a] = -np.inf
            rest = cap - aged.size
            pick = np.argpartition(-key, rest - 1)[:rest]
            pick = np.union1d(pick[np.isfinite(key[pick])], aged)
            ids, rounds, kv = ids[pick], rounds[pick], kv[pick]
        ids_l, kv_l = ids.tolist(), kv.tolist()
        sid = self.sid
        return tuple(map(Candidate, [sid[r] for r in ids_l], kv_l, kv_l, repeat((), len(ids_l)),
                         rounds.tolist(), ids_l))

    def _apply_plan(self, m: int, plan, budget_bytes: int) -> int:
        """Park and rejoin as planned; returns the resident tokens the parks free."""
        book = self.book
        parked = 0
        if plan.park:
            out = {int(x) for x in plan.park}
            keep = []
            for r in self.residents[m]:
                if r in out:
                    kvr = int(book.kv[r])
                    parked += kvr
                    self.R -= kvr
                    self._park(r)
                else:
                    keep.append(r)
            self.residents[m] = keep
        rejoin = [int(x) for x in plan.rejoin]
        for r in rejoin:
            del self.parked[r]
            book.where[r] = RUNNING
        self.transients[m] = rejoin
        self.m["rejoined"] += len(rejoin)
        self.m["forced"] += len(plan.forced)
        self.m["budget_bytes"] += budget_bytes
        self.m["plan_bytes"] += plan.bytes
        self.m["max_parked"] = max(self.m["max_parked"], len(self.parked))
        return parked

    def _commit(self, k, m, host, ring, times, rows, nows, turn, link) -> tuple[float, ...] | None:
        """Commit m's next turn: the core budget (its window slides), the load's as-late-
        as-possible start on each stage (returned: the engine's release times), the core
        timeline told when the link is really free, the ring entry's predicted interval."""
        budget = self.budget.commit(m, host, nows).with_slot_time(m, times)
        self.next_times[m], self.next_rows[m] = times, rows
        if not ring:
            self.budget = budget
            return None
        if host:
            lat = self.transfer.latency_s
            dur = lat + host * np.asarray(self.layout.kv_bytes) / self.transfer.h2d_bytes_per_s
            starts = np.maximum(link, self._land_by(nows, turn) - dur)
            budget = dataclasses.replace(budget, stages=tuple(
                tl.with_link_free_at(max(tl.link_free_at, float(st + d)))
                for tl, st, d in zip(budget.stages, starts, dur)))
        else:
            starts = turn
        self.budget = budget
        rel = tuple(float(x) for x in starts)
        self.ring.add(k, ring, rel, tuple(float(x) for x in turn + np.asarray(times)))
        return rel

    def metrics(self) -> dict:
        out = dict(self.m)
        out["budget_utilisation"] = (self.m["plan_bytes"] / self.m["budget_bytes"]
                                     if self.m["budget_bytes"] else 0.0)
        return out
