"""The discrete-event engine: P stages, M micro-batches, PCIe links, device ledgers.

It knows time, order and memory; a `Scheduler` (recompute.py, tdpipe.py, pipemax.py) knows policy.
Events (a heap of (time, seq, action)): a stage finishing a turn, an activation arriving
at the next stage, a transfer landing. Per stage, turns run strictly in order k.

    stage_done(s, k)     s free; if s = 0, decide(k + M) (the scheduler, core policy
                         inside); write-through of k's new KV on s's D2H link, then
                         apply(s, k); hand k to s + 1 after the hop, or at the last stage
                         count its output tokens
    apply(s, k)          ledger of s: release k's ring entry, apply (k + M)'s Effects
                         (its reservation waits for its start on s), queue (k + M)'s ring
                         allocation and prefetch on s's H2D link
    link head starts     when the link is idle and s has room (links.py)
    turn k launches on s when its activations arrived (s = 0: its members' previous
                         outputs are back) and s's scheduler has done k's moves (below)
    turn k starts on s   when s is idle, k launched, applied and landed on s

The scheduler's CPU (SGLang's PP loop, scheduler_pp_mixin.event_loop_pp): per turn, it
schedules (rejoins), receives the activations, launches the forward asynchronously, then
processes an older micro-batch's result (parks) while the GPU computes. So the CPU work of
turn k runs between the launches of k - 1 and k, beside the GPU's turn k - 1, and delays k
only where it is longer:

    CPU   ..| launch k-1 | moves of k (T + p n) | launch k |..
    GPU   ......| turn k-1 (async)   |  idle   | turn k |..

    launch_s(k) = max(arrival_s(k), max(launch_s(k-1), decided(k)) + price(moves(k)))

with price(n) = T + p n for n > 0 and 0 for n = 0 (Machine.move_price: T a turn that moves,
p a move; core/move_price.py) and moves(k) the parks and rejoins of k's decision (every
stage moves its own share of the KV). The GPU's wait for the CPU is `cpu_wait_s`. On a CPU host
(Machine.moves_serialize) the forward runs on the same cores: the moves start only once
the stage's previous turn is done, and add to every turn.

A run ends when the scheduler has finished every request and no event is left. An empty
turn (nothing to run) passes in no time; if a whole cycle of M turns is empty at one
instant, the next decision waits for the next event (a transfer, a stage), and if there
is none while work remains, that is a deadlock and raises.
"""

from __future__ import annotations

import heapq
from functools import partial
from typing import Callable, NamedTuple, Protocol

import numpy as np

from .costs import Layout
from .ledger import StageLedger
from .links import Item, Link
from .machine import Machine
from .turn import DECODE, EMPTY, PREFILL, Turn


class Scheduler(Protocol):
    def decide(self, k: int, now: float, prev: Turn | None) -> Turn: ...

    def done(self) -> bool: ...

    def backlog(self) -> int: ...     # requests waiting for a row (queued or parked)

    def finished(self) -> int: ...    # requests finished so far


class Deadlock(RuntimeError):
    """Work remains but nothing can run: a scheduler bug or an impossible configuration."""


class EngineStats(NamedTuple):
    makespan_s: float
    tokens_out: int
    turns: dict[str, int]
    stage_busy_s: tuple[float, ...]
    stage_stall_s: tuple[float, ...]      # idle, waiting only for a prefetch to land
    h2d_bytes: int
    d2h_bytes: int
    h2d_busy_s: tuple[float, ...]         # per link
    ledger_peak: tuple[int, ...]
    ledger_violations: int
    capacity_tokens: int
    decode_rows: int                      # sum of rows over decode turns
    decode_ctx: int                       # sum of attention context over decode turns
    max_rows: int                         # most rows in one decode turn
    cpu_wait_s: tuple[float, ...]         # GPU idle, waiting for the scheduler's moves
    moves: int                            # parks + rejoins (per stage)
    series: dict                          # per turn out of the last stage (steady state)
    h2d_intervals: tuple[tuple[tuple[float, float], ...], ...]   # per link (start, end)


