"""The stage-local rules (core/admission.py): who admits new requests, who parks first."""

from __future__ import annotations

from dataclasses import replace

from pipemax_sglang.core.admission import Admission, AdmissionView, admission, park_order

BASE = AdmissionView(turn=0, num_mbs=4, admit_mbs=2, prefill_in_progress=False, parked=0,
                     running_rows=5, inflight_rows=20, row_cap=64)


def _by_turn(view):
    return [admission(replace(view, turn=t)) for t in range(4)]


def test_new_requests_prefill_in_the_idle_micro_batches_not_the_busy_ones():
    D, H = Admission.DEFER, Admission.IF_HOST_ROOM
    # rows concentrated in micro-batches 0 and 1: a prefill there would cost their rows a
    # turn, so new requests prefill in 2 and 3 (their turns are empty) ...
    assert _by_turn(BASE) == [D, D, H, H]
    # ... a busy one with no rows takes them itself (the first fill) ...
    assert _by_turn(replace(BASE, running_rows=0)) == [H, H, H, H]
    # ... parked requests waiting for room go first, an empty busy one's room too
    assert _by_turn(replace(BASE, parked=1)) == [D] * 4
    assert _by_turn(replace(BASE, parked=1, running_rows=0)) == [D] * 4
    # the rule does not hold back a chunked prefill part-way
    assert admission(replace(BASE, turn=0, prefill_in_progress=True)) is Admission.ADMIT


def test_all_micro_batches_admit_when_stage_0_does_not_concentrate():
    free = replace(BASE, admit_mbs=4)
    assert _by_turn(free) == [Admission.ADMIT] * 4          # nothing parked: the scheduler decides
    assert _by_turn(replace(free, parked=3)) == [Admission.IF_HOST_ROOM] * 4


def test_nothing_parked_and_every_micro_batch_admitting_always_admits():
    """The stage answers this case without building the view (stage.defer_admission's fast
    path, do no harm): the rule must give ADMIT for every such view, whatever else holds."""
    views = [AdmissionView(turn=t, num_mbs=m, admit_mbs=a, prefill_in_progress=pf, parked=0,
                           running_rows=r, inflight_rows=i, row_cap=8, oldest_wait=w)
             for m in (1, 2, 4) for a in (m, m + 1) for t in range(m) for pf in (False, True)
             for r in (0, 8) for i in (0, 8, 4 * 8, 9 * 8) for w in (0, 99)]
    assert len(views) == (1 + 2 + 4) * 2 * 2 * 2 * 4 * 2
    assert [v for v in views if admission(v) is not Admission.ADMIT] == []


def test_a_full_pipeline_defers_and_an_empty_one_always_admits():
    assert admission(replace(BASE, admit_mbs=4, parked=1, inflight_rows=4 * 64)) is Admission.DEFER
    # liveness: with nothing in flight there is nothing to wait for (the host check that
    # once deferred an empty server for ever does not apply)
    empty = replace(BASE, turn=2, admit_mbs=4, parked=0, running_rows=0, inflight_rows=0)
    assert admission(empty) is Admission.ADMIT
    assert admission(replace(empty, admit_mbs=2)) is Admission.ADMIT


def test_a_step_that_does_not_fit_parks_the_least_left_to_generate_first():
    left = [165, 10, 85, 1]                 # long, short, mid, done-soon
    # SGLang would keep the most advanced (index 1) and retract the newest first
    keep = park_order([1, 3, 0, 2], left)
    assert keep == [0, 2, 1, 3]             # parks pop from the end: 1 left goes first
    # ties keep SGLang's order; by priority is the user's order as SGLang gives it
    assert park_order([3, 1, 0, 2], [5, 5, 5, 5]) == [3, 1, 0, 2]
    assert park_order([3, 1, 0, 2], [1, 2, 3, 4], by_priority=True) == [3, 1, 0, 2]
