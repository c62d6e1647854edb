"""PipeMaxStage: PipeMax inside one SGLang scheduler process (one PP stage, one TP rank).

The scheduler subclass (scheduler.py) calls it at five points of SGLang's loop; all stages
call them at the same points, so all hold the same batches:

    ingest i      on_plan(msg)         park msg.park (forward done), note msg.rejoin
                  issue_prefetches()   overdue prefetches only (their slot launched nothing)
    turn i        before_turn(i)       fence on this turn's prefetches; rejoin; merge
                  ... SGLang builds the batch ...
                  after_turn(i)        record composition; stage 0 decides -> outbox
    launch i      issue_prefetches(at_launch=True)
                                       turn i + 1's prefetches: device slots and one
                                       copy, which runs beside turn i's forward
    result        after_result(batch)  parked requests whose result is in: free their rows
    release hook  on_release(req)      a parked request finished: clean up instead

Turn numbers count get_next_batch_to_run calls; micro-batch of turn i is i % M (SGLang's PP
loop visits mb 0..M-1 in order; M = 1 in the non-PP loop).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from pipemax_sglang import env
from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.runtime.overlap import OverlapMeter
from pipemax_sglang.runtime.stats import PipeMaxStats
from pipemax_sglang.sglang import compat, kv_moves, platform
from pipemax_sglang.sglang.kv_moves import ParkedReq, Prefetch
from pipemax_sglang.sglang.messages import PipeMaxPlan
from pipemax_sglang.core import decision_log
from pipemax_sglang.core.admission import Admission, AdmissionView, admission, park_order
from pipemax_sglang.core.cost_model import prefix_reuse_min_tokens
from pipemax_sglang.core.decider import Decider, PoolEntry, TurnView
from pipemax_sglang.core.move_price import MovePrice, MovePriceFit
from pipemax_sglang.core.watchdog import Watchdog

logger = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """One launch on this stage. The turn is launch to next launch, so it holds what the
    forward does not (scheduling, the pp send/recv, waiting for the slowest stage): filled in
    at the next launch. active: how many of the last M turns launched a batch (the
    pipeline's occupancy: with one, a launch waits for the round trip through every stage)."""

    rows: int
    size: int                        # decode: sum of context; prefill: new tokens
    seconds: float                   # the forward
    turn_seconds: float | None
    active: int

    def decode_sample(self) -> dict:
        return {"rows": self.rows, "sum_context": self.size, "seconds": self.seconds,
                "turn_seconds": self.turn_seconds, "active_mbs": self.active}

    def prefill_sample(self) -> dict:
        return {"rows": self.rows, "tokens": self.size, "seconds": self.seconds,
                "turn_seconds": self.turn_seconds, "active_mbs": self.active}


_DEBUG = env.debug()


class PipeMaxStage:
    _in_move = 0                         # depth of _moving: a move is being timed

    def __init__(self, sched, config: PipeMaxConfig, ranks: compat.StageRanks) -> None:
        self.sched = sched
        self.config = config
        self.ranks = ranks
        self.M = ranks.pp_size + ranks.pp_async_batch_depth if ranks.pp_size > 1 else 1
        self.turn = 0
        self.move_fit = MovePriceFit()   # the scheduler's price of moves, by turn
        self._priced = (0, 0.0)          # moves and move seconds at the last sample
        self.pool: dict[str, ParkedReq] = {}                  # admission order kept
        self.tasks: list[PipeMaxPlan] = []                    # rejoins not yet prefetched
        self.prefetched: dict[int, list[Prefetch]] = defaultdict(list)   # by target turn
        self.frees = kv_moves.DeferredFrees()   # what parks hold until their copy has read it
        self.outbox: list[PipeMaxPlan] = []
        self.stats = PipeMaxStats(mb_rows_last=[0] * self.M)
        self.arrivals = 0
        self.admit_mbs = self.M          # micro-batches taking new requests (stage 0's plans)
        self.warned_host_full = False
        # one StepRecord per decode and per prefill launch (benchmarks/validate_sim.py)
        self.turns: dict[str, deque[StepRecord]] = {"decode": deque(maxlen=1024),
                                                    "prefill": deque(maxlen=256)}
        self._last_launch: tuple[float, StepRecord | None] | None = None
        self.overlap = OverlapMeter()
        self._launched: deque[int] = deque(maxlen=self.M)
        self.decider = self._make_decider() if compat.is_decider_rank() else None
        self.reuse_min_tokens = self._reuse_min_tokens()
        self.watchdog = Watchdog(config.watchdog_s) if self.decider is not None else None
        self.stock = False               # the watchdog tripped: SGLang's own path from now on
        self._admit_sent = self.M
        self.record = None
        if config.record_batches and config.status_dir:
            path = os.path.join(config.status_dir, f"batches-pp{ranks.pp_rank}-tp{ranks.tp_rank}.jsonl")
            self.record = open(path, "a", buffering=1)
        self.decisions = None            # stage 0's decider calls, for replay (core/decision_log)
        if self.record is not None and self.decider is not None:
            path = os.path.join(config.status_dir, f"decisions-pp{ranks.pp_rank}-tp{ranks.tp_rank}.jsonl")
            self.decisions = open(path, "a", buffering=1)
            self.decisions.write(decision_log.init_line(self.decider) + "\n")

    def _make_decider(self) -> Decider:
        k = compat.binding_kv_bytes_per_token(self.sched)
        return Decider(self.config.decider(), k, self.ranks.pp_size, self._link_bytes_per_s(),
                       moves_serialize=not platform.has_cuda())

    def _reuse_min_tokens(self) -> int | None:
        """The fewest prompt tokens a rejoin relocks in the tree rather than loads (None:
        never, as where host and device are one memory). From the configuration, the
        device's link and the model's largest per-stage KV, the same on every stage (as
        the decider's budget assumes), so that every stage allocates and evicts alike; where
        the model's configuration does not give that KV, never (a stage's own KV differs by
        stage)."""
        k = compat.model_kv_bytes_per_token(self.sched)
        return prefix_reuse_min_tokens(self._link_bytes_per_s(), k) if k else None

    def _link_bytes_per_s(self) -> float | None:
        """The host link's H2D rate: the emulated one where configured, else the device's
        (None on CPU, where host and device are one memory)."""
        gbps = self.config.emulate_link_gbps
        return gbps * 1e9 if gbps else compat.link_bytes_per_s()

    @contextlib.contextmanager
    def _moving(self, phase: str):
        """Time a KV move into stats.kv_move_s and its phase's counter (park, issue, rejoin):
        the scheduler's work, less what it waited for a copy (stats.copy_wait_s)."""
        start = time.perf_counter()
        waited = self.stats.copy_wait_s
        cpu = time.thread_time()
        self._in_move += 1
        try:
            with platform.serial_ops():
                yield
        finally:
            self._in_move -= 1
            self.stats.kv_move_cpu_s += time.thread_time() - cpu
            dt = time.perf_counter() - start - (self.stats.copy_wait_s - waited)
            self.stats.kv_move_s += dt
            self.stats.move_phase_s[phase] = self.stats.move_phase_s.get(phase, 0.0) + dt

    # ---- queries -------------------------------------------------------------------------
    def busy(self) -> bool:
        """Work of PipeMax's pending: parked, planned, prefetched, a plan to relay, or device
        slots a park still holds (released by turn in before_turn, which an idle server's
        loop keeps calling, so it gives back every slot before it reports idle)."""
        return bool(self.pool or self.tasks or any(self.prefetched.values()) or self.outbox
                    or self.frees.items)

    def _reap_frees(self, wait: bool = False) -> None:
        """Release what parks and abandoned prefetches hold: what was added at turns before
        self.turn (at an ingest and before a turn, the turns before the coming one; at a
        launch, where after_turn has counted the launched turn already, the parks of that
        turn's ingest too: their slots are the room the next turn's rejoins are given), or,
        with `wait`, everything (where the device needs the room now: a decode step, a
        prefetch or an admission). Both by turn number, the same on every stage
        (DeferredFrees). Held longer (a micro-batch cycle), the parked requests' old slots
        and the rejoining ones' new slots together filled a small pool and nothing new was
        admitted. Waiting for those copies here is also what orders a load after the park
        copy that wrote the host slots it reads (kv_moves' invariants). Only the wait for
        those copies is copy_wait_s; the frees and the tree unlocks are the moves' own work,
        timed as such here where no move is being timed already."""
        upto = None if wait else self.turn - 1
        if not self.frees.due(upto):
            return
        with contextlib.nullcontext() if self._in_move else self._moving("park"):
            self.stats.copy_wait_s += self.frees.reap(self.sched, upto)[1]

    def _reap_writes(self) -> None:
        """Wait for HiCache's write-throughs (their nodes become evictable with the ack)."""
        start = time.perf_counter()
        compat.reap_writes(compat.tree_cache(self.sched))
        self.stats.copy_wait_s += time.perf_counter() - start

    def inflight_rows(self) -> int:
        """Live requests: the micro-batches' rows, the parked and the prefetched."""
        prefetched = sum(len(v) for v in self.prefetched.values())
        return sum(len(b.reqs) for b in compat.running_batches(self.sched)) + len(self.pool) + prefetched

    def inflight_tokens(self, running: int) -> int:
        """KV tokens of every live request: `running` (the micro-batches' rows), the parked,
        and the prefetched (out of the pool, not yet rejoined). Leaving the prefetched out
        once made a pipeline of 4 micro-batches look as if 3 held everything, and the 4th was
        drained for the whole run."""
        prefetched = (pf.parked.kv_len for pfs in self.prefetched.values() for pf in pfs)
        return running + sum(p.kv_len for p in self.pool.values()) + sum(prefetched)

    def move_price(self) -> MovePrice | None:
        """The scheduler's price of moves (a turn that moves, and each move), fitted from
        this stage's turns once enough moves were timed to say (core/move_price.py)."""
        return self.move_fit.current()

    def defer_admission(self, running_batch) -> bool:
        """Whether this turn's micro-batch takes no new requests (core/admission.py). With
        nothing parked and every micro-batch admitting, the rule admits: answered here,
        without the view (it cost ~90 us a call, called at every turn: do no harm). What
        this turn's parks hold is released first (waiting for their copies) when the next
        waiting prompt does not fit the free and evictable slots without it: SGLang's
        admission counts only those. Otherwise it goes a turn later, as always: waiting here
        for every turn's park copies whenever a queue waits (an offline batch's always does)
        held the scheduler behind each copy, on a GPU behind the forward it follows."""
        if self.frees.items and compat.next_prompt_short(self.sched):
            self._reap_frees(wait=True)
        if self.stock or (not self.pool and self.admit_mbs >= self.M):
            return False
        rule = admission(AdmissionView(
            turn=self.turn, num_mbs=self.M, admit_mbs=self.admit_mbs,
            prefill_in_progress=compat.prefill_in_progress(self.sched), parked=len(self.pool),
            running_rows=len(running_batch.reqs), inflight_rows=self.inflight_rows(),
            row_cap=compat.row_cap(self.sched),
            oldest_wait=max((p.rounds_waited for p in self.pool.values()), default=0)))
        if rule is Admission.IF_HOST_ROOM:
            return not compat.reserve_host(self.sched, compat.device_tokens(self.sched) // 20 + 1)
        return rule is Admission.DEFER

    # ---- ingest ----------------------------------------------------------------------------
    def drain_outbox(self) -> list[PipeMaxPlan]:
        out, self.outbox = self.outbox, []
        return out

    def on_plan(self, msg: PipeMaxPlan) -> None:
        if _DEBUG:
            logger.warning("pipemax pp%d turn %d plan %s pool=%d", self.ranks.pp_rank, self.turn, msg, len(self.pool))
        if msg.handback:
            self._hand_back()
        if self.stock:
            return
        if msg.park:
            with self._moving("park"):
                self._park(msg)
        if msg.rejoin:
            self.tasks.append(msg)
        if msg.admit_mbs:
            self.admit_mbs = msg.admit_mbs
        if not (msg.park or msg.rejoin):
            return                    # sent for admit_mbs alone: no budget was offered
        self.stats.plans += 1
        self.stats.budget_bytes_total += msg.budget_bytes
        self.stats.plan_bytes_total += msg.plan_bytes
        self.stats.over_budget_plans += msg.plan_bytes > msg.budget_bytes

    def _park(self, msg: PipeMaxPlan) -> None:
        batch = compat.live_batch(self.sched, msg.mb)
        rids = set(msg.park)
        chosen = [r for r in batch.reqs if r.rid in rids and not r.finished()]
        if not chosen:
            return
        in_flight = compat.freeze_in_flight(self.sched, msg.mb, batch)
        compat.order_park_after_forward(self.sched, msg.mb)
        self._reap_frees()
        # the host slots are taken when the copy is submitted (park_many); where the host
        # cannot take them all, those it can, in order
        news = [kv_moves.new_host_tokens(req) for req in chosen]
        ok = chosen
        if not compat.reserve_host(self.sched, sum(news)):
            ok, need = [], 0
            for req, new in zip(chosen, news):
                if not compat.reserve_host(self.sched, need + new):
                    self._host_full()
                    continue
                need += new
                ok.append(req)
        parked = self._park_now(ok, msg.turn, finish=not in_flight)
        gone = {id(r) for r in parked}
        keep = [i for i, r in enumerate(batch.reqs) if id(r) not in gone]
        compat.keep_rows(batch, keep)
        self._note_pool()

    def _park_now(self, reqs: list, turn: int, finish: bool) -> list:
        """Park `reqs` with one copy (kv_moves.park_many); returns those parked (none when the
        host pool is short after all)."""
        if not reqs:
            return []
        done = kv_moves.park_many(reqs, self.sched, self.frees, self.turn)
        if done is None:
            self._host_full()
            return []
        per_token = compat.kv_bytes_per_token(self.sched)
        for req, (L, copied, P) in zip(reqs, done):
            p = ParkedReq(req, L, turn, self.arrivals, owner=self, tree_len=P)
            self.arrivals += 1
            req.pipemax_parked = p
            self.pool[req.rid] = p
            self.stats.d2h_bytes += copied * per_token
            self.stats.moved_kv_tokens += L
            if finish:
                self._finish_park(p)
        self.stats.parks += len(reqs)
        self.stats.park_copies += 1
        return reqs

    def make_decode_room(self, batch) -> None:
        """Park instead of recompute: where SGLang would retract (the next decode step does
        not fit), park requests until it fits. The batch is at the start of its turn, so
        nothing of it is in flight; every stage holds the same memory state here, so every
        stage parks the same requests (as with SGLang's own retraction). Unlike SGLang, which
        keeps (and, out of memory, aborts) the last request, PipeMax parks even that one: the
        other micro-batches hold the memory, and a parked request rejoins once they release
        it. Where a request cannot be parked (the host tier is full, or the watchdog handed
        PipeMax's work back to SGLang), it is retracted to SGLang's queue (recomputed), down
        to the last one: at M > P, SGLang's own abort of a last request that does not fit
        would fail a request that fits once the other micro-batches release their memory."""
        if not batch.reqs or compat.decode_fits(batch):
            return
        with self._moving("park"):
            self._make_room(batch)

    @staticmethod
    def keep_order(batch, by_priority: bool = False) -> list[int]:
        """Indices of batch.reqs, the last parked first (core/admission.py park_order)."""
        left = [compat.remaining_bound(r) for r in batch.reqs]
        return park_order(compat.retraction_order(batch), left, by_priority)

    def _make_room(self, batch) -> None:
        """Park (or, where that cannot be, retract) from the end of the keep order until the
        step fits. Parks go in groups, one copy each: the smallest run from the end of the
        order whose KV, all freed, would cover the shortfall. That bound is optimistic (a
        prefix shared with another request stays on the device), so a group never holds a
        request the one-at-a-time loop would have kept; when it falls short the loop looks
        again and parks the next group. Parked one at a time, a pressed turn paid a copy
        submission and a wait per request."""
        keep = self.keep_order(batch, self.stock or compat.retraction_by_priority())
        parked = []
        retracted = []
        unreaped = False
        while keep and not compat.decode_fits(batch, keep):
            if unreaped:
                # what was parked since the last look becomes free (its own slots) once its
                # copy to host is done, and evictable (its tree prefix) once the prefix's
                # write-through is too: wait for both, then look again before parking more
                self._reap_frees(wait=True)
                self._reap_writes()
                unreaped = False
                continue
            short = compat.decode_shortfall(batch, keep)
            group, freed, host = [], 0, 0
            for idx in reversed(keep):
                req = batch.reqs[idx]
                group.append(req)
                freed += compat.kv_len(req) + 1       # its KV and its row's next token
                host += kv_moves.new_host_tokens(req)
                if freed >= short:
                    break
            ok = not self.stock and compat.reserve_host(self.sched, host)
            if ok:
                ok = bool(self._park_now(group, self.turn, finish=True))   # counts a short pool
            elif not self.stock:
                if len(group) > 1 and compat.reserve_host(self.sched, kv_moves.new_host_tokens(group[0])):
                    group = group[:1]     # the host takes fewer: park the first alone
                    ok = bool(self._park_now(group, self.turn, finish=True))
                else:
                    self._host_full()
            if not ok:
                req = group[0]
                compat.retract_for_recompute(self.sched, batch, keep.pop(), len(keep))
                retracted.append(req)
                continue
            del keep[len(keep) - len(group):]
            parked += group
            unreaped = True
        if parked or retracted:
            compat.keep_rows(batch, sorted(keep))
            self._note_pool()
        self.stats.recomputes += len(retracted)

    def _host_full(self) -> None:
        self.stats.host_full_skips += 1
        if not self.warned_host_full:
            self.warned_host_full = True
            logger.warning("pipemax: host KV tier full; requests that cannot be parked stay on the "
                           "device and SGLang's own memory handling applies")

    def _finish_park(self, p: ParkedReq) -> None:
        kv_moves.park_finish(p.req, compat.tree_cache(self.sched))
        p.ready = True

    def _note_pool(self) -> None:
        self.stats.parked_now = len(self.pool)
        self.stats.parked_peak = max(self.stats.parked_peak, len(self.pool))

    def reap_aborted(self) -> list:
        """Parked requests SGLang marked to finish (an abort or timeout reached them through
        a batch they had already left) would wait for a step that never comes: finish them
        here. Returns them for the scheduler to send their abort outputs."""
        return self._abort_where(lambda p: compat.is_aborting(p.req))

    def _abort_where(self, match) -> list:
        """Drop the ready parked or prefetching requests `match` selects (ready: not in any
        in-flight batch, whose result would still touch them) and return their requests."""
        hits = []
        prefetching = {id(pf.parked): pf.parked for pfs in self.prefetched.values() for pf in pfs}
        for p in [*self.pool.values(), *prefetching.values()]:
            if p.ready and p.req.pipemax_parked is p and match(p):
                if id(p) in prefetching:
                    self.stats.aborted_prefetching += 1
                else:
                    self.stats.aborted_parked += 1
                self._drop(p, None)
                hits.append(p.req)
        return hits

    def issue_prefetches(self, at_launch: bool = False) -> None:
        """Start the loads that are due. At a launch (run_batch, just before turn i's
        forward; after_turn has already counted turn i, so self.turn is i + 1): those issued
        for the slot of turn i, so that turn i + 1's loads run beside turn i's forward, not
        beside the scheduler's own work before it (at the ingest, on a CPU, most of a load
        ended before the forward began: 5% of load time overlapped a forward). At an ingest:
        only loads whose target turn has come without their slot's launch (a slot with
        nothing to run launches nothing), so a plan is never left behind its turn. With
        M = 1 a plan's slot is its own turn: its loads are issued at that turn's ingest."""
        if at_launch:
            due = [t for t in self.tasks if t.issue_turn <= self.turn - 1]
        else:
            due = [t for t in self.tasks if t.target_turn <= self.turn]
        if not due:
            return
        with self._moving("issue"):
            self._issue(due)

    def _issue(self, due: list[PipeMaxPlan]) -> None:
        """Device slots for the rejoining requests (one allocation) and one host-to-device
        copy of their KV (kv_moves); each prefetch keeps its copy, which its turn fences on.
        Nothing here waits for a copy: only when the device has no room while parked
        requests' slots still wait for their copy to host (they are freed with it), or
        prefixes for their write-through (they become evictable with it), are those waited
        for, once, and the rest retried; and a load waits for a park copy still writing what
        it reads, which the turn order never leaves (_load)."""
        ids = {id(t) for t in due}
        self.tasks = [t for t in self.tasks if id(t) not in ids]
        tc = compat.tree_cache(self.sched)
        wanted = [(msg.target_turn, self.pool.get(rid)) for msg in due for rid in msg.rejoin]
        wanted = [(t, p) for t, p in wanted
                  if p is not None and not p.req.finished() and not compat.is_aborting(p.req)]
        self._reap_frees()
        short, fresh = self._prefetch(wanted)
        if short and (compat.writes_pending(tc) or self.frees.items):
            self._reap_writes()
            self._reap_frees(wait=True)
            short, more = self._prefetch(short)
            fresh += more
        self.stats.prefetch_deferred += len(short)
        load = self._load(fresh)
        if load is not None:
            self.stats.record_window(sum(msg.budget_bytes for msg in due), load.num_bytes)
        if self.decider is not None:
            # the plans charged whole contexts; reused prompts and deferred rejoins give
            # their link time back to the next plans (a plan's prefetches: its target turn)
            for msg in due:
                if msg.plan_bytes:
                    self._reconcile_link(msg.turn, sum(pf.load_tokens for pf in fresh
                                                       if pf.target_turn == msg.target_turn))
        self._note_pool()

    def _load(self, fresh: list):
        """The one copy back of `fresh` (kv_moves.load_many), after any park copy still
        writing what it reads: none while the turn order holds (kv_moves' invariants); where
        one is, it is waited for (copy_wait_s), counted (late_park_copies) and logged."""
        late = kv_moves.unwritten(fresh)
        if late:
            start = time.perf_counter()
            for c in late:
                c.synchronize()
            self.stats.copy_wait_s += time.perf_counter() - start
            self.stats.late_park_copies += len(late)
            logger.warning("pipemax pp%d turn %d: a load waited for %d park copies still writing "
                           "its host slots", self.ranks.pp_rank, self.turn, len(late))
        return kv_moves.load_many(fresh, self.sched)

    def _reconcile_link(self, turn: int, loaded_tokens: int) -> None:
        now = time.monotonic()          # the decider's clock (TurnView.now)
        self.stats.link_returned_bytes += self.decider.loaded(turn, loaded_tokens, now)
        if self.decisions is not None:
            self.decisions.write(decision_log.loaded_line(turn, loaded_tokens, now) + "\n")

    def _prefetch(self, wanted: list) -> tuple[list, list]:
        """Device slots for (target_turn, parked) pairs; returns (those the device could not
        take, the prefetches made)."""
        made, short = kv_moves.prefetch_many(wanted, self.sched, self.reuse_min_tokens)
        per_token = compat.kv_bytes_per_token(self.sched)
        for pf in made:
            self.pool.pop(pf.parked.rid)
            self.prefetched[pf.target_turn].append(pf)
            self.stats.h2d_bytes += pf.load_tokens * per_token
            self.stats.reused_prefix_tokens += pf.prefix.shape[0]
        return short, made

    # ---- the turn --------------------------------------------------------------------------
    def before_turn(self, running_batch):
        """Rejoin this turn's prefetched requests into the micro-batch's running batch."""
        pfs = self.prefetched.pop(self.turn, [])
        # a prefetch whose request is not ready yet (its last result still in flight) waits
        ready = [pf for pf in pfs if pf.parked.ready and not pf.parked.req.finished()]
        later = [pf for pf in pfs if not pf.parked.ready and not pf.parked.req.finished()]
        for pf in pfs:
            if pf.parked.req.finished():
                self._drop(pf.parked, pf)
        if later:
            self.prefetched[self.turn + 1].extend(later)
        if _DEBUG and (pfs or self.turn % 50 == 0):
            logger.warning("pipemax pp%d turn %d before: ready=%d later=%d running=%d pool=%d tasks=%d",
                           self.ranks.pp_rank, self.turn, len(ready), len(later), len(running_batch.reqs),
                           len(self.pool), len(self.tasks))
        self._reap_frees()
        if not ready:
            return running_batch
        start = time.perf_counter()
        # the loads of this turn's own rejoins only: those for later turns run on
        compat.wait_loads(self.sched, {id(pf.load): pf.load for pf in ready if pf.load is not None}.values())
        self.stats.prefetch_stall_s += time.perf_counter() - start
        with self._moving("rejoin"):
            for pf in ready:
                pf.parked.req.pipemax_parked = None
            merged = compat.merge_rows(running_batch, kv_moves.rejoin(ready, self.sched))
        self.stats.rejoins += len(ready)
        self.stats.rejoin_batches += 1
        self.stats.moved_kv_tokens += sum(pf.parked.kv_len for pf in ready)
        self.stats.rejoined_in_batch_sum += len(ready)
        return merged

    def after_turn(self, mb: int, plan) -> None:
        batch = plan.batch_to_run
        rows = compat.decode_rows(batch)
        is_decode = rows is not None
        self.stats.turns += 1
        if is_decode:
            self.stats.decode_turns += 1
            self.stats.effective_batch_sum += rows
            self.stats.mb_rows_last[mb] = rows
        if self.record is not None:
            self.record.write(json.dumps({
                "turn": self.turn, "mb": mb, "t": round(time.monotonic(), 6),
                "mode": compat.mode_name(batch),
                "rids": sorted(r.rid for r in batch.reqs) if batch is not None else [],
            }) + "\n")
        if self.decider is not None and not self.stock:
            if not self._decision_is_noop():
                self._decide(mb, plan, batch if is_decode else None)
            self._watch(mb, batch is not None)
        if mb == self.M - 1:  # one round per cycle of M turns: a wait is counted in cycles
            for p in self.pool.values():
                p.rounds_waited += 1
        self._sample_move_price()
        self.turn += 1

    def _sample_move_price(self) -> None:
        """One sample of the move price per turn that moved: its parks and rejoins and the
        scheduler seconds since the last sample (a phase timed in a turn that counted no
        move goes with the next one that does)."""
        moves = self.stats.parks + self.stats.rejoins
        if moves != self._priced[0]:
            self.move_fit.observe(moves - self._priced[0], self.stats.kv_move_s - self._priced[1])
            self._priced = (moves, self.stats.kv_move_s)

    def _decision_is_noop(self) -> bool:
        """Whether stage 0's decision this turn would certainly be empty, so SGLang's own
        path runs with no per-turn work of ours (do no harm). With nothing parked, planned or
        prefetched there is no one to bring back; with M <= P nothing drains or concentrates
        (Decider.busy_mbs, admit_mbs); so only streaming could park, and it cannot when it is
        off, when moves serialize and are not priced yet, or at M <= 2 (auto: streaming adds
        rows only for micro-batches past the two a turn holds, Decider.streams)."""
        if self.pool or self.tasks or any(self.prefetched.values()) or self.M > self.ranks.pp_size:
            return False
        stream = self.config.stream
        if stream == "auto":
            return self.M <= 2 or (self.decider.moves_serialize and self.move_price() is None)
        return stream == "never"

    def _decide(self, mb: int, plan, decode_batch) -> None:
        sched = self.sched
        decode_reqs = list(decode_batch.reqs) if decode_batch is not None else []
        decode_rids = tuple(r.rid for r in decode_reqs)
        # this micro-batch's rows from the plan: SGLang has not stored them yet (compat)
        rows, ctx = compat.mb_shapes(sched, self.M, mb, plan)
        price = self.move_price()
        view = TurnView(
            turn=self.turn, mb=mb, num_mbs=self.M, decode_rids=decode_rids,
            next_residents=compat.next_residents(plan, decode_rids),
            mb_rows=rows, mb_ctx=ctx,
            inflight_tokens=self.inflight_tokens(sum(ctx)),
            device_tokens=compat.device_tokens(sched), waiting=compat.waiting_count(sched),
            row_cap=compat.row_cap(sched),
            prefetching=sum(len(v) for v in self.prefetched.values()),
            prefetching_tokens=sum(pf.parked.kv_len + 1 for v in self.prefetched.values() for pf in v),
            prefetch_targets=tuple(sorted((t, sum(pf.parked.kv_len + 1 for pf in v))
                                          for t, v in self.prefetched.items() if v)),
            decode_ctx=compat.contexts(decode_reqs),
            move_s=price.move_s if price is not None else None,
            move_turn_s=price.turn_s if price is not None else 0.0, now=time.monotonic(),
        )
        planned = {rid: t.target_turn for t in self.tasks for rid in t.rejoin}
        pool = [PoolEntry(p.rid, p.kv_len, p.rounds_waited, p.arrival) for p in self.pool.values()
                if p.rid not in decode_rids]
        msg = self.decider.decide(view, pool, planned)
        if self.decisions is not None:
            self.decisions.write(decision_log.decide_line(view, pool, planned, msg) + "\n")
        if msg.park or msg.rejoin or msg.admit_mbs != self._admit_sent:
            self._admit_sent = msg.admit_mbs
            self.outbox.append(msg)

    def observe_step(self, batch, start: float, seconds: float) -> None:
        if self._last_launch is not None and self._last_launch[1] is not None:
            self._last_launch[1].turn_seconds = start - self._last_launch[0]
        self._launched.append(self.turn)
        self.overlap.forward(start, start + seconds)
        self.overlap.loads(platform.cpu_load_intervals())
        entry = None
        shape = compat.step_shape(batch)
        if shape is not None:
            kind, rows, size = shape
            if kind == "decode" and self.decider is not None:
                self.decider.observe_step(rows, size, seconds)
                if self.decisions is not None:
                    self.decisions.write(decision_log.observe_line(rows, size, seconds) + "\n")
            active = sum(1 for t in self._launched if t > self.turn - self.M)
            entry = StepRecord(rows, size, seconds, None, active)
            self.turns[kind].append(entry)
        self._last_launch = (start, entry)

    # ---- results, release, abort -----------------------------------------------------------
    def after_result(self, batch) -> None:
        for req in batch.reqs:
            p = getattr(req, "pipemax_parked", None)
            if p is not None and not p.ready and not req.finished():
                with self._moving("park"):
                    self._finish_park(p)
                if self.stock:
                    self._hand_back()

    # ---- the watchdog ----------------------------------------------------------------------
    def _watch(self, mb: int, launched: bool) -> None:
        """Stage 0: pending work and no launch for watchdog_s -> every stage hands back (the
        message reaches them all at the same ingest, as plans do)."""
        pending = compat.waiting_count(self.sched) > 0 or self.busy()
        if self.watchdog.observe(time.monotonic(), launched, pending):
            self.outbox.append(PipeMaxPlan(self.turn, mb, (), (), self.turn, self.turn, handback=True))

    def _hand_back(self) -> None:
        """Give every parked and prefetched request to SGLang's own path (its waiting queue, as
        a retracted request: re-admission finds its KV in the tree, on device or host) and run
        as stock SGLang from now on. Requests whose last result is still in flight follow
        when it is processed (after_result)."""
        if not self.stock and self.decider is not None:    # one warning, from stage 0
            logger.warning(
                "pipemax: no progress for %.0f s with work pending (parked %d, waiting %d); handing "
                "parked requests back to SGLang and running as stock SGLang from now on",
                self.config.watchdog_s, len(self.pool), compat.waiting_count(self.sched))
        self.stock = True
        self.tasks = []
        prefetching = [pf.parked for pfs in self.prefetched.values() for pf in pfs]
        for p in [*self.pool.values(), *prefetching]:
            if p.ready and p.req.pipemax_parked is p:
                self._drop(p, None)
                compat.requeue_for_recompute(self.sched, p.req)
                self.stats.handed_back += 1

    def on_release(self, req) -> None:
        """SGLang releases a parked request that finished (its in-flight step hit a stop)."""
        p: ParkedReq = req.pipemax_parked
        if not p.ready:
            self._finish_park(p)
        self._drop(p, None)

    def _drop(self, p: ParkedReq, pf: Prefetch | None) -> None:
        """End a parked (or prefetching) request's stay with PipeMax without a rejoin: it
        finished, was aborted, or goes to SGLang's recompute. Its locks, its prefetch's device
        slots and its host tail go back."""
        if pf is not None:
            kv_moves.abandon(pf, self.frees, self.turn)
        for turn, pfs in list(self.prefetched.items()):
            for other in [x for x in pfs if x.parked is p]:
                if other is not pf:
                    kv_moves.abandon(other, self.frees, self.turn)
                pfs.remove(other)
        kv_moves.release_ring(p.req, compat.tree_cache(self.sched))
        self.pool.pop(p.rid, None)
        p.req.pipemax_parked = None
        self._note_pool()

    def abort(self, rid_prefix: str, abort_all: bool) -> list:
        """Parked requests matching an abort (SGLang's rid-prefix rule). Returns them for the
        scheduler to send their abort outputs."""
        return self._abort_where(lambda p: abort_all or p.rid.startswith(rid_prefix))

    def _price_report(self) -> dict[str, Any]:
        """The fitted price of moves (None until priced): per turn that moves, per move."""
        price = self.move_price()
        return {"move_turn_ms": 1e3 * price.turn_s if price is not None else None,
                "move_us": 1e6 * price.move_s if price is not None else None}

    def _overlap_report(self) -> dict[str, Any]:
        """How the link's load time (the H2D copier's busy seconds, CPU) relates to the stage:
        overlap_fraction is the share the scheduler did not wait for (it ran beside the
        forward, the scheduling and the pipeline's exchanges; a fence on the next turn's
        loads made it near zero), forward_overlap_fraction the share that ran during a
        forward itself (on these CPUs a forward is a fraction of a turn). None on a GPU."""
        h2d = platform.cpu_h2d_stats()
        if h2d is None or h2d.busy_s <= 0:
            return {"load_s": 0.0, "load_wait_s": 0.0, "overlap_fraction": None,
                    "load_overlap_s": 0.0, "forward_overlap_fraction": None}
        # load_overlap_s: seconds of load beside a forward (of self.overlap.load_s measured;
        # the meter sees the same copies as h2d, polled at each forward)
        return {"load_s": h2d.busy_s, "load_wait_s": h2d.stall_s,
                "overlap_fraction": max(0.0, 1.0 - h2d.stall_s / h2d.busy_s),
                "load_overlap_s": self.overlap.overlap_s, "load_metered_s": self.overlap.load_s,
                "forward_overlap_fraction": self.overlap.fraction}

    def status(self, samples: bool = True) -> dict[str, Any]:
        """The stage's report; `samples` adds the timed steps (large: the idle report carries
        them, the reports while busy, every STATUS_EVERY_S, do not)."""
        return {"micro_batches": self.M, "turn": self.turn, "parked": len(self.pool),
                "stock": self.stock,
                "admitting_micro_batches": self.admit_mbs,
                "prefetching": sum(len(v) for v in self.prefetched.values()),
                "parked_rids": sorted(self.pool)[:64],
                "running_rids": sorted(r.rid for b in compat.running_batches(self.sched) for r in b.reqs)[:64],
                "prefetching_rids": sorted(pf.parked.rid for v in self.prefetched.values() for pf in v)[:64],
                "decider": self.decider is not None, **self.stats.to_dict(),
                **self._price_report(),
                **self._overlap_report(),
                "step_samples": [r.decode_sample() for r in self.turns["decode"]] if samples else [],
                "prefill_samples": [r.prefill_sample() for r in self.turns["prefill"]] if samples else []}
