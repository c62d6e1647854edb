"""PipeMaxStage's own bookkeeping, without an engine: what it counts as in flight, and the
price of a KV move it reports."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from pipemax_sglang.runtime.stats import PipeMaxStats
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
