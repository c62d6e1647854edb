"""StageModel: one SGLang pipeline stage with PipeMax inside, as plain bookkeeping, turn by turn.

What a live stage does (sglang/stage.py inside SGLang's PP loop), without SGLang: the
micro-batches' rows, the parked pool, the device and host KV tokens, SGLang's admission
and retraction, and every PipeMax rule applied at the same loop point as live:

    ingest t      stage 0's plan from the end of turn t-1 arrives: its parks apply, its
                  rejoins become tasks; prefetches due now are issued (device room permitting)
    turn t        rejoins prefetched for t join micro-batch t % M; then SGLang's choice:
                  a prefill of admitted requests (admission(): core/admission.py) or a
                  decode, after parking for room (park_order()) where a step does not fit
    end of t      stage 0 decides (core/decider.py) -> the plan for ingest t+1

Every decision is the core's; this model only keeps the books, so the liveness property
tests (tests/core/test_liveness.py) and the simulator drive the product's policy. Time is a
turn counter times a nominal step unless the caller gives a clock.

Invariants checked at every turn (AssertionError if broken):
  - device tokens in use (running rows, their growth, prefetched rows) never exceed D;
  - host tokens of parked and prefetched requests never exceed H;
  - a request is in exactly one place: waiting, a micro-batch, the pool, or prefetched.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pipemax_sglang.core.admission import Admission, AdmissionView, admission, park_order
from pipemax_sglang.core.decider import Decider, PoolEntry, TurnPlan, TurnView


@dataclass
class Req:
    rid: str
    prompt: int
    max_new: int
    arrival: int = 0
    out: int = 0                     # tokens generated so far
    parked_since: int | None = None  # turn it was parked (None: not parked)
    longest_wait: int = 0            # most turns spent parked in one stretch
    finished_turn: int | None = None
    recomputed: int = 0

    @property
    def kv(self) -> int:
        return self.prompt + self.out

    @property
    def left(self) -> int:
        return self.max_new - self.out


@dataclass
class Parked:
    req: Req
    rounds_waited: int = 0


@dataclass
class TurnRecord:
    turn: int
    mb: int
    kind: str                        # "prefill", "decode" or "idle"
    rows: int
    ctx: int
    plan: TurnPlan | None
    view: TurnView | None = None
    pool_kv: dict | None = None      # rid -> KV tokens of the pool the decider saw


@dataclass
class StageModel:
    decider: Decider
    num_mbs: int                     # M
    device_tokens: int               # D
    host_tokens: int                 # H
    row_cap: int
    new_token_ratio: float = 0.5     # SGLang's admission reserve per running row's left tokens
    move_s: float | None = None      # the scheduler's seconds per move (CPU pricing)
    move_turn_s: float = 0.0         # ... and per turn that moves
    clock: Callable[[int], float] = lambda t: 0.01 * t
    waiting: deque = field(default_factory=deque)
    turn: int = 0
    counts: dict = field(default_factory=lambda: {"parks": 0, "rejoins": 0, "deferred": 0,
                                                  "recomputes": 0, "host_full": 0})

    def __post_init__(self) -> None:
        self.mbs: list[list[Req]] = [[] for _ in range(self.num_mbs)]
        self.pool: dict[str, Parked] = {}
        self.tasks: list[TurnPlan] = []
        self.prefetched: dict[int, list[Req]] = {}
        self.outbox: list[TurnPlan] = []
        self.admit_mbs = self.num_mbs
        self.finished: list[Req] = []

    # ---- books -------------------------------------------------------------------------
    def add(self, req: Req) -> None:
        self.waiting.append(req)

    def prefetched_reqs(self) -> list[Req]:
        return [r for rs in self.prefetched.values() for r in rs]

    def device_used(self) -> int:
        return sum(r.kv for rows in self.mbs for r in rows) + sum(r.kv for r in self.prefetched_reqs())

    def host_used(self) -> int:
        return sum(p.req.kv for p in self.pool.values()) + sum(r.kv for r in self.prefetched_reqs())

    def live(self) -> int:
        return sum(map(len, self.mbs)) + len(self.pool) + len(self.prefetched_reqs())

    def done(self) -> bool:
        return not (self.waiting or self.live())

    def _check(self) -> None:
        assert self.device_used() <= self.device_tokens, (self.turn, self.device_used())
        assert self.host_used() <= self.host_tokens, (self.turn, self.host_used())
        places = ([r.rid for r in self.waiting] + [r.rid for rows in self.mbs for r in rows]
                  + list(self.pool) + [r.rid for r in self.prefetched_reqs()])
        assert len(places) == len(set(places)), f"a request in two places at turn {self.turn}"

    # ---- one turn ------------------------------------------------------------------------
    def step(self) -> TurnRecord:
        mb = self.turn % self.num_mbs
        self._ingest()
        self._rejoin(mb)
        rec = self._run(mb)
        self._check()
        if mb == self.num_mbs - 1:
            for p in self.pool.values():
                p.rounds_waited += 1
        self.turn += 1
        return rec

    def _ingest(self) -> None:
        for plan in self.outbox:
            if plan.admit_mbs:
                self.admit_mbs = plan.admit_mbs
            self._park_after_forward(plan)
            if plan.rejoin:
                self.tasks.append(plan)
        self.outbox = []
        due = [t for t in self.tasks if t.issue_turn <= self.turn]
        self.tasks = [t for t in self.tasks if t.issue_turn > self.turn]
        for plan in due:
            for rid in plan.rejoin:
                p = self.pool.get(rid)
                if p is None:
                    continue
                if self.device_used() + p.req.kv > self.device_tokens:
                    self.counts["deferred"] += 1          # stays parked: a candidate again
                    continue
                del self.pool[rid]
                self.prefetched.setdefault(plan.target_turn, []).append(p.req)

    def _park_after_forward(self, plan: TurnPlan) -> None:
        rows = self.mbs[plan.mb]
        chosen = [r for r in rows if r.rid in set(plan.park)]
        for r in chosen:
            if self.host_used() + r.kv > self.host_tokens:
                self.counts["host_full"] += 1
                continue
            rows.remove(r)
            self._to_pool(r)

    def _to_pool(self, r: Req) -> None:
        r.parked_since = self.turn
        self.pool[r.rid] = Parked(r)
        self.counts["parks"] += 1

    def _rejoin(self, mb: int) -> None:
        for r in self.prefetched.pop(self.turn, []):
            r.longest_wait = max(r.longest_wait, self.turn - (r.parked_since or self.turn))
            r.parked_since = None
            self.mbs[mb].append(r)
            self.counts["rejoins"] += 1

    def _admissible(self, mb: int) -> bool:
        rule = admission(AdmissionView(
            turn=self.turn, num_mbs=self.num_mbs, admit_mbs=self.admit_mbs,
            prefill_in_progress=False, parked=len(self.pool), running_rows=len(self.mbs[mb]),
            inflight_rows=self.live(), row_cap=self.row_cap,
            oldest_wait=max((p.rounds_waited for p in self.pool.values()), default=0)))
        if rule is Admission.IF_HOST_ROOM:
            return self.host_tokens - self.host_used() > self.device_tokens // 20
        return rule is Admission.ADMIT

    def _admit(self, mb: int) -> list[Req]:
        """SGLang's PrefillAdder, simplified: it reserves future tokens only for this
        micro-batch's own running rows (new_token_ratio of what each may still generate)."""
        if not self.waiting or not self._admissible(mb):
            return []
        rows = self.mbs[mb]
        reserved = sum(int(self.new_token_ratio * r.left) for r in rows)
        free = self.device_tokens - self.device_used() - reserved
        taken = []
        while self.waiting and len(rows) + len(taken) < self.row_cap:
            w = self.waiting[0]
            need = w.kv + int(self.new_token_ratio * w.left)
            if need > free:
                break
            free -= need
            taken.append(self.waiting.popleft())
        return taken

    def _run(self, mb: int) -> TurnRecord:
        new = self._admit(mb)
        if new:
            for r in new:
                r.out += 1                                   # prefill samples a token
            self.mbs[mb].extend(r for r in new if not self._finish(r))
            rec = TurnRecord(self.turn, mb, "prefill", len(new), sum(r.kv for r in new), None)
            self._decide(mb, rec, decode=[], joined=new)
            return rec
        rows = self.mbs[mb]
        if not rows:
            rec = TurnRecord(self.turn, mb, "idle", 0, 0, None)
            self._decide(mb, rec, decode=[], joined=[])
            return rec
        self._make_decode_room(mb)
        rows = self.mbs[mb]
        for r in rows:
            r.out += 1
        self.mbs[mb] = [r for r in rows if not self._finish(r)]
        rec = TurnRecord(self.turn, mb, "decode", len(rows), sum(r.kv for r in rows), None)
        self._decide(mb, rec, decode=[r for r in rows if r.finished_turn is None], joined=[])
        return rec

    def _finish(self, r: Req) -> bool:
        if r.left > 0:
            return False
        r.finished_turn = self.turn
        self.finished.append(r)
        return True

    def _make_decode_room(self, mb: int) -> None:
        """A step that does not fit parks in park_order; with the host full, SGLang's
        retraction (recompute), down to the last request (stage.py)."""
        rows = self.mbs[mb]

        def fits(kept: list[int]) -> bool:
            others = self.device_used() - sum(r.kv for r in rows)
            return others + sum(rows[i].kv + 1 for i in kept) <= self.device_tokens

        keep = park_order(list(range(len(rows))), [r.left for r in rows])
        gone = set()
        while keep and not fits(keep):
            i = keep.pop()
            r = rows[i]
            gone.add(i)
            if self.host_used() + r.kv > self.host_tokens:
                self.counts["host_full"] += 1
                self.counts["recomputes"] += 1
                r.recomputed += 1
                self.waiting.appendleft(r)
            else:
                self._to_pool(r)
        self.mbs[mb] = [r for i, r in enumerate(rows) if i not in gone]

    def _decide(self, mb: int, rec: TurnRecord, decode: list[Req], joined: list[Req]) -> None:
        decode_rids = tuple(r.rid for r in decode)
        rows = tuple(len(x) for x in self.mbs)
        ctx = tuple(sum(r.kv for r in x) for x in self.mbs)
        residents = tuple(r.kv for r in self.mbs[mb] if r.rid not in decode_rids)
        view = TurnView(
            turn=self.turn, mb=mb, num_mbs=self.num_mbs, decode_rids=decode_rids,
            next_residents=residents, mb_rows=rows, mb_ctx=ctx,
            inflight_tokens=sum(ctx) + self.host_used(), device_tokens=self.device_tokens,
            waiting=len(self.waiting), row_cap=self.row_cap,
            prefetching=len(self.prefetched_reqs()),
            prefetching_tokens=sum(r.kv + 1 for r in self.prefetched_reqs()),
            decode_ctx=tuple(r.kv for r in decode),
            move_s=self.move_s, move_turn_s=self.move_turn_s, now=self.clock(self.turn))
        planned = {rid for t in self.tasks for rid in t.rejoin}
        pool = [PoolEntry(p.req.rid, p.req.kv, p.rounds_waited, p.req.arrival)
                for p in self.pool.values() if p.req.rid not in decode_rids]
        plan = self.decider.decide(view, pool, planned)
        rec.plan, rec.view, rec.pool_kv = plan, view, {p.rid: p.kv_len for p in pool}
        if plan.park or plan.rejoin or plan.admit_mbs != self.admit_mbs:
            self.outbox.append(plan)
