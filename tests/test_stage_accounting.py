"""PipeMaxStage's own bookkeeping, without an engine: what it counts as in flight, and the
price of a KV move it reports."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest

from pipemax_sglang.core.move_price import MovePriceFit
from pipemax_sglang.runtime.stats import PipeMaxStats
from pipemax_sglang.sglang.messages import PipeMaxPlan
from pipemax_sglang.sglang.stage import PipeMaxStage


def _parked(rid: str, kv_len: int):
    return SimpleNamespace(rid=rid, kv_len=kv_len)


def test_in_flight_counts_the_running_the_parked_and_the_prefetched():
    stage = PipeMaxStage.__new__(PipeMaxStage)       # no scheduler: only the pools
    stage.pool = {"a": _parked("a", 100), "b": _parked("b", 40)}
    stage.prefetched = defaultdict(list)
    stage.prefetched[12] = [SimpleNamespace(parked=_parked("c", 70))]
    stage.prefetched[13] = [SimpleNamespace(parked=_parked("d", 30)), SimpleNamespace(parked=_parked("e", 5))]
    # the prefetched left the pool but hold KV until they rejoin: leaving them out
    # drained a busy micro-batch at M = 4
    assert stage.inflight_tokens(running=1000) == 1000 + 140 + 105


def test_moves_are_timed_into_the_stats():
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats = PipeMaxStats()
    with stage._moving("park"):
        sum(range(10_000))
    stage.stats.parks, stage.stats.rejoins = 3, 1
    assert stage.stats.kv_move_s > 0 and stage.stats.move_phase_s["park"] == stage.stats.kv_move_s
    d = stage.stats.to_dict()
    assert d["kv_move_ms"] == 1e3 * stage.stats.kv_move_s / 4


def test_a_reap_charges_its_wait_to_copy_wait_and_its_releases_to_the_moves(monkeypatch):
    """Releasing what a park held (an allocator free, a tree unlock a parked request) is the
    park's own work; only waiting for its copy is copy_wait_s. Both outside a move (the
    reap before a turn) and inside one (timed once, by the move around it). A fake clock:
    the copy's wait takes 2 s, an unlock 1 s."""
    import time

    import torch

    from pipemax_sglang.sglang.kv_moves import DeferredFrees

    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    class SlowCopy:
        def synchronize(self):
            now[0] += 2.0

    class Sched:
        def __init__(self):
            self.tree_cache, self.token_to_kv_pool_allocator = self, self

        def unlock(self, lock):
            now[0] += 1.0

        def free(self, idx):
            pass

    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats, stage.sched, stage.turn, stage.frees = PipeMaxStats(), Sched(), 5, DeferredFrees()
    copy = SlowCopy()
    stage.frees.add(3, copy, torch.tensor([1, 2]))
    stage.frees.add(3, copy, torch.empty(0, dtype=torch.int64), "lock-a")
    stage.frees.add(3, copy, torch.empty(0, dtype=torch.int64), "lock-b")
    stage.frees.add(9, copy, torch.tensor([3]))         # a later turn's: not due
    stage._reap_frees()
    assert len(stage.frees.items) == 1
    assert stage.stats.copy_wait_s == 2.0                 # the one copy, waited for once
    assert stage.stats.kv_move_s == stage.stats.move_phase_s["park"] == 2.0   # two unlocks
    stage._reap_frees()                                   # nothing due: nothing timed
    assert stage.stats.kv_move_s == 2.0
    with stage._moving("issue"):                          # inside a move: timed by it alone
        stage._reap_frees(wait=True)
    assert stage.frees.items == [] and stage.stats.copy_wait_s == 4.0
    assert stage.stats.move_phase_s == {"park": 2.0, "issue": 0.0} and stage.stats.kv_move_s == 2.0


def test_no_moves_report_no_price():
    assert PipeMaxStats().to_dict()["kv_move_ms"] == 0.0


def test_each_turn_that_moves_is_one_sample_of_the_move_price():
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats, stage.move_fit, stage._priced = PipeMaxStats(), MovePriceFit(min_moves=1), (0, 0.0)
    stage._sample_move_price()                            # nothing moved: no sample
    assert stage.move_price() is None
    # turns moving 8 and 40 requests at 2 ms a turn plus 25 us a move
    for moves in (8, 40) * 8:
        stage.stats.parks += moves // 2
        stage.stats.rejoins += moves - moves // 2
        stage.stats.kv_move_s += 2e-3 + 25e-6 * moves
        stage._sample_move_price()
    price = stage.move_price()
    assert price.turn_s == pytest.approx(2e-3, rel=0.02)
    assert price.move_s == pytest.approx(25e-6, rel=0.02)
    # the average per move (what the stage priced moves at before) is another number
    assert stage.stats.kv_move_s / (stage.stats.parks + stage.stats.rejoins) > 2 * price.move_s
    assert stage._price_report() == {"move_turn_ms": pytest.approx(2.0, rel=0.02),
                                     "move_us": pytest.approx(25.0, rel=0.02)}


