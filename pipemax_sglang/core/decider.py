"""The decider: at the end of each turn, whom to park now and who rejoins next time.

    plan = Decider(...).decide(view, pool, planned)

One pure function of what a scheduler holds (a TurnView and the parked pool, plain numbers
and ids) and of the decider's own state (the fitted step cost, the link's commitments). The
live scheduler (sglang/stage.py, stage 0) and the simulator (sim/) call this same object;
neither has a rule of its own. Time is an argument (`view.now`), so a recorded run replays.

The capacity picture it follows (docs/design.md, "Capacity arithmetic"): with M
micro-batches in flight, a stage computes one while the next one's KV is being brought
back, so under memory pressure a micro-batch's requests are parked right after their
forward and the selector composes each micro-batch's next turn from the parked pool within
  - the device share of one turn: (D - reserve) / 2 when M >= 2 (active + prefetching),
    D - reserve when M = 1;
  - the H2D budget of the prefetch window (the slot before the turn), from the link
    timeline, so commitments slide later budgets;
  - the row cap (SGLang's pp_max_micro_batch_size).
With no pressure (everything in flight fits the device) nothing is parked and the
scheduler runs as stock. The steps of one decision, in order:

    mode       pressed? streams? how many micro-batches keep rows (concentration), which
               are busy, is this one drained
    stay       what stays on the device for the target turn (residents; the whole decode
               batch when it does not park)
    budget     the bytes the link brings back before the target turn (sliding window)
    keep       on a slow link, the decode rows the link could not bring back stay
    room       device tokens the rejoins may take
    choose     the selector, within room, budget and the row cap

Refinements, each a rule below with its reason: residents on a slow link; draining the tail
of a batch into the fewest micro-batches that keep every stage busy; streaming only where a
move pays for itself; concentrating rows where moves serialize with the forward.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .baselines import SELECTORS
from .budget import BudgetPolicy, LinkTimeline
from .cost_model import StepCost, StepCostModel, TransferModel
from .admission import FORCE_AFTER
from .selector_types import Candidate, SelectorInput

CPU_COPY_BYTES_PER_S = 10e9      # nominal memcpy rate when no link is given (CPU runs)
CPU_PRIOR = StepCost(a=2e-3, b=2e-4, c=2e-7)   # rough CPU prior until 16 steps are measured
STREAM_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class DeciderConfig:
    """The user's choices the decider reads (PipeMaxConfig.decider() builds it)."""

    selector: str = "greedy"
    stream: str = "auto"             # auto: where a move's price pays for it; always; never
    budget_margin: float = 0.1
    max_candidates: int | None = 128  # parked requests a decision shows the selector (None: all)

    def __post_init__(self) -> None:
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {sorted(SELECTORS)}, got {self.selector!r}")
        if self.stream not in STREAM_MODES:
            raise ValueError(f"stream must be one of {STREAM_MODES}, got {self.stream!r}")


@dataclass(frozen=True)
class TurnView:
    """What the decider reads from a scheduler at the end of a turn (plain numbers and ids)."""

    turn: int
    mb: int
    num_mbs: int
    decode_rids: tuple[str, ...]          # the decode batch launched this turn (empty: none)
    next_residents: tuple[int, ...]       # context lengths of mb's members staying resident
    mb_rows: tuple[int, ...]              # running rows per micro-batch (for slot prediction)
    mb_ctx: tuple[int, ...]               # running context sum per micro-batch
    inflight_tokens: int                  # running + parked KV tokens
    device_tokens: int                    # D: the device KV pool, tokens
    waiting: int                          # requests the scheduler has not admitted yet
    row_cap: int
    prefetching: int = 0                  # rows prefetched for a later turn, not yet rejoined
    prefetching_tokens: int = 0           # their KV tokens, on (or coming to) the device
    decode_ctx: tuple[int, ...] = ()      # context lengths of decode_rids, same order
    prefetch_targets: tuple[tuple[int, int], ...] = ()   # (target turn, KV tokens) of the
                                          # prefetches above; empty: targets unknown
    move_s: float | None = None           # measured scheduler seconds per park or rejoin
    move_turn_s: float = 0.0              # ... and per turn that moves (core/move_price.py;
                                          # 0: move_s is a flat price, as in older logs)
    now: float = 0.0                      # the scheduler's clock, seconds (link timeline)


