"""PipeMax in the simulator: stock SGLang's mechanics (recompute.py) with the product's policy.

Every PipeMax decision here is the core's, the objects the live stage (sglang/stage.py)
calls: `core.Decider` at the end of each turn, `core.admission` before SGLang's admission,
`core.park_order` where a decode step does not fit. Nothing of the policy lives in sim/:
this module only keeps the books and turns them into timed turns for the engine.

The engine decides turn k when turn k - M (the same micro-batch's previous turn) leaves
stage 0 (engine.py). At that point, in the live loop's order:

    1  retire k - M              its members made a token; finished ones leave
    2  apply plan(k)             decided at turn k - M: park its decode rows (their KV leaves
                                 the device; the host tier must have room), bring the
                                 rejoins in (device room permitting, else they stay parked
                                 and are candidates again): the turn loads their KV (h2d)
    3  SGLang's choice for k     a prefill of admitted requests where core.admission allows
                                 and SGLang's PrefillAdder admits (recompute.py), else a
                                 decode; a decode step that does not fit parks in
                                 core.park_order (host permitting), then SGLang retracts
    4  plan(k + M)               Decider.decide on the turn as launched

Memory: a parked request's KV is off the device at once (live, it stays until evicted,
so a rejoin may find it there and load nothing: the simulator charges every rejoin its
whole context, as the decider's budget does). A rejoin's load starts no earlier than the
slot before its turn (the live issue point) and the turn waits for it to land. The
scheduler's CPU time per move is the engine's (Machine.move_s).
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
        self.move_s = machine.move_s
        self.pool: dict[int, _Parked] = {}
        self.plans: dict[int, TurnPlan] = {}        # target turn -> the plan deciding it
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
        before = self.m["parked"] + self.m["rejoined"]
        freed = self._retire(m, prev)
        freed_parks, loaded = self._apply_plan(k, m)
        freed += freed_parks
        turn = self._turn(k, m, freed, loaded, now)
        turn.moves = self.m["parked"] + self.m["rejoined"] - before
        self.times[k] = turn.times
        self.times.pop(k - 2 * self.M, None)
        self._plan_next(k, m, turn, now)
        if m == self.M - 1:
            for p in self.pool.values():
                p.rounds += 1
        return turn

    def _apply_plan(self, k: int, m: int) -> tuple[int, int]:
        """Step 2: the plan decided for this turn. Returns (device tokens its parks freed,
        tokens its rejoins load)."""
        plan = self.plans.pop(k, None)
        if plan is None:
            return 0, 0
        if plan.admit_mbs:
            self.admit_mbs = plan.admit_mbs
        self.m["budget_bytes"] += plan.budget_bytes
        self.m["plan_bytes"] += plan.plan_bytes
        freed = 0
        out = {int(r) for r in plan.park}
        if out:
            keep = []
            for r in self.running[m]:
                if r in out and self._park(r, k):
                    freed += int(self.book.kv[r])
                else:
                    keep.append(r)
            self.running[m] = keep
        loaded = 0
        for rid in plan.rejoin:
            r = int(rid)
            if r not in self.pool:
                continue
            kv = int(self.book.kv[r])
            if self.used + kv > self.D:
                self.m["deferred"] += 1            # stays parked: a candidate again
                continue
            del self.pool[r]
            self.host_used -= kv
            self.book.where[r] = RUNNING
            self.used += kv
            self.running[m].append(r)
            loaded += kv
            self.m["rejoined"] += 1
        self.m["loaded_tokens"] += loaded
        return freed, loaded

    def _park(self, r: int, k: int) -> bool:
        kv = int(self.book.kv[r])
        if self.host_used + kv > self.H:
            self.m["host_full"] += 1
            return False
        self.host_used += kv
        self.used -= kv
        self.book.where[r] = PARKED
        self.pool[r] = _Parked(k, self.m["parked"])
        self.m["parked"] += 1
        self.m["max_parked"] = max(self.m["max_parked"], len(self.pool))
        self.m["max_host_tokens"] = max(self.m["max_host_tokens"], self.host_used)
        return True

    def _turn(self, k: int, m: int, freed: int, loaded: int, now: float) -> Turn:
        """Step 3: SGLang's choice for turn k, with PipeMax's admission rule and parks."""
        if self.waiting and self._admissible(k, m):
            ids = self._admit(m)
            if ids:
                turn = self._prefill(k, m, ids, freed)
                return self._with_load(turn, loaded, k, now)
        reqs = self.running[m]
        if reqs and self.used + len(reqs) > self.D:
            freed += self._make_room(k, m)
        turn = self._decode(k, m, freed)
        return self._with_load(turn, loaded, k, now)

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
        what still does not fit, SGLang retracts (recompute.py)."""
        book = self.book
        reqs = self.running[m]
        left = [int(min(book.out[r] - book.gen[r], CLIP_MAX_NEW)) for r in reqs]
        sglang = sorted(range(len(reqs)), key=lambda i: (int(book.gen[reqs[i]]),
                                                          -int(book.prompt[reqs[i]]), -reqs[i]),
                        reverse=True)
        keep = park_order(sglang, left)
        freed = 0
        gone = set()
        while keep and self.used + len(keep) > self.D:
            i = keep[-1]
            if not self._park(reqs[i], k):
                break
            keep.pop()
            gone.add(i)
            freed += int(book.kv[reqs[i]])
        self.running[m] = [r for i, r in enumerate(reqs) if i not in gone]
        if self.running[m] and self.used + len(self.running[m]) > self.D:
            freed += self._retract(m)
        return freed

    def _with_load(self, turn: Turn, loaded: int, k: int, now: float) -> Turn:
        """The rejoins' KV: reserved on every stage with the turn's own tokens, loaded over
        the H2D link no earlier than the slot before the turn (the live issue point)."""
        if not loaded:
            return turn
        turn.effects = turn.effects._replace(reserve=turn.effects.reserve + loaded)
        turn.h2d = loaded
        ahead = sum(self.times[j][0] for j in range(k - self.M + 1, k - 1) if j in self.times)
        turn.release = (now + ahead,) * self.P
        return turn

    # ---- step 4: the decider -----------------------------------------------------------------
    def _plan_next(self, k: int, m: int, turn: Turn, now: float) -> None:
        book = self.book
        decode = list(turn.reqs) if turn.kind == DECODE else []
        rows = tuple(len(x) for x in self.running)
        ctx = tuple(int(book.kv[x].sum()) + (len(x) if j == m and decode else 0)
                    for j, x in enumerate(self.running))
        residents = tuple(int(book.kv[r]) for r in self.running[m] if r not in set(decode))
        planned = {rid for p in self.plans.values() for rid in p.rejoin}
        pool = [PoolEntry(str(r), int(book.kv[r]), p.rounds, p.arrival) for r, p in self.pool.items()]
        view = TurnView(
            turn=k, mb=m, num_mbs=self.M, decode_rids=tuple(str(r) for r in decode),
            next_residents=residents, mb_rows=rows, mb_ctx=ctx,
            inflight_tokens=self.used + self.host_used, device_tokens=self.D,
            waiting=len(self.waiting), row_cap=self.row_cap,
            decode_ctx=tuple(int(book.kv[r]) + 1 for r in decode), move_s=self.move_s, now=now)
        t0 = perf_counter()
        plan = self.decider.decide(view, pool, planned)
        self.m["selector_s"] += perf_counter() - t0
        if turn.kind == DECODE:
            self.decider.observe_step(turn.rows, turn.sum_ctx, max(turn.times))
        if plan.park or plan.rejoin or plan.admit_mbs != self.admit_mbs:
            self.plans[plan.target_turn] = plan

    def metrics(self) -> dict:
        out = dict(self.m)
        out.update(super().metrics())
        out["budget_utilisation"] = (self.m["plan_bytes"] / self.m["budget_bytes"]
                                     if self.m["budget_bytes"] else 0.0)
        return out
