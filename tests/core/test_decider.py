"""The decider (core/decider.py) on plain numbers: no engine, no sglang import."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from pipemax_sglang.core import StepCost
from pipemax_sglang.core.decider import Decider, DeciderConfig, PoolEntry, TurnView


def _view(mb_rows, decode_rids=(), mb=0, row_cap=64, device_tokens=100_000, residents=(),
          prefetching=0):
    return TurnView(turn=10, mb=mb, num_mbs=len(mb_rows), decode_rids=tuple(decode_rids),
                    next_residents=tuple(residents), prefetching=prefetching, mb_rows=tuple(mb_rows), mb_ctx=tuple(100 * r for r in mb_rows),
                    inflight_tokens=50_000, device_tokens=device_tokens, waiting=1, row_cap=row_cap)


def _pool(n, first=0):
    return [PoolEntry(f"r{i}", 100, 0, i) for i in range(first, first + n)]


def test_a_small_pool_is_spread_over_the_micro_batches_not_taken_by_one():
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=2, link_bytes_per_s=None)
    # 20 parked, the 4 just decoded in mb 0 being parked, 4 running in each other micro-batch
    view = _view([4, 4, 4, 4], decode_rids=[f"d{i}" for i in range(4)])
    assert d.fair_rows(view, _pool(20)) == 9            # ceil((20 + 4 + 12) / 4)
    plan = d.decide(view, _pool(20), planned=set())
    assert 0 < len(plan.rejoin) <= 9
    assert set(plan.park) == {f"d{i}" for i in range(4)}    # under pressure: park after forward


def test_one_micro_batch_takes_what_fits():
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=1, link_bytes_per_s=None)
    view = _view([0])
    assert d.fair_rows(view, _pool(30)) == 30
    assert len(d.decide(view, _pool(30), planned=set()).rejoin) == 30


def test_planned_requests_are_not_chosen_twice():
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=2, link_bytes_per_s=None)
    pool = _pool(8)
    plan = d.decide(_view([0, 0]), pool, planned={"r0", "r1", "r2"})
    assert plan.rejoin and not set(plan.rejoin) & {"r0", "r1", "r2"}


def test_an_extend_turn_counts_the_micro_batch_s_own_rows_and_the_prefetched():
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=2, link_bytes_per_s=None)
    # no decode this turn: 6 rows stay resident in mb 0, 4 run in mb 1, 2 are prefetched
    view = _view([6, 4], residents=[100] * 6, prefetching=2)
    assert d.fair_rows(view, _pool(4)) == 8             # ceil((4 + 6 + 4 + 2) / 2)
    assert len(d.decide(view, _pool(4), planned=set()).rejoin) == 2     # 8 - 6 resident


def test_a_request_longer_than_the_share_still_comes_back_alone():
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=2, link_bytes_per_s=None)
    big = [PoolEntry("big", 700, 3, 0)]
    view = _view([0, 0], device_tokens=1000)           # share (1000 - 50) / 2 < 700
    assert d.decide(view, big, planned=set()).rejoin == ("big",)


def _tail_view(mb, mb_rows, decode, inflight, device_tokens=10_000):
    return TurnView(turn=20 + mb, mb=mb, num_mbs=len(mb_rows), decode_rids=tuple(decode),
                    next_residents=(), mb_rows=tuple(mb_rows), mb_ctx=tuple(100 * r for r in mb_rows),
                    inflight_tokens=inflight, device_tokens=device_tokens, waiting=0, row_cap=64)


def test_the_tail_of_a_batch_drains_into_as_few_micro_batches_as_keep_the_stages_busy():
    # 2 stages, 4 micro-batches, 3 requests left in each, 1,200 tokens: one turn's share
    # ((10,000 - 500 - 12) / 2) holds them all, so 2 micro-batches (one per stage) suffice
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=2, link_bytes_per_s=None)
    rows = [3, 3, 3, 3]
    decode = [f"m3-{i}" for i in range(3)]
    view = _tail_view(3, rows, decode, inflight=1200)
    assert not d.pressure(view)
    assert d.busy_mbs(view, []) == 2
    plan = d.decide(view, [], planned=set())
    assert set(plan.park) == set(decode) and plan.rejoin == ()     # mb 3 drains, takes none
    # a busy micro-batch takes the drained rows back, up to an even share over 2
    pool = [PoolEntry(r, 100, 0, i) for i, r in enumerate(decode)]
    view0 = _tail_view(0, [3, 3, 0, 3], [f"m0-{i}" for i in range(3)], inflight=1200)
    assert d.fair_rows(view0, pool) == 6                  # ceil((3 + 3 + 3 + 3) / 2)
    plan0 = d.decide(view0, pool, planned=set())
    assert plan0.park == () and set(plan0.rejoin) == set(decode)    # nothing presses: stay


def test_a_busy_pipeline_keeps_every_micro_batch():
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=2, link_bytes_per_s=None)
    # 12,000 tokens in flight need 3 turns' shares of 4,7xx: 3 micro-batches stay busy
    assert d.busy_mbs(_tail_view(0, [8, 8, 8, 8], (), inflight=12_000), []) == 3
    assert d.busy_mbs(_tail_view(0, [8, 8, 8, 8], (), inflight=30_000), []) == 4
    # queued requests will fill every micro-batch, and M = P never drains
    assert d.busy_mbs(_view([1, 1, 1, 1]), []) == 4
    d1 = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=4, link_bytes_per_s=None)
    assert d1.busy_mbs(_tail_view(0, [1, 1, 1, 1], (), inflight=100), []) == 4


def test_a_slow_link_keeps_rows_resident_that_it_could_not_bring_back():
    # 20 MB/s and a ~10 ms step: a window brings back ~100 tokens of 2 KiB, so parking a
    # pressed micro-batch's rows would only shrink its next turn; they stay, up to 1/M of
    # the device less the two streams, and the rest park
    slow = Decider(DeciderConfig(), kv_bytes_per_token=2048, num_stages=2, link_bytes_per_s=2e7)
    decode = [f"d{i}" for i in range(12)]
    view = TurnView(turn=10, mb=0, num_mbs=4, decode_rids=tuple(decode), next_residents=(),
                    mb_rows=(12, 4, 4, 4), mb_ctx=(2400, 800, 800, 800), inflight_tokens=9_000,
                    device_tokens=8_000, waiting=0, row_cap=64, decode_ctx=(200,) * 12)
    assert slow.pressure(view)
    room = slow.resident_room(view, 0.01)
    assert 0 < room < 8_000 - slow.reserve(view)
    plan = slow.decide(view, _pool(4), planned=set())
    kept = [r for r in decode if r not in plan.park]
    assert kept == decode[:len(kept)] and 0 < len(kept) < 12
    assert len(kept) * 201 <= room // 4                  # this micro-batch's part of the room
    # a fast link streams everything back: every pressed row parks, as before
    fast = Decider(DeciderConfig(), kv_bytes_per_token=2048, num_stages=2, link_bytes_per_s=None)
    assert fast.resident_room(view, 0.01) <= 0
    assert set(fast.decide(view, _pool(4), planned=set()).park) == set(decode)


def _pressed_view(move_s, num_mbs=4, move_turn_s=0.0):
    decode = tuple(f"d{i}" for i in range(12))
    rows = (12,) + (4,) * (num_mbs - 1)
    return TurnView(turn=10, mb=0, num_mbs=num_mbs, decode_rids=decode, next_residents=(),
                    mb_rows=rows, mb_ctx=tuple(200 * r for r in rows), inflight_tokens=9_000,
                    device_tokens=8_000, waiting=0, row_cap=64, decode_ctx=(200,) * 12,
                    move_s=move_s, move_turn_s=move_turn_s)


def _cpu_decider(stream="auto", stages=2):
    return Decider(DeciderConfig(stream=stream), kv_bytes_per_token=2048, num_stages=stages,
                   link_bytes_per_s=None, moves_serialize=True)


def test_streaming_pays_only_when_a_move_costs_less_than_the_turns_it_saves():
    # pp 4 at M = 8 on a CPU: without streaming the rows go to 4 micro-batches, so (B - 2) a
    # = 8 ms against 2 p D': D' ~ 34 rows here, so the break-even p is ~0.12 ms
    d = _cpu_decider(stages=4)
    cost = StepCost(a=4e-3, b=2e-4, c=0.0)
    view = partial(_pressed_view, num_mbs=8)
    assert d.admit_mbs(view(move_s=None), [], pressed=True, stream=False) == 4
    assert d.streams(view(move_s=0.05e-3), cost, [])
    assert not d.streams(view(move_s=0.5e-3), cost, [])                # these CPUs: ~0.47 ms
    assert not d.streams(view(move_s=None), cost, [])                  # not priced yet
    # M = P = 4 streams too: each turn then holds half the device, not a quarter
    assert d.streams(view(move_s=0.05e-3, num_mbs=4), cost, [])
    # M = P = 2: the two turns are the two streams, no rows to gain
    assert not _cpu_decider().streams(_pressed_view(move_s=1e-6, num_mbs=2), cost, [])
    # forced, the price does not decide
    assert _cpu_decider("always").streams(_pressed_view(move_s=0.5e-3), cost, [])
    assert not _cpu_decider("never").streams(_pressed_view(move_s=1e-6), cost, [])


def test_a_cpu_pipeline_of_two_stages_never_streams_however_cheap_the_moves():
    # pp 2 at M = 4: without streaming the rows go to 2 micro-batches (the others' turns
    # pass empty), as many turns paying a as streaming's two loading turns: nothing to gain
    # (comparing with all M turns paying a streamed here, and ran 0.78x stock at M = 3)
    d = _cpu_decider()
    cost = StepCost(a=4e-3, b=2e-4, c=0.0)
    assert not d.streams(_pressed_view(move_s=1e-6), cost, [])
    assert not d.streams(replace(_pressed_view(move_s=1e-6), num_mbs=3, mb_rows=(12, 4, 4),
                                 mb_ctx=(2400, 800, 800)), cost, [])


def test_a_turns_share_of_the_move_price_is_paid_once_a_turn_not_per_row():
    d = _cpu_decider(stages=4)
    cost = StepCost(a=4e-3, b=2e-4, c=0.0)
    view = partial(_pressed_view, num_mbs=8)
    # 2 ms a turn that moves plus 50 us a move: streaming D' ~ 34 rows costs 2 T + 2 p D'
    # = 4 + 3.4 ms a turn, under the 8 ms the extra micro-batches save: it streams
    assert d.streams(view(move_s=50e-6, move_turn_s=2e-3), cost, [])
    # the same moves priced flat at a turn of 4 (0.55 ms each: what an average per move
    # measured there says) would look 37 ms dear, and not stream
    assert not d.streams(view(move_s=2e-3 / 4 + 50e-6), cost, [])
    # a turn's share dear enough on its own does not stream either: 7 + 3.4 > 8 ms
    assert not d.streams(view(move_s=50e-6, move_turn_s=3.5e-3), cost, [])


def test_without_streaming_rows_stay_and_rejoins_take_only_unheld_room():
    d = _cpu_decider("never")
    view = _pressed_view(move_s=0.5e-3)
    assert d.pressure(view)
    plan = d.decide(view, _pool(20), planned=set())
    assert plan.park == ()                                # nobody parks at the end of a turn
    # room nobody holds: D - reserve - every micro-batch's rows (this one's with its growth)
    unheld = 8_000 - d.reserve(view) - sum(c + r for r, c in zip(view.mb_rows, view.mb_ctx))
    assert len(plan.rejoin) * 101 <= max(0, unheld)
    streaming = _cpu_decider("always").decide(view, _pool(20), planned=set())
    assert set(streaming.park) == set(view.decode_rids)


def test_without_streaming_a_cpu_pipeline_admits_into_as_few_micro_batches_as_stages():
    cost = StepCost(a=4e-3, b=2e-4, c=0.0)
    d = _cpu_decider()
    d.cost_model = type(d.cost_model)(cost)
    # moves priced dear: no streaming, so rows go to P = 2 of the M = 4 micro-batches
    view = _pressed_view(move_s=0.5e-3)
    assert not d.streams(view, cost, [])
    assert d.decide(view, _pool(3), planned=set()).admit_mbs == 2
    # a micro-batch past them is drained: its rows park, none rejoin it
    last = replace(view, mb=3)
    plan = d.decide(last, _pool(3), planned=set())
    assert set(plan.park) == set(view.decode_rids) and plan.rejoin == ()
    # the row cap can need more of them: 24 rows running and 18 parked, at 16 a micro-batch
    view16 = replace(view, mb_rows=(12, 4, 4, 4), row_cap=16)
    assert d.admit_mbs(view16, [], True, False) == 2
    assert d.admit_mbs(view16, _pool(18), True, False) == 3
    # streaming, unpressed, or where moves overlap the forward (GPU): all M admit
    assert d.admit_mbs(view, [], True, True) == 4
    assert d.admit_mbs(view, [], False, False) == 4
    gpu = Decider(DeciderConfig(), kv_bytes_per_token=2048, num_stages=2, link_bytes_per_s=None)
    assert gpu.decide(view, _pool(3), planned=set()).admit_mbs == 4
    # as many micro-batches as stages: nothing to concentrate
    assert d.admit_mbs(_pressed_view(move_s=0.5e-3, num_mbs=2), [], True, False) == 2


def test_on_a_gpu_moves_are_free_while_they_fit_under_the_forward():
    gpu = Decider(DeciderConfig(), kv_bytes_per_token=2048, num_stages=2, link_bytes_per_s=None)
    cost = StepCost(a=20e-3, b=1e-4, c=0.0)            # an eighth of a 70B model: the weight read
    view = replace(_pressed_view(move_s=20e-6), device_tokens=200_000, inflight_tokens=400_000,
                   mb_rows=(250,) * 4, mb_ctx=(100_000,) * 4)
    assert gpu.streams(view, cost, [])                  # 20 us a move: hidden by the forward
    assert gpu.streams(replace(view, move_s=None), cost, [])     # not priced yet: stream
    # 5 ms a move: the scheduler's part of a turn outlasts the forward many times over
    assert not gpu.streams(replace(view, move_s=5e-3), cost, [])
    # a streaming turn's forward is ~44 ms here (a + b x 236 rows): 30 ms of turn share plus
    # the moves' 9 ms stays hidden; 60 ms a turn is paid in full and streaming loses
    assert gpu.streams(replace(view, move_turn_s=30e-3), cost, [])
    assert not gpu.streams(replace(view, move_turn_s=60e-3), cost, [])
    # and at M = P there are no extra rows to stream for, whatever the price
    two = replace(view, num_mbs=2, mb_rows=(250, 250), mb_ctx=(100_000, 100_000))
    assert not gpu.streams(two, cost, [])


def test_the_shortlist_keeps_the_aged_first_then_the_best_value_per_token():
    from pipemax_sglang.core.decider import FORCE_AFTER
    from pipemax_sglang.core.selector_types import Candidate

    d = Decider(DeciderConfig(max_candidates=8), 2048, 2, None)
    fresh = [Candidate(f"f{i}", 10 + i, 10 + i, (), 0, i) for i in range(20)]
    aged = [Candidate(f"a{i}", 5000, 5000, (), FORCE_AFTER + i, 100 + i) for i in range(5)]
    got = d.shortlist(fresh + aged)
    assert len(got) == 8
    # at most a quarter of the cap for the aged, oldest first, despite their size
    assert [c.req_id for c in got[:2]] == ["a4", "a3"]
    # then the shortest (best value per token) of the rest, not the remaining aged ones
    assert [c.req_id for c in got[2:]] == [f"f{i}" for i in range(6)]
    # under the cap, or with no cap, every candidate is shown unchanged
    assert d.shortlist(fresh[:8]) == fresh[:8]
    assert Decider(DeciderConfig(max_candidates=None), 2048, 2, None).shortlist(fresh + aged) == fresh + aged


def test_only_rejoins_near_the_target_turn_hold_its_device_room():
    """Turn T = turn + M's stream shares the device with T - 1's (computing while T's loads)
    and T + 1's; rejoins planned for T - 2 and earlier have left when T's load starts, so
    they must not shrink its room (counting all M - 1 plans in flight held a pp 8 stream to
    ~D / 8). Targets unknown (a bare set, a view without them), every plan still counts."""
    M = 8

    def decider():      # a link that brings back ~2,000 tokens a slot: residents stay
        return Decider(DeciderConfig(stream="always"), kv_bytes_per_token=1024, num_stages=8,
                       link_bytes_per_s=1e9)

    d = decider()
    view = TurnView(turn=80, mb=0, num_mbs=M, decode_rids=("d0",), next_residents=(),
                    mb_rows=(1,) + (10,) * (M - 1), mb_ctx=(500,) + (1000,) * (M - 1),
                    inflight_tokens=200_000, device_tokens=40_000, waiting=1, row_cap=1024,
                    decode_ctx=(501,), prefetching=10, prefetching_tokens=10 * 1001,
                    prefetch_targets=((81, 10 * 1001),))
    pool = [PoolEntry(f"r{i}", 1000, 0, i) for i in range(200)]
    early = {f"r{i}": 82 + i // 10 for i in range(50)}          # targets 82..86: T - 6 .. T - 2
    near = {f"r{i}": 87 for i in range(50, 60)}                 # T - 1 = 87
    assert d.committed(view, pool, early) == 0
    assert d.committed(view, pool, {**early, **near}) == 10 * 1001
    # the prefetched rows (target 81) run and park before T - 1 starts
    assert d.committed(view, pool, set(early) | set(near)) == 60 * 1001
    untimed = replace(view, prefetch_targets=())
    assert d.committed(untimed, pool, set(early) | set(near)) == 70 * 1001
    assert d.resident_room(view, 2e-3) > 0
    timed = d.decide(view, pool, {**early, **near})
    blind = decider().decide(untimed, pool, set(early) | set(near))
    assert len(timed.rejoin) > len(blind.rejoin)
    taken = sum(p.kv_len + 1 for p in pool if p.rid in timed.rejoin)
    assert taken <= d.turn_share(view)                       # one turn's share at most


def _slow_link_with_an_empty_micro_batch():
    """A 20 MB/s link, 40 parked requests of 300 tokens, micro-batch 0 empty: its plan's
    transfer holds the link for a few tens of milliseconds."""
    d = Decider(DeciderConfig(), kv_bytes_per_token=2048, num_stages=2, link_bytes_per_s=2e7)
    pool = [PoolEntry(f"p{i}", 300, 0, i) for i in range(40)]
    view = TurnView(turn=10, mb=0, num_mbs=3, decode_rids=(), next_residents=(),
                    mb_rows=(0, 16, 16), mb_ctx=(0, 3200, 3200), inflight_tokens=40 * 301 + 6400,
                    device_tokens=100_000, waiting=0, row_cap=64, now=100.0)
    return d, pool, view


def test_a_plan_whose_rejoins_loaded_less_gives_the_link_time_back_to_the_next():
    """A plan charges each rejoin its whole KV; where the tree still held a prompt the issue
    loads only the rest (Decider.loaded), and the next plan's window has the difference."""
    import copy

    d, pool, view = _slow_link_with_an_empty_micro_batch()
    plan = d.decide(view, pool, planned=set())
    assert plan.rejoin and plan.plan_bytes > 0
    assert d.link_free_at > view.now
    # the next micro-batch keeps its residents: its budget is the link's, no floor
    later = replace(view, turn=11, mb=1, mb_rows=(16, 16, 16), mb_ctx=(3200,) * 3,
                    next_residents=(200,) * 16)
    rest = [p for p in pool if p.rid not in plan.rejoin]

    whole, reused = copy.deepcopy(d), copy.deepcopy(d)
    assert whole.loaded(plan.turn, plan.plan_bytes // 2048, view.now) == 0   # loaded all it planned
    assert whole.link_free_at == d.link_free_at
    assert reused.loaded(plan.turn, len(plan.rejoin), view.now) == plan.plan_bytes - 2048 * len(plan.rejoin)
    assert view.now <= reused.link_free_at < d.link_free_at
    assert whole.decide(later, rest, planned=set()).budget_bytes == 0   # the link is still busy
    assert reused.decide(later, rest, planned=set()).budget_bytes > 0
    free = copy.deepcopy(d)
    assert free.loaded(plan.turn, 0, view.now + 10.0) == 0              # landed by then: nothing
    assert free.link_free_at == d.link_free_at


def test_a_plan_that_found_the_link_idle_keeps_its_slot_when_an_earlier_one_loads_less():
    """What a plan gives back moves only the plans queued behind it: one issued after the
    link had gone idle starts at its own issue, so link_free_at stays where it was."""
    import copy

    d, pool, view = _slow_link_with_an_empty_micro_batch()
    first = d.decide(view, pool, planned=set())
    busy_until = d.link_free_at
    rest = [p for p in pool if p.rid not in first.rejoin]
    # decided just before the first lands; issued a few slots later, on an idle link
    now = busy_until - 1e-4
    second = d.decide(replace(view, turn=11, now=now), rest, planned=set())
    assert first.plan_bytes and second.plan_bytes
    assert d.link_free_at - 2048 * 300 / 2e7 > busy_until        # it started after a gap
    idle = copy.deepcopy(d)
    assert idle.loaded(first.turn, 1, now) > 0
    assert idle.link_free_at == d.link_free_at         # the second plan never waited for it
    queued = copy.deepcopy(d)
    assert queued.loaded(second.turn, 1, now) > 0
    assert queued.link_free_at < d.link_free_at


def test_loads_start_at_the_last_turn_before_the_target_whose_micro_batch_runs():
    """A plan decided at turn 10 for micro-batch 0 targets turn 14 (M = 4); its loads start at
    the launch of the last turn before it that has rows to run, so a forward hides them: with
    micro-batches 2 and 3 drained (turns 12 and 13 launch nothing), turn 11 (micro-batch 1).
    Issued at turn 13 they would wait for the target's own ingest, beside no forward."""
    d = Decider(DeciderConfig(), kv_bytes_per_token=1024, num_stages=2, link_bytes_per_s=None)
    busy, drained = _view([4, 4, 4, 4]), _view([4, 4, 0, 0])
    assert Decider.issue_turn(busy) == 13
    assert Decider.issue_turn(drained) == 11
    assert Decider.issue_turn(_view([4, 0, 4, 0])) == 12
    # nothing runs before the target: the slot before it, as before (the target's ingest)
    assert Decider.issue_turn(_view([4, 0, 0, 0])) == 13
    assert Decider.issue_turn(_view([4, 0])) == 11 and Decider.issue_turn(_view([4])) == 11
    plan = d.decide(drained, _pool(6), planned=set())
    assert plan.rejoin and (plan.target_turn, plan.issue_turn) == (14, 11)


def test_with_no_one_waiting_the_quiet_plan_is_the_full_decision_with_no_budget(monkeypatch):
    """Decider.quiet skips the budget, the room and the refit where no one waits to rejoin:
    over random turns (M, stages, pressure, drain, stream settings, move prices; every pool
    entry already planned), its plan must be the full decision's with budget 0, and it must
    hand turns that drain or stream rows to the full decision. A turn with no decode rows
    (an empty micro-batch drained past the busy ones: half the turns at M = 4 on pp 2)
    parks nothing, so it is answered quietly too."""
    import random

    rng = random.Random(7)
    quiet_taken = full_taken = empty_drained = 0
    for _ in range(400):
        M = rng.randint(1, 5)
        stages = rng.randint(1, M)
        mb = rng.randrange(M)
        rows = tuple(0 if m == mb and rng.random() < 0.3 else rng.randint(0, 12) for m in range(M))
        decode = tuple(f"d{i}" for i in range(rows[mb]))
        ctx = tuple(rng.randint(50, 400) * r for r in rows)
        pool = [PoolEntry(f"p{i}", rng.randint(10, 500), rng.randint(0, 40), i)
                for i in range(rng.randint(0, 6))]
        view = TurnView(
            turn=50, mb=mb, num_mbs=M, decode_rids=decode, next_residents=(),
            mb_rows=rows, mb_ctx=ctx, inflight_tokens=sum(ctx) + sum(p.kv_len for p in pool),
            device_tokens=rng.choice([2_000, 6_000, 50_000]), waiting=rng.choice([0, 0, 3]),
            row_cap=rng.choice([4, 64]), decode_ctx=tuple(rng.randint(50, 400) for _ in decode),
            move_s=rng.choice([None, 1e-6, 5e-4]), move_turn_s=rng.choice([0.0, 1.5e-3]))
        planned = {p.rid: view.turn + M for p in pool}
        make = partial(Decider, DeciderConfig(stream=rng.choice(["auto", "always", "never"])),
                       kv_bytes_per_token=2048, num_stages=stages,
                       link_bytes_per_s=rng.choice([None, 1e9]),
                       moves_serialize=rng.choice([True, False]))
        with monkeypatch.context() as m:
            m.setattr(Decider, "quiet", lambda self, view, pool: None)
            full = make().decide(view, pool, planned)
        decider = make()
        got = decider.decide(view, pool, planned)
        if not decode and decider.mode(view, pool, None if not decider.pressure(view)
                                       else decider.cost_model.current()).parks_decode:
            empty_drained += 1
            assert got == replace(full, budget_bytes=0) and not (got.park or got.rejoin)
            assert decider.quiet(view, pool) is not None
        if got == full:
            full_taken += 1                 # the full decision ran (a drain or a stream)
        else:
            quiet_taken += 1
            assert not (full.park or full.rejoin)       # it answers only where nothing moves
            assert got == replace(full, budget_bytes=0)
    assert quiet_taken >= 100 and full_taken >= 50 and empty_drained >= 20, (quiet_taken, full_taken, empty_drained)