@dataclass(frozen=True)
class PoolEntry:
    rid: str
    kv_len: int
    rounds_waited: int
    arrival: int


@dataclass(frozen=True)
class TurnPlan:
    """A decision; it travels with the requests stage 0 relays, so every stage applies it."""

    turn: int                    # the turn at whose end it was decided
    mb: int                      # micro-batch of that turn
    park: tuple[str, ...]        # members of that turn's decode batch to park after its forward
    rejoin: tuple[str, ...]      # parked requests to bring back ...
    target_turn: int             # ... for this turn (mb's next one)
    issue_turn: int              # its loads start at this turn's launch (Decider.issue_turn)
    budget_bytes: int = 0
    plan_bytes: int = 0
    admit_mbs: int = 0           # micro-batches that keep rows from now on (0: unchanged)
    handback: bool = False       # the watchdog tripped: every stage hands its parked
                                 # requests to the scheduler's own path and runs as stock


@dataclass(frozen=True)
class Mode:
    pressed: bool                # what is in flight does not fit the device, or some wait
    stream: bool                 # a pressed micro-batch parks its rows after its turn
    admit_mbs: int               # micro-batches that keep rows (concentration)
    busy_mbs: int                # micro-batches worth filling (draining past them)
    drain: bool                  # this micro-batch is past the busy ones

    @property
    def parks_decode(self) -> bool:
        return self.stream or self.drain


@dataclass(frozen=True)
class Stay:
    """What stays on the device for the target turn, and the decode rows parked now."""

    park: tuple[str, ...]
    rows: int
    tokens: int                  # context + a token of growth each


@dataclass(frozen=True)
class Budget:
    nbytes: int                  # H2D bytes the window holds for this plan
    issue_at: float              # when the prefetch is issued (the scheduler's clock)
    timeline: LinkTimeline
    window_s: float              # the predicted slot before the target turn


@dataclass(frozen=True)
class Room:
    """The device for the rejoins of the target turn."""

    rows: int                    # rows they may add (fair share, row cap, less residents)
    tokens: int                  # tokens they may take (context + a token each)
    avail: int                   # D - reserve
    unheld: int                  # avail less every other micro-batch's rows and the rejoins
                                 # already prefetched or planned for other turns
    resident_room: int           # > 0: a slow link, residents share the device with streams


@dataclass
class OnLink:
    """A plan's transfer on the decider's link ledger, until it lands (Decider.loaded
    shrinks it to what its issue loaded and re-chains the transfers behind it)."""

    turn: int                    # the decision that made the plan (TurnPlan.turn)
    issue_at: float              # when the plan is issued (it cannot start before)
    nbytes: int
    start: float
    end: float