def test_move_time_of_a_turn_that_counted_no_move_goes_with_the_next_sample():
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats, stage.move_fit, stage._priced = PipeMaxStats(), MovePriceFit(min_moves=1), (0, 0.0)
    stage.stats.kv_move_s = 1e-3                          # a phase timed, no move counted yet
    stage._sample_move_price()
    assert stage.move_price() is None and stage._priced == (0, 0.0)
    stage.stats.parks, stage.stats.kv_move_s = 4, 3e-3    # the next turn counts its parks
    stage._sample_move_price()
    assert list(stage.move_fit._samples) == [(4, pytest.approx(3e-3))]
    assert stage._priced == (4, 3e-3)


def _req(rid: str, max_new: int | None, generated: int):
    return SimpleNamespace(rid=rid, sampling_params=SimpleNamespace(max_new_tokens=max_new),
                           output_ids=[0] * generated)


class _Batch:
    """The two things keep_order reads of a ScheduleBatch: its requests and SGLang's
    retraction order (most preferred to keep first)."""

    def __init__(self, reqs, sglang_order):
        self.reqs = reqs
        self._order = sglang_order

    def _get_decode_retraction_order(self, reqs):
        assert reqs is self.reqs
        return list(self._order)


def test_the_stage_parks_by_tokens_left_from_sglang_requests():
    reqs = [_req("long", 175, 10), _req("short", 40, 30), _req("mid", 90, 5), _req("done-soon", 20, 19)]
    keep = PipeMaxStage.keep_order(_Batch(reqs, [1, 3, 0, 2]))
    assert [reqs[i].rid for i in keep] == ["long", "mid", "short", "done-soon"]
    # no max_new_tokens: unbounded, kept before any bounded; ties in SGLang's order
    reqs = [_req("a", None, 3), _req("b", None, 3), _req("c", 50, 0), _req("d", 50, 0)]
    assert PipeMaxStage.keep_order(_Batch(reqs, [3, 1, 0, 2])) == [1, 0, 3, 2]


def test_a_plan_carries_admit_mbs_to_the_stage_and_a_plan_without_it_changes_nothing():
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats, stage.tasks, stage.admit_mbs, stage.pool, stage.stock = PipeMaxStats(), [], 2, {}, False
    stage.on_plan(PipeMaxPlan(turn=3, mb=3, park=(), rejoin=(), target_turn=7, issue_turn=6, admit_mbs=4))
    assert stage.admit_mbs == 4
    stage.on_plan(PipeMaxPlan(turn=4, mb=0, park=(), rejoin=(), target_turn=8, issue_turn=7))
    assert stage.admit_mbs == 4


def test_with_nothing_to_move_stage_0_skips_the_decision():
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.pool, stage.tasks, stage.prefetched = {}, [], defaultdict(list)
    stage.ranks = SimpleNamespace(pp_size=2)
    stage.decider = SimpleNamespace(moves_serialize=True)
    stage.stats = PipeMaxStats()
    stage.move_fit = MovePriceFit()
    stage.config = SimpleNamespace(stream="auto")
    stage.M = 2
    assert stage._decision_is_noop()                      # M = P = 2: nothing can stream
    stage.M = 4                                           # past the stages: drain, concentrate
    assert not stage._decision_is_noop()
    stage.M, stage.ranks = 4, SimpleNamespace(pp_size=4)
    assert stage._decision_is_noop()                      # CPU, moves not priced yet
    stage.move_fit.observe(40, 0.01)
    assert not stage._decision_is_noop()                  # priced: streaming may pay
    stage.config = SimpleNamespace(stream="never")
    assert stage._decision_is_noop()
    stage.pool = {"r": _parked("r", 10)}                  # someone to bring back
    assert not stage._decision_is_noop()


def _plan(target: int, issue: int):
    return SimpleNamespace(target_turn=target, issue_turn=issue, rejoin=("x",))


def _issuing_stage(turn: int, tasks):
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats = PipeMaxStats()
    stage.turn = turn
    stage.tasks = list(tasks)
    issued = []
    stage._issue = lambda due: (issued.extend(due),
                                setattr(stage, "tasks", [t for t in stage.tasks if t not in due]))
    return stage, issued


def test_prefetches_go_out_at_the_launch_of_the_turn_before_their_own():
    # after_turn(i) has counted turn i, so at its launch self.turn is i + 1: the loads for
    # i + 1 (issue_turn i) go out there, beside turn i's forward; i + 2's wait
    i = 20
    next_one, later = _plan(i + 1, i), _plan(i + 2, i + 1)
    stage, issued = _issuing_stage(i, [next_one, later])
    stage.issue_prefetches()                        # ingest of turn i: nothing is overdue
    assert issued == []
    stage.turn = i + 1
    stage.issue_prefetches(at_launch=True)          # launch of turn i
    assert issued == [next_one] and stage.tasks == [later]


