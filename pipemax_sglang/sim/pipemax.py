"""PipeMax in the simulator: stock SGLang's mechanics (recompute.py) with the product's policy.

Every PipeMax decision here is the core's, the objects the live stage (sglang/stage.py)
calls: `core.Decider` at the end of each turn, `core.admission` before SGLang's admission,
`core.park_order` where a decode step does not fit. Nothing of the policy lives in sim/:
this module only keeps the books and turns them into timed turns for the engine.

The engine decides turn k when turn k - M (the same micro-batch's previous turn) leaves
stage 0 (engine.py), M - 1 slots before turn k runs. The books below are kept in decision
order, which is the live loop's order (SGLang schedules turn k just before launching it):

    1  retire k - M              its members made a token; finished ones leave (a member
                                 parked after its turn leaves the pool and the host)
    2  issue the rejoins of k+1  plan(k + 1)'s rejoins take their device room now, the slot
                                 before their turn (live: the prefetch issued at the ingest
                                 before turn k, stage.py issue_prefetches); device room
                                 permitting, else they stay parked and are candidates again
    3  SGLang's choice for k     a prefill of admitted requests where core.admission allows
                                 and SGLang's PrefillAdder admits (recompute.py), else a
                                 decode; a decode step that does not fit parks in
                                 core.park_order (host permitting), then SGLang retracts
    4  plan(k + M)               Decider.decide on the turn as launched; its parks leave the
                                 books at once (live: parked after the turn's forward), and
                                 are candidates once turn k is retired

So a streamed row holds device room from the slot before its turn until its turn is done,
as live: the device holds every micro-batch's residents and about two turns' streams
(core/capacity.py), not M of them.

On each stage's ledger (engine.py, ledger.py) the same changes land at the stage's own
times: a turn's rejoined KV is a ring entry, allocated when its load starts (no earlier than
the slot before the turn, and after every earlier turn on the stage has reserved its
tokens), released when the turn leaves except what the next decision keeps resident; a
parked row's resident tokens are freed after its turn's write-through (Effects of turn
k + M); a turn's own tokens are reserved when it starts, and it waits for that room (the
books run ahead of the write-throughs that free it). Zero ledger violations is a test.

Memory: a parked request's KV is off the device once parked (live, it stays until evicted,
so a rejoin may find it there and load nothing: the simulator charges every rejoin its
whole context, as the decider's budget does). The scheduler's CPU price of moves is the
engine's (Machine.move_price).
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from pipemax_sglang.core.admission import Admission, AdmissionView, admission, park_order
from pipemax_sglang.core.decider import Decider, DeciderConfig, PoolEntry, TurnPlan, TurnView

from .costs import Layout
from .machine import Machine
from .recompute import CLIP_MAX_NEW, RecomputeScheduler
from .requests import PARKED, RUNNING
from .turn import DECODE, Turn
from .workload import Workload


@dataclass
class _Parked:
    since: int                      # decision turn it was parked at
    arrival: int                    # park order (the decider's tie break)
    rounds: int = 0
    ready: bool = True              # parked after its turn: a candidate once that turn retired


class PipeMaxScheduler(RecomputeScheduler):
    def __init__(self, layout: Layout, machine: Machine, workload: Workload, M: int,
                 selector: str, chunk_tokens: int, row_cap: int, margin: float,
                 host_tokens: int, max_candidates: int | None = 128,
                 stream: str = "auto") -> None:
        super().__init__(layout, workload, M, chunk_tokens, row_cap)
        self.H = host_tokens
        self.P = layout.pp
        slowest = max(layout.stages, key=lambda s: s.step.predict(64, 32768))
        self.decider = Decider(
            DeciderConfig(selector=selector, stream=stream, budget_margin=margin,
                          max_candidates=max_candidates),
            kv_bytes_per_token=max(layout.kv_bytes), num_stages=self.P,
            link_bytes_per_s=machine.policy_transfer_model().h2d_bytes_per_s,
            moves_serialize=machine.moves_serialize, prior=slowest.step)
        self.move_price = machine.move_price
        self.pool: dict[int, _Parked] = {}
        self.plans: dict[int, TurnPlan] = {}        # target turn -> the plan deciding it
        # the ledger's view (Effects, ring): for turn k, its rejoined rows and the KV each
        # loaded (its ring entry); resident tokens to free with turn k's Effects (rows parked
        # after turn k - M)
        self.ring_kv: dict[int, dict[int, int]] = {}
        self.pending_free: dict[int, int] = {}
        self._k = 0                                  # the turn being decided
        self.host_used = 0
        self.admit_mbs = M
        self.times: dict[int, tuple[float, ...]] = {}    # decided turns' step times
        self.m = {"budget_bytes": 0, "plan_bytes": 0, "loaded_tokens": 0, "rejoined": 0,
                  "parked": 0, "forced": 0, "deferred": 0, "selector_s": 0.0,
                  "max_parked": 0, "max_host_tokens": 0, "host_full": 0}
        for r in range(workload.n):
            if min(self.H, self.D) < self.book.final_len(r):
                raise ValueError(f"request {r} ({self.book.final_len(r)} tokens at its end) "
                                 f"fits neither {self.H} host nor {self.D} device tokens")

    def backlog(self) -> int:
        return len(self.waiting) + len(self.pool)

    # ---- one decision --------------------------------------------------------------------
    def decide(self, k: int, now: float, prev: Turn | None) -> Turn:
        m = k % self.M
        self._k = k
        before = self.m["parked"] + self.m["rejoined"]
        freed = self._retire(m, prev)
        keep = self._keep(k - self.M, m)
        freed += self.pending_free.pop(k, 0)
        for t in (k, k + 1):
            self._issue(t, now)
        turn = self._turn(k, m, freed, now)
        turn.effects = turn.effects._replace(keep=keep)
        turn.moves = self.m["parked"] + self.m["rejoined"] - before
        self.times[k] = turn.times
        self.times.pop(k - 2 * self.M, None)
        self._plan_next(k, m, turn, now)
        if m == self.M - 1:
            for p in self.pool.values():
                p.rounds += 1
        return turn

    def _retire(self, m: int, prev: Turn | None) -> int:
        """Step 1. Returns the resident device tokens (the ledger's) the finished freed."""
        if prev is None:
            return 0
        ring = self.ring_kv.get(prev.k, {})
        fin = self.book.retire(prev)
        if prev.kind == DECODE:
            for r in prev.reqs:
                p = self.pool.get(r)
                if p is not None:
                    p.ready = True
        if not fin:
            return 0
        freed = 0
        for r in fin:
            kv = int(self.book.kv[r])
            p = self.pool.pop(r, None)
            if p is not None:            # parked after its last turn: off the device already
                self.host_used -= kv
                continue
            self.used -= kv
            freed += 1 if r in ring else kv      # a rejoined row's context is its ring entry's
        fs = set(fin)
        self.running[m] = [r for r in self.running[m] if r not in fs]
        return freed

    def _keep(self, j: int, m: int) -> int:
        """Of turn j's ring entry, the KV of the rejoined rows that stay on the device."""
        ring = self.ring_kv.pop(j, {})
        here = set(self.running[m])
        return sum(kv for r, kv in ring.items() if r in here)

    def _issue(self, t: int, now: float) -> None:
        """Step 2: plan(t)'s rejoins take device room, the slot before turn t; what they do
        not load (a rejoin deferred) goes back to the link, as live (Decider.loaded)."""
        plan = self.plans.pop(t, None)
        if plan is None:
            return
        if plan.admit_mbs:
            self.admit_mbs = plan.admit_mbs
        self.m["budget_bytes"] += plan.budget_bytes
        self.m["plan_bytes"] += plan.plan_bytes
        ring = self.ring_kv.setdefault(t, {})
        loaded = 0
        for rid in plan.rejoin:
            r = int(rid)
            p = self.pool.get(r)
            if p is None or not p.ready:
                continue
            kv = int(self.book.kv[r])
            if self.used + kv > self.D:
                self.m["deferred"] += 1            # stays parked: a candidate again
                continue
            del self.pool[r]
            self.host_used -= kv
            self.book.where[r] = RUNNING
            self.used += kv
            self.running[t % self.M].append(r)
            ring[r] = kv
            self.m["rejoined"] += 1
            self.m["loaded_tokens"] += kv
            loaded += kv
        if plan.plan_bytes:
            self.decider.loaded(plan.turn, loaded, now)

    def _park_after_turn(self, k: int, m: int, turn: Turn, park: tuple[str, ...]) -> None:
        """Step 4's parks: decode rows of turn k leave the books as soon as it is launched;
        on the stages their resident tokens (a rejoined row's: the turn's new one) are freed
        after the turn, with turn k + M's Effects; they are candidates once k is retired."""
        if turn.kind != DECODE or not park:
            return
        out = {int(r) for r in park} & set(turn.reqs)
        if not out:
            return
        ring = self.ring_kv.get(k, {})
        keep = []
        freed = 0
        for r in self.running[m]:
            if r in out and self._park(r, k, extra=1, ready=False):
                freed += 1 if r in ring else int(self.book.kv[r]) + 1
            else:
                keep.append(r)
        self.running[m] = keep
        if freed:
            self.pending_free[k + self.M] = self.pending_free.get(k + self.M, 0) + freed

    def _park(self, r: int, k: int, extra: int = 0, ready: bool = True) -> bool:
        """Book r's KV (and `extra` tokens its running turn makes) on host; False if the host
        tier has no room."""
        kv = int(self.book.kv[r]) + extra
        if self.host_used + kv > self.H:
            self.m["host_full"] += 1
            return False
        self.host_used += kv
        self.used -= kv
        self.book.where[r] = PARKED
        self.pool[r] = _Parked(k, self.m["parked"], ready=ready)
        self.m["parked"] += 1
        self.m["max_parked"] = max(self.m["max_parked"], len(self.pool))
        self.m["max_host_tokens"] = max(self.m["max_host_tokens"], self.host_used)
        return True

    def _turn(self, k: int, m: int, freed: int, now: float) -> Turn:
        """Step 3: SGLang's choice for turn k, with PipeMax's admission rule and parks."""
        if self.waiting and self._admissible(k, m):
            ids = self._admit(m)
            if ids:
                turn = self._prefill(k, m, ids, freed)
                return self._with_load(turn, k, now)
        reqs = self.running[m]
        if reqs and self.used + len(reqs) > self.D:
            freed += self._make_room(k, m)
        turn = self._decode(k, m, freed)
        return self._with_load(turn, k, now)

    def _admissible(self, k: int, m: int) -> bool:
        rule = admission(AdmissionView(
            turn=k, num_mbs=self.M, admit_mbs=self.admit_mbs, prefill_in_progress=False,
            parked=len(self.pool), running_rows=len(self.running[m]),
            inflight_rows=sum(map(len, self.running)) + len(self.pool), row_cap=self.row_cap,
            oldest_wait=max((p.rounds for p in self.pool.values()), default=0)))
        if rule is Admission.IF_HOST_ROOM:
            return self.H - self.host_used > self.D // 20
        return rule is Admission.ADMIT

    def _make_room(self, k: int, m: int) -> int:
        """A decode step that does not fit: park in core.park_order while the host has room;
        what still does not fit, SGLang retracts (recompute.py). Returns the resident tokens
        (the ledger's) freed: a row rejoined for this turn leaves its ring entry instead."""
        book = self.book
        reqs = self.running[m]
        ring = self.ring_kv.get(k, {})
        left = [int(min(book.out[r] - book.gen[r], CLIP_MAX_NEW)) for r in reqs]
        sglang = sorted(range(len(reqs)), key=lambda i: (int(book.gen[reqs[i]]),
                                                          -int(book.prompt[reqs[i]]), -reqs[i]),
                        reverse=True)
        keep = park_order(sglang, left)
        freed = 0
        gone = set()
        while keep and self.used + len(keep) > self.D:
            i = keep[-1]
            r = reqs[i]
            if not self._park(r, k):
                break
            keep.pop()
            gone.add(i)
            freed += int(book.kv[r]) if ring.pop(r, None) is None else 0
        self.running[m] = [r for i, r in enumerate(reqs) if i not in gone]
        if self.running[m] and self.used + len(self.running[m]) > self.D:
            freed += self._retract(m)
        return freed

    def _retract(self, m: int) -> int:
        """SGLang's retraction (recompute.py); returns the resident tokens (the ledger's) it
        freed: a row rejoined for this turn leaves its ring entry instead."""
        ring = self.ring_kv.get(self._k, {})
        before = {r: int(self.book.kv[r]) for r in self.running[m]}
        super()._retract(m)
        freed = 0
        for r in set(before) - set(self.running[m]):
            freed += before[r] if ring.pop(r, None) is None else 0
        return freed

    def _with_load(self, turn: Turn, k: int, now: float) -> Turn:
        """The rejoins' KV: turn k's ring entry on every stage, loaded over the H2D link no
        earlier than the slot before the turn (the live issue point)."""
        loaded = sum(self.ring_kv.get(k, {}).values())
        if not loaded:
            return turn
        turn.ring = loaded
        turn.h2d = loaded
        ahead = sum(self.times[j][0] for j in range(k - self.M + 1, k - 1) if j in self.times)
        turn.release = (now + ahead,) * self.P
        return turn

    # ---- step 4: the decider -----------------------------------------------------------------
    def _plan_next(self, k: int, m: int, turn: Turn, now: float) -> None:
        book = self.book
        decode = list(turn.reqs) if turn.kind == DECODE else []
        # turn k + 1's rejoins were issued (step 2): live, they are prefetching, not yet in
        # their micro-batch's running batch, and the view shows them so (M = 1: that
        # micro-batch is this one, and they ran in turn k's decode)
        nxt = (k + 1) % self.M
        there = set(self.running[nxt]) if self.M > 1 else set()
        pre = {r: int(book.kv[r]) for r in self.ring_kv.get(k + 1, {}) if r in there}
        running = [[r for r in x if r not in pre] if j == nxt and pre else x
                   for j, x in enumerate(self.running)]
        rows = tuple(len(x) for x in running)
        ctx = tuple(int(book.kv[x].sum()) + (len(x) if j == m and decode else 0)
                    for j, x in enumerate(running))
        residents = tuple(int(book.kv[r]) for r in running[m] if r not in set(decode))
        planned = {rid: t for t, p in self.plans.items() for rid in p.rejoin}
        pool = [PoolEntry(str(r), int(book.kv[r]), p.rounds, p.arrival)
                for r, p in self.pool.items() if p.ready]
        view = TurnView(
            turn=k, mb=m, num_mbs=self.M, decode_rids=tuple(str(r) for r in decode),
            next_residents=residents, mb_rows=rows, mb_ctx=ctx,
            inflight_tokens=self.used + self.host_used, device_tokens=self.D,
            waiting=len(self.waiting), row_cap=self.row_cap,
            decode_ctx=tuple(int(book.kv[r]) + 1 for r in decode), move_s=self.move_price.move_s,
            move_turn_s=self.move_price.turn_s, now=now,
            prefetching=len(pre), prefetching_tokens=sum(pre.values()) + len(pre),
            prefetch_targets=((k + 1, sum(pre.values()) + len(pre)),) if pre else ())
        t0 = perf_counter()
        plan = self.decider.decide(view, pool, planned)
        self.m["selector_s"] += perf_counter() - t0
        if turn.kind == DECODE:
            self.decider.observe_step(turn.rows, turn.sum_ctx, max(turn.times))
        self._park_after_turn(k, m, turn, plan.park)
        if plan.park or plan.rejoin or plan.admit_mbs != self.admit_mbs:
            self.plans[plan.target_turn] = plan

    def metrics(self) -> dict:
        out = dict(self.m)
        out.update(super().metrics())
        out["budget_utilisation"] = (self.m["plan_bytes"] / self.m["budget_bytes"]
                                     if self.m["budget_bytes"] else 0.0)
        return out