class Decider:
    def __init__(self, config: DeciderConfig, kv_bytes_per_token: int, num_stages: int,
                 link_bytes_per_s: float | None, moves_serialize: bool = False,
                 prior: StepCost = CPU_PRIOR) -> None:
        self.config = config
        # a move's scheduler time adds to the turn where moves and the forward share the
        # cores (CPU); on a GPU the forward runs beside the scheduler
        self.moves_serialize = moves_serialize
        self.k = kv_bytes_per_token          # binding stage's bytes per token
        self.num_stages = num_stages
        self.link_bytes_per_s = link_bytes_per_s     # as given (None: no link known)
        bw = link_bytes_per_s or CPU_COPY_BYTES_PER_S
        self.transfer = TransferModel(latency_s=1e-5, h2d_bytes_per_s=bw, d2h_bytes_per_s=bw)
        self.cost_model = StepCostModel(prior)
        self.link_free_at = float("-inf")     # no commitment yet: the link is free
        # the plans on the link, in commit order, until they land; link_free_at is the last
        # one's end
        self.on_link: list[OnLink] = []
        self.select = SELECTORS[config.selector]

    def observe_step(self, rows: int, sum_context: int, seconds: float) -> None:
        self.cost_model.observe(rows, sum_context, seconds)

    def loaded(self, turn: int, loaded_tokens: int, now: float) -> int:
        """Reconcile the link with what the issue of the plan decided at `turn` really put on
        it; returns the bytes given back. A plan charges each rejoin its whole KV (decide
        cannot know what the device will still hold at the issue); a rejoin whose prompt the
        tree still held then loads only the rest, and one the device could not take loads
        nothing yet (it is planned again). The plan's transfer shrinks to what it loaded (at
        the binding stage's bytes per token, as charged: a stage with fewer layers returns
        nothing), and the plans queued behind it start earlier where they waited for it,
        never before their own issue: a plan that found the link idle keeps its slot, so
        nothing is given back that the link does not really have. A plan already landed by
        `now` (or never on the link) changes nothing."""
        self.on_link = [c for c in self.on_link if c.end > now]
        i = next((j for j, c in enumerate(self.on_link) if c.turn == turn), None)
        if i is None:
            return 0
        spare = self.on_link[i].nbytes - loaded_tokens * self.k
        if spare <= 0:
            return 0
        self.on_link[i].nbytes -= spare
        end = None
        for c in self.on_link[i:]:
            if end is not None:
                c.start = max(c.issue_at, end)
            c.end = end = c.start + self.transfer.h2d_time(c.nbytes)
        self.link_free_at = end
        return spare

    # ---- quantities --------------------------------------------------------------------
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

    def pressure(self, view: TurnView) -> bool:
        return view.waiting > 0 or view.inflight_tokens + self.reserve(view) > view.device_tokens

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
        retraction point), from the measured price of moves (core/move_price.py): T a turn
        that moves (view.move_turn_s: its batched copies and rebuilt decode batch), p a park
        or rejoin (view.move_s). D' is the device in rows, a a turn's fixed cost, b a
        row's. Streaming S rows a turn (residents R, R + 2S <= D': two turns load at once;
        S = D'/2 at most) makes D' + (M - 2) S rows of work a cycle of M turns, and each
        turn's moves cost the scheduler T + 2 p S (a park and a rejoin a streamed row):
          - where moves serialize with the forward (a CPU: they share the cores), the cycle
            takes M a + b (D' + (M - 2) S) + M (T + 2 p S). Without streaming the rows go
            to the B = admit_mbs micro-batches that keep every stage busy (P, or what the
            row cap needs; the others' turns are empty and pass), a cycle of D' rows in
            B a + b D'. With S = D'/2 streaming pays only if (B - 2) a > 2 T + 2 p D': never
            at B = 2, however cheap the moves (a pp 2 pipeline on a CPU; comparing with
            all M turns paying a, as this rule once did, streamed at M = 3 as soon as moves
            were priced per turn, and ran 0.78x stock where not streaming runs level);
          - where the forward runs beside the scheduler (a GPU), every micro-batch keeps
            rows (a cycle of M a + b D' without streaming) and a turn takes the longer of
            the forward and the scheduler's T + 2 p S: moves are free while they fit under
            the forward, and their excess is paid in full.
        Before moves are priced (move_price.MOVES_TO_PRICE moves): on a CPU no streaming
        (streaming first and pricing after parked a whole micro-batch at the first pressed
        turn, whose rows then waited ~30 cycles for room, the batch's longest among them);
        on a GPU streaming (the forward hides a move of tens of microseconds)."""
        if self.config.stream != "auto":
            return self.config.stream == "always"
        if view.move_s is None:
            return not self.moves_serialize
        M, p, T = view.num_mbs, view.move_s, view.move_turn_s
        live = max(1, self.live_rows(view, pool))
        device_rows = (view.device_tokens - self.reserve(view)) * live / max(1, view.inflight_tokens)
        if self.moves_serialize:
            busy = self.admit_mbs(view, pool, pressed=True, stream=False)
            return (busy - 2) * cost.a > 2 * T + 2 * p * device_rows
        S = device_rows / 2
        stream_turn = max(cost.a + cost.b * (device_rows + (M - 2) * S) / M, T + 2 * p * S)
        stream_rate = (device_rows + (M - 2) * S) / (M * stream_turn)
        plain_rate = device_rows / (M * cost.a + cost.b * device_rows)
        return stream_rate > plain_rate

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

    # ---- one decision --------------------------------------------------------------------
    def committed(self, view: TurnView, pool: list[PoolEntry],
                  planned: Collection[str] | Mapping[str, int]) -> int:
        """Device tokens that rejoins already on their way to other turns hold while this
        plan's target turn T = turn + M loads and runs. T's rejoins are loaded in the slot
        before T and leave after T (parked after the forward, freed after their
        write-through), so they share the device with the stream of T - 1 (computing while
        T's loads) and of T + 1 (loading while T computes; it is planned later, against
        this one); the streams of T - 2 and earlier have left by then. Counting every plan
        in flight instead (M - 1 of them) held a micro-batch's stream to about D / M of the
        device, not the D / 2 two streams share: the simulator's pp 8 runs streamed 41% of
        the capacity optimum with the PCIe link 80% idle. Targets unknown (a set of ids, a
        view without prefetch_targets): all count."""
        near = view.turn + view.num_mbs - 1
        if view.prefetch_targets or not view.prefetching_tokens:
            pre = sum(n for t, n in view.prefetch_targets if t >= near)
        else:
            pre = view.prefetching_tokens
        if isinstance(planned, Mapping):
            ids = {rid for rid, t in planned.items() if t >= near}
        else:
            ids = set(planned)
        return pre + sum(p.kv_len + 1 for p in pool if p.rid in ids)

    def decide(self, view: TurnView, pool: list[PoolEntry],
               planned: Collection[str] | Mapping[str, int]) -> TurnPlan:
        """`planned`: the rejoins of plans not yet prefetched, rid -> target turn (a bare
        collection of ids: targets unknown, see committed)."""
        waiting = [p for p in pool if p.rid not in planned]
        if not waiting:
            quiet = self.quiet(view, pool)
            if quiet is not None:
                return quiet
        cost = self.cost_model.current()
        mode = self.mode(view, pool, cost)
        stay = self.stay(view, mode)
        rows = 0 if mode.drain else max(
            0, min(view.row_cap, self.fair_rows(view, pool, mode.busy_mbs)) - stay.rows)
        budget = self.budget(view, cost, pool, rows)
        # the window is one slot: at least the step this micro-batch just ran (an empty
        # pipeline predicts empty slots, and a fast link would look slow)
        step_s = cost.predict(len(view.decode_rids), sum(view.decode_ctx))
        resident_room = self.resident_room(view, max(budget.window_s, step_s))
        kept = self.keep_for_link(view, mode, stay, resident_room)
        rows = max(0, rows - (kept.rows - stay.rows))
        cands = self.shortlist([Candidate(p.rid, p.kv_len, p.kv_len, (), p.rounds_waited, p.arrival)
                                for p in waiting])
        committed = self.committed(view, pool, planned)
        room = self.room(view, mode, kept, rows, resident_room, cands, committed)
        rejoin, plan_bytes = self.choose(view, cost, cands, room, budget)
        if plan_bytes:
            c = budget.timeline.commit(0, plan_bytes, budget.issue_at).commitments[-1]
            self.link_free_at = c.end
            self.on_link = [o for o in self.on_link if o.end > view.now]
            self.on_link.append(OnLink(view.turn, budget.issue_at, plan_bytes, c.start, c.end))
        M = view.num_mbs
        return TurnPlan(view.turn, view.mb, kept.park, rejoin, view.turn + M,
                        self.issue_turn(view), budget.nbytes, plan_bytes,
                        admit_mbs=mode.admit_mbs)

    def quiet(self, view: TurnView, pool: list[PoolEntry]) -> TurnPlan | None:
        """The plan when no one waits to come back (the caller checked), if nothing of this
        micro-batch parks: its rows stay (no drain, no stream), or it decoded none (a turn
        of a micro-batch drained past the busy ones, at M > P the empty turns of every
        cycle, two of four at M = 4 on pp 2); None: the full decision. Nothing parks and
        nothing rejoins, so the plan carries admit_mbs alone, decided without the budget,
        the room or the step-cost refit, none of which can change it (the cost is read
        only where a pressed turn asks whether to stream). At M > P this is every turn of
        a batch that fits: the full decision costs ~25-60 us a turn standalone, ~3x that
        inside the scheduler. Its budget is 0: a plan that moves nothing is sent for its
        admit_mbs alone and no budget is offered (stage.on_plan)."""
        pressed = self.pressure(view)
        mode = self.mode(view, pool, self.cost_model.current() if pressed else None)
        if mode.parks_decode and view.decode_rids:
            return None
        return TurnPlan(view.turn, view.mb, (), (), view.turn + view.num_mbs,
                        self.issue_turn(view), admit_mbs=mode.admit_mbs)

    @staticmethod
    def issue_turn(view: TurnView) -> int:
        """The turn at whose launch a plan's loads start: the last before the target turn
        whose micro-batch holds rows, so that its forward hides the copy. A turn of an
        empty micro-batch launches nothing (drained past the busy ones, its turn passes),
        and loads due there waited for the target's own ingest: beside no forward, fenced
        at once (measured, pp 2 at M = 4: half the loads, none of their time beside a
        forward). The earliest is the next turn, the first every stage has the plan by.
        A micro-batch that admits after all launches with the loads already running."""
        M = view.num_mbs
        for ahead in range(M - 1, 0, -1):         # turn view.turn + ahead runs mb + ahead
            if view.mb_rows[(view.mb + ahead) % M] > 0:
                return view.turn + ahead
        return view.turn + max(M - 1, 1)

    def mode(self, view: TurnView, pool: list[PoolEntry], cost: StepCost | None) -> Mode:
        """A micro-batch past the busy ones is drained: its rows park and it takes none
        back. While nothing presses their device copies survive, so a rejoin elsewhere moves
        no bytes, though the budget still charges their whole context (conservative).
        `cost` is read only when the turn is pressed (None otherwise)."""
        pressed = self.pressure(view)
        stream = pressed and self.streams(view, cost, pool)
        admit = self.admit_mbs(view, pool, pressed, stream)
        busy = min(admit, self.busy_mbs(view, pool))
        return Mode(pressed, stream, admit, busy, view.mb >= busy)

    @staticmethod
    def stay(view: TurnView, mode: Mode) -> Stay:
        """The residents stay; when the decode batch does not park, it stays whole (the
        running batch, growing a token a row)."""
        park = view.decode_rids if mode.parks_decode else ()
        rows = len(view.next_residents)
        tokens = sum(c + 1 for c in view.next_residents)
        if not park and view.decode_rids:
            rows = max(rows, view.mb_rows[view.mb])
            tokens = max(tokens, view.mb_ctx[view.mb] + view.mb_rows[view.mb])
        return Stay(tuple(park), rows, tokens)

    def keep_for_link(self, view: TurnView, mode: Mode, stay: Stay, resident_room: int) -> Stay:
        """A slow link (resident_room > 0): of the decode rows about to park, those the link
        could not bring back stay, within the room residents may hold and this micro-batch's
        1/M of it."""
        if resident_room <= 0 or not (stay.park and not mode.drain and view.decode_ctx):
            return stay
        held = self._held(view)
        limit = min(resident_room - held, resident_room // view.num_mbs)
        keep = self.keep_resident(view, limit - stay.tokens)
        if not keep:
            return stay
        extra = sum(c + 1 for r, c in zip(view.decode_rids, view.decode_ctx) if r in keep)
        return Stay(tuple(r for r in stay.park if r not in keep), stay.rows + len(keep),
                    stay.tokens + extra)

    def room(self, view: TurnView, mode: Mode, stay: Stay, rows: int, resident_room: int,
             cands: list[Candidate], committed: int = 0) -> Room:
        """Device tokens the rejoins may take. Streaming: one turn's share less what stays;
        on a slow link, half of what no resident holds (this turn's rejoins and the next
        micro-batch's load meanwhile). Unpressed: whatever no resident holds. Rows that do
        not stream stay where they are, so rejoins take only what no resident holds. And a
        request longer than the share would never come back: with nothing resident the
        oldest may have the device to itself (as stock SGLang would decode it alone), less
        what other turns' rejoins already hold: two long requests given the whole device in
        alternate micro-batches would each find the other prefetched, park for room at its
        own turn, and never decode (a livelock the liveness tests found)."""
        avail = view.device_tokens - self.reserve(view)
        unheld = avail - self._held(view) - committed
        share = self.turn_share(view)
        free = share - stay.tokens
        if resident_room > 0:
            # two streams share what no resident holds (this turn's and the next one's,
            # loading meanwhile), and the one before, still on the device, is committed
            free = min(share - stay.tokens, (unheld + committed - stay.tokens) // 2,
                       unheld - stay.tokens)
        if not mode.pressed:
            free = max(free, unheld - stay.tokens)
        elif not mode.stream and not mode.drain:
            free = unheld - stay.tokens
        free = max(0, free)
        if cands and not stay.rows:
            oldest = min(cands, key=lambda c: (-c.rounds_waited, c.arrival))
            if oldest.host_tokens + 1 > free:
                whole = avail - committed if resident_room <= 0 else unheld
                free = max(free, min(whole, oldest.host_tokens + 1))
        return Room(rows, free, avail, unheld, resident_room)

    def shortlist(self, cands: list[Candidate]) -> list[Candidate]:
        """At most max_candidates for the selector (its cost grows with them, and a decision
        runs every turn): those past the forcing age first, oldest first, up to a quarter of
        the cap (the selector takes them in that order anyway), then the best value per
        token (the core's (1 + rounds / A) / (tokens + 1)). Deterministic: ties by id."""
        cap = self.config.max_candidates
        if cap is None or len(cands) <= cap:
            return cands
        a = FORCE_AFTER
        aged = sorted((c for c in cands if c.rounds_waited >= a),
                      key=lambda c: (-c.rounds_waited, c.arrival, c.req_id))[:max(1, cap // 4)]
        taken = {c.req_id for c in aged}
        rest = sorted((c for c in cands if c.req_id not in taken),
                      key=lambda c: (-(1.0 + c.rounds_waited / a) / (c.host_tokens + 1.0), c.req_id))
        return aged + rest[:cap - len(aged)]

    def choose(self, view: TurnView, cost: StepCost, cands: list[Candidate], room: Room,
               budget: Budget) -> tuple[tuple[str, ...], int]:
        """The selector's rejoin set and its bytes, within room, budget and row cap."""
        if not (cands and room.rows > 0 and room.tokens > 0):
            return (), 0
        others = [(r, c) for m, (r, c) in enumerate(zip(view.mb_rows, view.mb_ctx)) if m != view.mb]
        plan = self.select(SelectorInput(
            candidates=tuple(cands), residents=(), budget_bytes=budget.nbytes,
            kv_bytes_per_token=self.k, device_tokens_free=room.tokens, row_cap=room.rows,
            cost=cost, other_step_times=tuple(cost.predict(r, c) for r, c in others),
            other_rows=tuple(r for r, _ in others), num_stages=self.num_stages))
        return tuple(plan.rejoin), plan.bytes

    def budget(self, view: TurnView, cost: StepCost, pool: list[PoolEntry], rows: int) -> Budget:
        """Bytes the link can bring back in the prefetch window: the slot before the target
        turn (issue at its start, land before the turn), after earlier commitments.

        The window is at least one step of the batch the plan would form (its oldest
        candidates up to the row cap): when the pipeline has drained (every request parked)
        the predicted slots are empty, and a zero budget would never bring anyone back; a
        transfer no compute can hide is then a stall the turn waits for, not a deadlock.
        With nothing resident for the target turn, a budget below the oldest request's KV
        would leave the micro-batch empty for ever (a slow link, a long context): the
        budget then covers that one request, and the turn stalls for its transfer."""
        M = view.num_mbs
        slot = [cost.predict(r, c) for r, c in zip(view.mb_rows, view.mb_ctx)]
        # slots that run before the prefetch is issued: this turn's, then the next M-2
        ahead = sum(slot[(view.mb + j) % M] for j in range(0, max(M - 1, 1)))
        window = slot[(view.mb + M - 1) % M] if M > 1 else slot[view.mb]
        oldest = sorted(pool, key=lambda p: (-p.rounds_waited, p.arrival))[:rows]
        window = max(window, cost.predict(len(oldest), sum(p.kv_len for p in oldest)), 0.0)
        floor = self.k * oldest[0].kv_len if oldest and not view.next_residents else 0
        issue_at = view.now + ahead - (window if M == 1 else 0.0)
        timeline = LinkTimeline(self.transfer, (window, window), link_free_at=self.link_free_at,
                                policy=BudgetPolicy(self.config.budget_margin))
        # mb 0 of this two-slot view leaves at issue_at; its next turn is one window later
        return Budget(max(timeline.budget(0, issue_at).nbytes, floor), issue_at, timeline, window)

    def _held(self, view: TurnView) -> int:
        """Tokens the other micro-batches' rows hold, with a token of growth each."""
        return sum(c + r for m, (r, c) in enumerate(zip(view.mb_rows, view.mb_ctx)) if m != view.mb)


__all__ = ["Budget", "CPU_PRIOR", "Decider", "DeciderConfig", "Mode", "PoolEntry", "Room",
           "Stay", "TurnPlan", "TurnView"]