def test_a_slot_that_launched_nothing_leaves_no_plan_behind_its_turn():
    # turn i had nothing to run (no launch): at the ingest of i + 1 its loads are overdue
    i = 20
    plan = _plan(i + 1, i)
    stage, issued = _issuing_stage(i + 1, [plan])
    stage.issue_prefetches()
    assert issued == [plan] and stage.tasks == []


def _pressed_stage(monkeypatch, lens: list[int], frees: list[int], avail: int = 0):
    """A stage whose micro-batch of len(lens) rows has `avail` free slots for the next step
    (one a row); parking row i gives back frees[i] slots once reaped (its own KV; what a
    shared prefix holds stays). Returns (stage, batch, the groups parked, the rows kept)."""
    from pipemax_sglang.sglang import compat

    reqs = [SimpleNamespace(rid=f"r{i}", kv=SimpleNamespace(kv_committed_len=n), pipemax_ring=None)
            for i, n in enumerate(lens)]
    batch = SimpleNamespace(reqs=reqs)
    mem = {"avail": avail, "pending": 0}
    groups, kept = [], []
    monkeypatch.setattr(compat, "decode_fits", lambda b, keep=None: mem["avail"] >= len(keep))
    monkeypatch.setattr(compat, "decode_shortfall", lambda b, keep: max(0, len(keep) - mem["avail"]))
    monkeypatch.setattr(compat, "reserve_host", lambda sched, n: True)
    monkeypatch.setattr(compat, "retraction_by_priority", lambda: False)
    monkeypatch.setattr(compat, "keep_rows", lambda b, keep: kept.append(list(keep)))
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats, stage.stock, stage.pool, stage.sched, stage.turn = PipeMaxStats(), False, {}, None, 7
    stage.keep_order = lambda b, by_priority=False: list(range(len(b.reqs)))

    def park_now(group, turn, finish):
        groups.append([r.rid for r in group])
        mem["pending"] += sum(frees[int(r.rid[1:])] for r in group)
        return group

    def reap(wait=False):
        mem["avail"] += mem["pending"]
        mem["pending"] = 0

    stage._park_now, stage._reap_frees, stage._reap_writes = park_now, reap, lambda: None
    return stage, batch, groups, kept


def test_a_pressed_step_parks_a_group_with_one_copy(monkeypatch):
    # 8 rows of 2 tokens, none free: the step needs 8, three parked rows free 3 each (their
    # KV and their next token's slot), 9 >= 8 - 3. One at a time this parked the same three
    # with three copies and three waits.
    stage, batch, groups, kept = _pressed_stage(monkeypatch, [2] * 8, [3] * 8)
    stage._make_room(batch)
    assert groups == [["r7", "r6", "r5"]]
    assert kept == [[0, 1, 2, 3, 4]]
    assert stage.stats.recomputes == 0


def test_a_group_never_parks_a_row_the_one_at_a_time_loop_keeps(monkeypatch):
    # shared prefixes: a parked row frees 2 of its 10 tokens, so the optimistic group (one
    # row covers the shortfall of 6) falls short and the loop parks the next: the rows
    # parked are exactly those parking one at a time would have parked
    stage, batch, groups, kept = _pressed_stage(monkeypatch, [10] * 6, [2] * 6)
    stage._make_room(batch)
    assert groups == [["r5"], ["r4"]]
    assert kept == [[0, 1, 2, 3]]


def test_a_load_waits_for_a_park_copy_still_writing_its_host_slots_and_counts_it(monkeypatch):
    """The turn order leaves no park copy unfinished at a load of what it wrote
    (kv_moves' invariants); where one is, the stage waits for it before the load is
    submitted, counts it and keeps the wait out of the move's time."""
    import torch

    from pipemax_sglang.sglang import kv_moves
    from pipemax_sglang.sglang.kv_moves import HostCopy, ParkedReq, Prefetch, whole

    class Copy:
        def __init__(self, done):
            self.done, self.waited = done, False

        def query(self):
            return self.done

        def synchronize(self):
            self.waited = self.done = True

    order = []
    monkeypatch.setattr(kv_moves, "load_many", lambda pfs, sched: order.append(
        ("load", [pf.parked.req.pipemax_ring.writer for pf in pfs])) or "the-load")
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.stats, stage.sched, stage.turn = PipeMaxStats(), None, 7
    stage.ranks = SimpleNamespace(pp_rank=0)

    def prefetch(writer):
        req = SimpleNamespace(rid="r", pipemax_ring=HostCopy([whole(torch.arange(4))], 4, writer=writer))
        return Prefetch(ParkedReq(req, 4, 0, 0), 8, whole(torch.arange(100, 104)))

    done = Copy(True)
    assert stage._load([prefetch(done)]) == "the-load"
    assert not done.waited and stage.stats.late_park_copies == 0 and stage.stats.copy_wait_s == 0

    late = Copy(False)
    assert stage._load([prefetch(late), prefetch(late)]) == "the-load"
    assert late.waited and order[-1] == ("load", [None, None])    # waited before the load
    assert stage.stats.late_park_copies == 1 and stage.stats.copy_wait_s > 0
