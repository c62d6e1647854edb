"""Stage 0's decision at the end of each turn: whom to park now, who rejoins next time.

    plan = decide(state)      state: what SGLang's scheduler holds, read into core types

The capacity picture it follows (docs/design.md section 4, "Capacity arithmetic"): with M
micro-batches in flight, a stage computes one while the next one's KV is being brought
back, so under memory pressure a micro-batch's requests are parked right after their
forward (their KV stays on the device until something needs the room: HiCache evicts
most-recently-parked first) and the selector composes each micro-batch's next turn from the
parked pool within
  - the device share of one turn: (D - reserve) / 2 when M >= 2 (active + prefetching),
    D - reserve when M = 1;
  - the H2D budget of the prefetch window (the slot before the turn), from the core's link
    timeline, so commitments slide later budgets;
  - the row cap (SGLang's pp_max_micro_batch_size).
Each rejoin is charged its whole context against budget and device: by its next turn a
parked request's device copy has usually been evicted; a surviving copy costs less than
predicted, never more. With no pressure (everything in flight fits the device) nothing is
parked and SGLang runs as stock. Refinements:
  - residents: what the link cannot bring back in a slot (C tokens) is not parked; rows
    stay while all residents fit D - reserve - 2C and this micro-batch's fit 1/M of it
    (a fast link makes that room negative: every pressed row parks, as above);
  - draining: once the live requests fit fewer micro-batches than M, only the fewest that
    keep every stage busy are filled; the others park their rows and take none back;
  - streaming pays: where a move's scheduler time adds to the turn (CPU), a pressed
    micro-batch parks its rows only if (M - 2) a > 2 p D' (streams()); else its rows stay,
    rejoins take only what no resident holds, and a step that does not fit parks (stage.py);
  - concentrating: a pressed pipeline there that does not stream keeps rows only in the
    first P micro-batches (admit_mbs(), carried to every stage by the plan) and drains the
    others: without streaming, extra micro-batches add turns, not rows. New requests are
    prefilled in the drained ones (stage.defer_admission) and reach the busy ones as rejoins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.core import (BudgetPolicy, Candidate, LinkTimeline, SelectorInput, SELECTORS,
                                 StepCost, StepCostModel, TransferModel)
from pipemax_sglang.sglang.messages import PipeMaxPlan

CPU_COPY_BYTES_PER_S = 10e9      # nominal memcpy rate when no link is emulated (CPU runs)
CPU_PRIOR = StepCost(a=2e-3, b=2e-4, c=2e-7)   # rough CPU prior until 16 steps are measured


@dataclass(frozen=True)
class TurnView:
    """What the decider reads from SGLang at the end of a turn (plain numbers and ids)."""

    turn: int
    mb: int
    num_mbs: int
    decode_rids: tuple[str, ...]          # the decode batch launched this turn (empty: none)
    next_residents: tuple[int, ...]       # context lengths of mb's members staying resident
    mb_rows: tuple[int, ...]              # running rows per micro-batch (for slot prediction)
    mb_ctx: tuple[int, ...]               # running context sum per micro-batch
    inflight_tokens: int                  # running + parked KV tokens
    device_tokens: int                    # D: max_total_num_tokens
    waiting: int                          # requests SGLang has not admitted yet
    row_cap: int
    prefetching: int = 0                  # rows prefetched for a later turn, not yet rejoined
    decode_ctx: tuple[int, ...] = ()      # context lengths of decode_rids, same order
    move_s: float | None = None           # measured scheduler seconds per park or rejoin


@dataclass(frozen=True)
class PoolEntry:
    rid: str
    kv_len: int
    rounds_waited: int
    arrival: int


class Decider:
    def __init__(self, config: PipeMaxConfig, kv_bytes_per_token: int, num_stages: int,
                 link_bytes_per_s: float | None, moves_serialize: bool = False) -> None:
        self.config = config
        # a move's scheduler time adds to the turn (CPU: moves and forward share the cores);
        # on a GPU it overlaps the launched forward and the rule in streams() does not apply
        self.moves_serialize = moves_serialize
        self.k = kv_bytes_per_token          # binding stage's bytes per token
        self.num_stages = num_stages
        bw = link_bytes_per_s or CPU_COPY_BYTES_PER_S
        self.transfer = TransferModel(latency_s=1e-5, h2d_bytes_per_s=bw, d2h_bytes_per_s=bw)
        self.cost_model = StepCostModel(CPU_PRIOR)
        self.link_free_at = 0.0
        self.select = SELECTORS[config.selector]

    def observe_step(self, rows: int, sum_context: int, seconds: float) -> None:
        self.cost_model.observe(rows, sum_context, seconds)

    def reserve(self, view: TurnView) -> int:
        """Device tokens kept free: 5% margin, plus one step's growth of every running row
        (the target micro-batch's own growth is charged by the selector, a token per row)."""
        return view.device_tokens // 20 + sum(view.mb_rows)

    def live_rows(self, view: TurnView, pool: list[PoolEntry]) -> int:
        """Requests in flight: parked, being parked now, resident, prefetched, and running in
        the other micro-batches."""
        others = sum(r for m, r in enumerate(view.mb_rows) if m != view.mb)
        return (len(pool) + len(view.decode_rids) + len(view.next_residents) + others
                + view.prefetching)

    def turn_share(self, view: TurnView) -> int:
        """Device tokens one turn may hold: (D - reserve) / 2 when M >= 2 (the active
        micro-batch and the one prefetching), D - reserve when M = 1."""
        share = view.device_tokens - self.reserve(view)
        return share // 2 if view.num_mbs >= 2 else share

    def busy_mbs(self, view: TurnView, pool: list[PoolEntry]) -> int:
        """Micro-batches worth filling: the fewest that keep every stage busy (P) and hold
        the live requests within one turn's device share and the row cap; at most M.
        Each non-empty turn costs a stage its fixed a (the weight read on a GPU, the
        scheduling on a CPU) while an empty one passes, so once the live requests fit in
        fewer micro-batches (the tail of a batch) spreading them over all M only adds
        turns: a request gets one token a cycle and a cycle is every non-empty turn."""
        M = view.num_mbs
        if M <= self.num_stages or view.waiting > 0:     # queued requests: all M will fill
            return M
        share = max(1, self.turn_share(view))
        need = max(-(-view.inflight_tokens // share),
                   -(-self.live_rows(view, pool) // max(1, view.row_cap)))
        return max(self.num_stages, min(M, need))

    def fair_rows(self, view: TurnView, pool: list[PoolEntry], busy: int | None = None) -> int:
        """Rows one micro-batch may hold: an even share of the live requests over the busy
        micro-batches. A step costs a + b*rows + ..., so with a fixed number of rows the
        pipeline's cycle, set by its slowest micro-batch, is shortest when they are even;
        when the pool is small next to the micro-batches' room (a short queue, the tail of
        a batch), taking every candidate for one micro-batch leaves the next ones empty.
        The selector still decides whom, within this cap. `busy`: busy_mbs, if known."""
        busy = busy or self.busy_mbs(view, pool)
        return max(1, -(-self.live_rows(view, pool) // busy))

    def streams(self, view: TurnView, cost: StepCost, pool: list[PoolEntry]) -> bool:
        """Whether a pressed micro-batch parks its rows after its turn so that parked ones
        stream in (else its rows stay, and only a step that does not fit parks: SGLang's
        retraction point). With residents R and S tokens streamed a turn (R + 2S <= D', two
        turns loading at once), a cycle of M turns makes D' + (M - 2) S rows of work in
        M a + b (rows) + 2 p M S seconds (a: a turn's fixed cost, p: the scheduler's time
        per move, a park and a rejoin a streamed row): streaming pays only if
        (M - 2) a > 2 p D', D' the device in rows. Applies where moves serialize with the
        forward (CPU), and there only once moves are priced (the parks of steps that do not
        fit price them): streaming first and pricing after parked a whole micro-batch at the
        first pressed turn, whose rows then waited for room for ~30 cycles, the batch's
        longest request among them. On a GPU it streams."""
        if self.config.stream != "auto":
            return self.config.stream == "always"
        if not self.moves_serialize:
            return True
        if view.move_s is None:
            return False
        live = max(1, self.live_rows(view, pool))
        device_rows = (view.device_tokens - self.reserve(view)) * live / max(1, view.inflight_tokens)
        return (view.num_mbs - 2) * cost.a > 2 * view.move_s * device_rows

    def pressure(self, view: TurnView) -> bool:
        return view.waiting > 0 or view.inflight_tokens + self.reserve(view) > view.device_tokens

    def admit_mbs(self, view: TurnView, pool: list[PoolEntry], pressed: bool, stream: bool) -> int:
        """Micro-batches that keep rows: all M, except where a turn's fixed cost is paid in
        full by every non-empty turn (moves serialize: a CPU) and a pressed pipeline does
        not stream. There more micro-batches than stages hold no more rows (the device
        bounds them, and nothing streams into the extra turns), they only split them into
        more turns, each paying a: the rows go to the fewest micro-batches that keep every
        stage busy and respect the row cap."""
        M = view.num_mbs
        if not (self.moves_serialize and pressed and not stream) or M <= self.num_stages:
            return M
        rows = self.live_rows(view, pool)           # as busy_mbs counts them
        return min(M, max(self.num_stages, -(-rows // max(1, view.row_cap))))

    def decide(self, view: TurnView, pool: list[PoolEntry], planned: set[str]) -> PipeMaxPlan:
        # A micro-batch past the busy ones is drained: its rows park and it takes none back.
        # While nothing presses their device copies survive, so a rejoin elsewhere moves no
        # bytes, though the budget still charges their whole context (conservative).
        pressed = self.pressure(view)
        cost = self.cost_model.current()
        stream = pressed and self.streams(view, cost, pool)
        admit = self.admit_mbs(view, pool, pressed, stream)
        busy = min(admit, self.busy_mbs(view, pool))
        drain = view.mb >= busy
        park = view.decode_rids if stream or drain else ()
        M = view.num_mbs
        target, issue = view.turn + M, view.turn + max(M - 1, 1)
        share = self.turn_share(view)
        # what stays on the device for the target turn: the residents, and the decode rows
        # too when nothing is parked (the running batch, growing a token a row)
        stay_rows = len(view.next_residents)
        stay_tokens = sum(c + 1 for c in view.next_residents)
        if not park and view.decode_rids:
            stay_rows = max(stay_rows, view.mb_rows[view.mb])
            stay_tokens = max(stay_tokens, view.mb_ctx[view.mb] + view.mb_rows[view.mb])
        rows = 0 if drain else max(0, min(view.row_cap, self.fair_rows(view, pool, busy)) - stay_rows)
        budget_bytes, now, timeline, window = self._budget(view, cost, pool, rows)
        free = share - stay_tokens
        # the window is one slot: at least the step this micro-batch just ran (an empty
        # pipeline predicts empty slots, and a fast link would look slow)
        resident_room = self.resident_room(
            view, max(window, cost.predict(len(view.decode_rids), sum(view.decode_ctx))))
        held = sum(c + r for m, (r, c) in enumerate(zip(view.mb_rows, view.mb_ctx))
                   if m != view.mb)                         # other micro-batches' residents
        avail = view.device_tokens - self.reserve(view)
        unheld = avail - held                               # no resident holds it
        if resident_room > 0:
            # a slow link: residents of every micro-batch share the device with the streams
            if park and not drain and view.decode_ctx:
                limit = min(resident_room - held, resident_room // M)
                keep = self.keep_resident(view, limit - stay_tokens)
                if keep:
                    park = tuple(r for r in park if r not in keep)
                    stay_rows += len(keep)
                    stay_tokens += sum(c + 1 for r, c in zip(view.decode_rids, view.decode_ctx)
                                       if r in keep)
                    rows = max(0, rows - len(keep))
            # what no resident holds is shared by this turn's rejoins and the next
            # micro-batch's, which load while this one computes
            free = min(share - stay_tokens, (unheld - stay_tokens) // 2)
        if not pressed:
            # everything in flight fits: a drained request may come back whatever its length
            free = max(free, unheld - stay_tokens)
        elif not stream and not drain:
            # rows stay where they are: a rejoin takes only what no resident holds
            free = unheld - stay_tokens
        free = max(0, free)

        cands = [Candidate(p.rid, p.kv_len, p.kv_len, (), p.rounds_waited, p.arrival)
                 for p in pool if p.rid not in planned]
        if cands and not stay_rows:
            # A request longer than the share would never come back: with nothing resident
            # the oldest may have the device to itself (as stock SGLang would decode it alone).
            oldest = min(cands, key=lambda c: (-c.rounds_waited, c.arrival))
            if oldest.host_tokens + 1 > free:
                room = avail if resident_room <= 0 else unheld
                free = max(free, min(room, oldest.host_tokens + 1))
        others = [(m, r, c) for m, (r, c) in enumerate(zip(view.mb_rows, view.mb_ctx)) if m != view.mb]
        inp = SelectorInput(
            candidates=tuple(cands), residents=(), budget_bytes=budget_bytes,
            kv_bytes_per_token=self.k, device_tokens_free=free, row_cap=rows, cost=cost,
            other_step_times=tuple(cost.predict(r, c) for _, r, c in others),
            other_rows=tuple(r for _, r, _ in others), num_stages=self.num_stages,
        )
        plan = self.select(inp) if cands and rows > 0 and free > 0 else None
        rejoin = plan.rejoin if plan is not None else ()
        plan_bytes = plan.bytes if plan is not None else 0
        if plan_bytes:
            self.link_free_at = timeline.commit(0, plan_bytes, now).link_free_at
        return PipeMaxPlan(view.turn, view.mb, tuple(park), tuple(rejoin), target, issue,
                           budget_bytes, plan_bytes, admit_mbs=admit)

    def resident_room(self, view: TurnView, window_s: float) -> int:
        """Device tokens residents may hold across turns, for M >= 2: what the link brings
        back in a window, C = rate x window / k, is all streaming can feed a turn, and two turns
        stream at once (this one's rejoins and the next micro-batch's, loading meanwhile),
        so D - reserve - 2C. Zero or less with a fast link (C covers the device): every row
        of a pressed micro-batch parks and streams back. With a slow one, parking rows the
        link cannot bring back would only shrink the batch; they stay, as stock SGLang
        keeps them."""
        if view.num_mbs < 2:
            return 0
        c_tokens = self.transfer.h2d_bytes_per_s * max(window_s, 0.0) / max(1, self.k)
        return view.device_tokens - self.reserve(view) - 2 * int(min(c_tokens, view.device_tokens))

    @staticmethod
    def keep_resident(view: TurnView, room: int) -> frozenset[str]:
        """The decode rows, in batch order, whose KV (and a token of growth each) fits room."""
        keep, acc = [], 0
        for rid, ctx in zip(view.decode_rids, view.decode_ctx):
            if acc + ctx + 1 > room:
                break
            keep.append(rid)
            acc += ctx + 1
        return frozenset(keep)

    def _budget(self, view: TurnView, cost: StepCost, pool: list[PoolEntry],
                rows: int) -> tuple[int, float, LinkTimeline, float]:
        """Bytes the link can bring back in the prefetch window: the slot before the target
        turn (issue at its start, land before the turn), after earlier commitments.

        The window is at least one step of the batch the plan would form (its oldest
        candidates up to the row cap): when the pipeline has drained (every request parked)
        the predicted slots are empty, and a zero budget would never bring anyone back; a
        transfer no compute can hide is then a stall the turn waits for, not a deadlock."""
        M = view.num_mbs
        slot = [cost.predict(r, c) for r, c in zip(view.mb_rows, view.mb_ctx)]
        now = time.monotonic()
        # slots that run before the prefetch is issued: this turn's, then the next M-2
        ahead = sum(slot[(view.mb + j) % M] for j in range(0, max(M - 1, 1)))
        window = slot[(view.mb + M - 1) % M] if M > 1 else slot[view.mb]
        oldest = sorted(pool, key=lambda p: (-p.rounds_waited, p.arrival))[:rows]
        window = max(window, cost.predict(len(oldest), sum(p.kv_len for p in oldest)))
        # With nothing resident for the target turn, a budget below the oldest request's KV
        # would leave the micro-batch empty for ever (a slow link, a long context): the
        # budget then covers that one request, and the turn stalls for its transfer.
        floor = self.k * oldest[0].kv_len if oldest and not view.next_residents else 0
        issue_at = now + ahead - (window if M == 1 else 0.0)
        timeline = LinkTimeline(self.transfer, (max(window, 0.0), max(window, 0.0)),
                                link_free_at=self.link_free_at,
                                policy=BudgetPolicy(self.config.budget_margin))
        # mb 0 of this two-slot view leaves at issue_at; its next turn is one window later
        return max(timeline.budget(0, issue_at).nbytes, floor), issue_at, timeline, window