class Engine:
    def __init__(self, layout: Layout, machine: Machine, scheduler: Scheduler, M: int,
                 record: bool = False, gpus_per_stage: int = 1) -> None:
        self.P = layout.pp
        self.M = M
        self.layout = layout
        self.kv = layout.kv_bytes
        self.sched = scheduler
        self.ledgers = [StageLedger(layout.capacity_tokens) for _ in range(self.P)]
        h2d, d2h = machine.link_rates()
        lat = machine.profile.link_latency_s
        # Stage s runs on GPU s (one GPU a stage); k consecutive GPUs share a switch.
        group = max(1, machine.gpus_per_switch // gpus_per_stage)
        n_links = -(-self.P // group)
        # H2D intervals are always kept: the steady-state link utilisation reads them
        self.h2d_links = [Link(f"h2d{i}", h2d, lat, True) for i in range(n_links)]
        self.d2h_links = [Link(f"d2h{i}", d2h, lat, record) for i in range(n_links)]
        self.h2d_of = [self.h2d_links[s // group] for s in range(self.P)]
        self.d2h_of = [self.d2h_links[s // group] for s in range(self.P)]
        self.turns: dict[int, Turn] = {}
        self.pending: dict[int, list[int]] = {}
        # A turn's resident reservation lands on a stage's ledger when the turn starts there
        # (its prompt or new tokens are written then), not when its Effects are applied after
        # the micro-batch's previous turn: the decision runs M - 1 slots ahead of the turn.
        self.reserve_due: list[dict[int, int]] = [{} for _ in range(self.P)]
        # Ring allocations happen in turn order on each stage (links.py): the next turn due,
        # the requests that arrived early, and whether the due one is already in a queue.
        self.alloc_next = [0] * self.P
        self.alloc_wait: list[dict[int, Item | None]] = [{} for _ in range(self.P)]
        self.queued: list[Item | None] = [None] * self.P
        self.next_k = [0] * self.P
        self.busy = [False] * self.P
        self.busy_s = [0.0] * self.P
        self.stall_s = [0.0] * self.P
        self.stall_since: list[float | None] = [None] * self.P
        self.last_done = -1
        self.empty_run = 0
        self.tokens_out = 0
        self.makespan = 0.0
        self.kinds = {"decode": 0, "prefill": 0, "empty": 0}
        self.decode_rows = 0
        self.decode_ctx = 0
        self.max_rows = 0
        self.move_price = machine.move_price
        self.moves_serialize = machine.moves_serialize
        self.last_launch = [0.0] * self.P
        self.free_since = [0.0] * self.P
        self.cpu_wait_s = [0.0] * self.P
        self.wake_at = [float("inf")] * self.P
        self.moves = 0
        self.out_time: dict[int, float] = {}          # turn -> when it left the last stage
        # one row per turn out of the last stage: (end, kind, rows, ctx, tokens, decided,
        # pressed, finished)
        self.series: list[tuple[float, str, int, int, int, float, bool, int]] = []
        self.now = 0.0
        self.record = record
        self.trace: list[tuple[str, int, int, float]] = []   # (event, stage, turn, time)
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    # ---- event plumbing ------------------------------------------------------------
    def _push(self, t: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, action))

    def run(self) -> EngineStats:
        for k in range(self.M):
            self._decide(k, None)
        heap = self._heap
        while heap:
            t, _, action = heapq.heappop(heap)
            self.now = t
            action()
        if not self.sched.done():
            raise Deadlock(f"no event left at t={self.now:.3f}s with requests unfinished")
        return self._stats()

    # ---- decisions -------------------------------------------------------------------
    def _decide(self, k: int, prev: Turn | None) -> None:
        turn = self.sched.decide(k, self.now, prev)
        self.turns[k] = turn
        self.kinds[turn.kind] += 1
        turn.arrived[0] = True
        turn.decided_at = self.now
        turn.pressed = self.sched.backlog() > 0
        turn.finished = self.sched.finished()
        self.moves += turn.moves
        turn.hop = self.layout.hop_latency_s + self.layout.hop_s_per_token * (
            turn.tokens if turn.kind == PREFILL else turn.rows)
        self.empty_run = self.empty_run + 1 if turn.kind == EMPTY else 0
        if prev is None:
            for s in range(self.P):
                self._apply_to(s, -1, turn)
        else:
            for s in self.pending.pop(k, ()):
                self._apply_to(s, k - self.M, turn)
        self._try_start(0)

    def _deferred_decide(self, k: int, prev: Turn) -> None:
        if not self.sched.done():
            self._decide(k, prev)

    # ---- stages ----------------------------------------------------------------------
    def _try_start(self, s: int) -> None:
        if self.busy[s]:
            return
        t = self.turns.get(self.next_k[s])
        if t is None or not t.applied[s]:
            return
        if s == 0:
            if self.last_done < t.deps:
                return
            ready = max(t.decided_at, self.out_time.get(t.deps, 0.0))
        elif not t.arrived[s]:
            return
        else:
            ready = t.arrived_at[s]
        launch = t.launch_at[s]
        if launch is None:                    # module note: the CPU's moves before it
            base = max(self.last_launch[s], t.decided_at)
            if self.moves_serialize:
                base = max(base, self.free_since[s])
            cpu = base + self.move_price.seconds(t.moves)
            launch = t.launch_at[s] = max(ready, cpu)
            self.last_launch[s] = launch
        if launch > self.now:
            if launch < self.wake_at[s]:
                self.wake_at[s] = launch
                self._push(launch, partial(self._wake_stage, s))
            return
        if not t.landed[s]:
            if self.stall_since[s] is None:
                self.stall_since[s] = self.now
            self._release_now(s, t.k)
            return
        if not self.ledgers[s].fits(self.reserve_due[s].get(t.k, 0)):
            # its tokens wait for room: the parks before it are freed once their write-through
            # lands (apply), which calls this again
            if self.stall_since[s] is None:
                self.stall_since[s] = self.now
            return
        if self.stall_since[s] is not None:
            self.stall_s[s] += self.now - self.stall_since[s]
            self.stall_since[s] = None
        self.cpu_wait_s[s] += max(0.0, launch - max(ready, self.free_since[s]))
        self.ledgers[s].reserve(self.reserve_due[s].pop(t.k, 0))
        self.busy[s] = True
        if self.record:
            self.trace.append(("start", s, t.k, self.now))
        dt = t.times[s]
        self.busy_s[s] += dt
        self._push(self.now + dt, partial(self._stage_done, s, t.k))
        # the next turn's load may have waited for this turn to reserve (_reserved_before):
        # it goes now, beside this forward, not when some later event pumps the link
        self._pump(self.h2d_of[s])

    def _wake_stage(self, s: int) -> None:
        self.wake_at[s] = float("inf")
        self._try_start(s)

    def _stage_done(self, s: int, k: int) -> None:
        t = self.turns[k]
        self.busy[s] = False
        self.free_since[s] = self.now
        self.next_k[s] = k + 1
        if s == 0 and not self.sched.done():
            if t.kind == EMPTY and self.empty_run >= self.M:
                if self._heap:      # a whole idle cycle: wait for something to happen
                    self._push(self._heap[0][0], partial(self._deferred_decide, k + self.M, t))
                else:
                    raise Deadlock(f"idle pipeline at t={self.now:.3f}s, work remains")
            else:
                self._decide(k + self.M, t)
        if t.d2h > 0:
            link = self.d2h_of[s]
            link.queue.append(Item(s, k, 0, t.d2h * self.kv[s], partial(self._apply, s, k)))
            self._pump(link)
        else:
            self._apply(s, k)
        if s + 1 < self.P:
            self._push(self.now + t.hop, partial(self._arrive, s + 1, k))
        else:
            self.last_done = k
            self.out_time[k] = self.now
            self.out_time.pop(k - 4 * self.M, None)      # deps reach back at most M turns
            if t.kind != EMPTY:
                self.tokens_out += len(t.reqs)
                self.makespan = self.now
                if t.kind == DECODE:
                    self.decode_rows += t.rows
                    self.decode_ctx += t.sum_ctx
                    self.max_rows = max(self.max_rows, t.rows)
                self.series.append((self.now, t.kind, t.rows, t.sum_ctx, len(t.reqs),
                                    t.decided_at, t.pressed, t.finished))
            del self.turns[k]                 # every stage is done with it
            self._try_start(0)
        self._try_start(s)

    def _arrive(self, s: int, k: int) -> None:
        self.turns[k].arrived[s] = True
        self.turns[k].arrived_at[s] = self.now
        self._try_start(s)

    # ---- memory and links --------------------------------------------------------------
    def _apply(self, s: int, k: int) -> None:
        nxt = self.turns.get(k + self.M)
        if nxt is None:                       # decision not taken yet (deferred, or the end)
            self.pending.setdefault(k + self.M, []).append(s)
            return
        self._apply_to(s, k, nxt)

    def _apply_to(self, s: int, prev_k: int, nxt: Turn) -> None:
        self.ledgers[s].apply(prev_k, nxt.effects._replace(reserve=0))
        if nxt.effects.reserve:
            self.reserve_due[s][nxt.k] = nxt.effects.reserve
        nxt.applied[s] = True
        if nxt.ring > 0 or nxt.h2d > 0:      # a ring entry, or loads into reserved room
            rel = nxt.release[s] if nxt.release is not None else 0.0
            self.alloc_wait[s][nxt.k] = Item(s, nxt.k, nxt.ring, nxt.h2d * self.kv[s],
                                             partial(self._landed, s, nxt.k), rel)
        else:
            self.alloc_wait[s][nxt.k] = None
            nxt.landed[s] = True
        self._advance(s)
        self._pump(self.h2d_of[s])
        self._try_start(s)

    def _advance(self, s: int) -> None:
        """Queue stage s's next ring allocation, in turn order, one at a time."""
        wait = self.alloc_wait[s]
        while self.queued[s] is None and self.alloc_next[s] in wait:
            it = wait.pop(self.alloc_next[s])
            self.alloc_next[s] += 1
            if it is not None:
                self.h2d_of[s].queue.append(it)
                self.queued[s] = it

    def _landed(self, s: int, k: int) -> None:
        if self.record:
            self.trace.append(("landed", s, k, self.now))
        self.turns[k].landed[s] = True
        self._try_start(s)

    def _release_now(self, s: int, k: int) -> None:
        """Stage s is ready for turn k but its item waits for its release time: go now."""
        it = self.queued[s]
        if it is not None and it.k == k and it.release > self.now:
            it.release = self.now
            self._pump(self.h2d_of[s])

    def _reserved_before(self, it: Item) -> bool:
        """A ring entry takes room only once every earlier turn on its stage has reserved its
        own (started): a later turn's load must not take the room an earlier turn waits for."""
        due = self.reserve_due[it.stage]
        return not due or min(due) >= it.k

    def _wake(self, link: Link) -> None:
        link.wake_at = float("inf")
        self._pump(link)

    def _pump(self, link: Link) -> None:
        """Start what can start: the first queued item that is released and whose stage
        has room (so one waiting stage never blocks the others on a shared link)."""
        while not link.busy and link.queue:
            now = self.now
            for i, it in enumerate(link.queue):
                if it.release <= now and (not it.tokens or (self.ledgers[it.stage].fits(it.tokens)
                                                             and self._reserved_before(it))):
                    break
            else:
                nxt = min((x.release for x in link.queue if x.release > now), default=None)
                if nxt is not None and nxt < link.wake_at:
                    link.wake_at = nxt
                    self._push(nxt, partial(self._wake, link))
                return
            del link.queue[i]
            if it.tokens:
                self.ledgers[it.stage].allocate(it.k, it.tokens)
            if self.queued[it.stage] is it:
                self.queued[it.stage] = None
                self._advance(it.stage)
            if it.nbytes <= 0:
                it.done()
                continue
            link.busy = True
            self._push(link.started(now, it.nbytes), partial(self._link_done, link, it))

    def _link_done(self, link: Link, it: Item) -> None:
        link.busy = False
        it.done()
        self._pump(link)

    # ---- results -----------------------------------------------------------------------
    def _stats(self) -> EngineStats:
        return EngineStats(
            makespan_s=self.makespan, tokens_out=self.tokens_out, turns=dict(self.kinds),
            stage_busy_s=tuple(self.busy_s), stage_stall_s=tuple(self.stall_s),
            h2d_bytes=sum(x.bytes_moved for x in self.h2d_links),
            d2h_bytes=sum(x.bytes_moved for x in self.d2h_links),
            h2d_busy_s=tuple(x.busy_time for x in self.h2d_links),
            ledger_peak=tuple(x.peak for x in self.ledgers),
            ledger_violations=sum(x.violations for x in self.ledgers),
            capacity_tokens=self.layout.capacity_tokens,
            decode_rows=self.decode_rows, decode_ctx=self.decode_ctx, max_rows=self.max_rows,
            cpu_wait_s=tuple(self.cpu_wait_s), moves=self.moves, series=self._series(),
            h2d_intervals=tuple(tuple((a, b) for a, b, _ in x.intervals) for x in self.h2d_links))

    def _series(self) -> dict:
        cols = list(zip(*self.series)) if self.series else [()] * 8
        names = ("end", "kind", "rows", "ctx", "tokens", "decided", "pressed", "finished")
        out = {n: np.asarray(c) for n, c in zip(names, cols)}
        out["decode"] = out.pop("kind") == DECODE if self.series else np.zeros(0, dtype=bool)
        return out
