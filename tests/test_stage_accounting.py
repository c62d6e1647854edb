"""PipeMaxStage's own bookkeeping, without an engine: what it counts as in flight, and the
price of a KV move it reports."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

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
    with stage._moving():
        sum(range(10_000))
    stage.stats.parks, stage.stats.rejoins = 3, 1
    assert stage.stats.kv_move_s > 0
    d = stage.stats.to_dict()
    assert d["kv_move_ms"] == 1e3 * stage.stats.kv_move_s / 4


def test_no_moves_report_no_price():
    assert PipeMaxStats().to_dict()["kv_move_ms"] == 0.0


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


def test_a_step_that_does_not_fit_parks_the_least_left_to_generate_first():
    reqs = [_req("long", 175, 10), _req("short", 40, 30), _req("mid", 90, 5), _req("done-soon", 20, 19)]
    # SGLang would keep the most advanced ("short") and retract the newest first
    keep = PipeMaxStage.keep_order(_Batch(reqs, [1, 3, 0, 2]))
    # parks pop from the end: 1 token left goes first, the 165 left stays longest
    assert [reqs[i].rid for i in keep] == ["long", "mid", "short", "done-soon"]


def test_equal_bounds_keep_sglangs_retraction_order():
    reqs = [_req("a", None, 3), _req("b", None, 3), _req("c", 50, 0), _req("d", 50, 0)]
    keep = PipeMaxStage.keep_order(_Batch(reqs, [3, 1, 0, 2]))
    # no max_new_tokens: unbounded, kept before any bounded; ties in SGLang's order
    assert keep == [1, 0, 3, 2]
    # retraction by priority is the user's order: kept as SGLang gives it
    assert PipeMaxStage.keep_order(_Batch(reqs, [3, 1, 0, 2]), by_priority=True) == [3, 1, 0, 2]


def test_new_requests_prefill_in_the_idle_micro_batches_not_the_busy_ones(monkeypatch):
    from pipemax_sglang.sglang import compat
    monkeypatch.setattr(compat, "row_cap", lambda sched: 64)
    monkeypatch.setattr(compat, "host_free_tokens", lambda sched: 10_000)
    monkeypatch.setattr(compat, "device_tokens", lambda sched: 1_000)
    stage = PipeMaxStage.__new__(PipeMaxStage)
    stage.M, stage.admit_mbs, stage.pool = 4, 2, {}
    stage.inflight_rows = lambda: 20
    stage.sched = SimpleNamespace(chunked_req=None)
    rows, empty = SimpleNamespace(is_empty=lambda: False), SimpleNamespace(is_empty=lambda: True)

    def deferred(batch):
        out = []
        for turn in range(4):
            stage.turn = turn
            out.append(stage.defer_admission(batch))
        return out

    # rows concentrated in micro-batches 0 and 1: a prefill there would cost their rows a
    # turn, so new requests prefill in 2 and 3 (their turns are empty) ...
    assert deferred(rows) == [True, True, False, False]
    # ... a busy one with no rows takes them itself (the first fill) ...
    assert deferred(empty) == [False, False, False, False]
    # ... and parked requests waiting for room go first, an empty busy one's room too
    stage.pool = {"p": _parked("p", 50)}
    assert deferred(rows) == [True, True, True, True]
    assert deferred(empty) == [True, True, True, True]
    # this rule does not hold back a chunked prefill part-way (the pipeline is not full)
    stage.sched.chunked_req, stage.turn = object(), 3
    assert not stage.defer_admission(rows)
    # stage 0's plan changes it; it reaches every stage at the same ingest
    stage.stats, stage.tasks, stage.sched.chunked_req = PipeMaxStats(), [], None
    stage.on_plan(PipeMaxPlan(turn=3, mb=3, park=(), rejoin=(), target_turn=7, issue_turn=6, admit_mbs=4))
    assert stage.admit_mbs == 4
    stage.pool = {}
    assert deferred(rows) == [False] * 4                 # all M admit: SGLang decides
    stage.on_plan(PipeMaxPlan(turn=4, mb=0, park=(), rejoin=(), target_turn=8, issue_turn=7))
    assert stage.admit_mbs == 4                      # a plan without it changes nothing
