"""The sliding-window prefetch budget, told as stories with the figures written out.

Link: 10 GB/s H2D (1 ms carries 10 MB), no latency unless said. Three micro-batches on the
stage, 10 ms slots each. Margin: 10% of every window.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipemax_sglang.core import (
    BudgetPolicy,
    LinkTimeline,
    PrefetchBudget,
    TransferModel,
    pipelined_nows,
)

MB = 1_000_000
MS = 1e-3
LINK = TransferModel(latency_s=0.0, h2d_bytes_per_s=10e9, d2h_bytes_per_s=10e9)


def timeline(**kw) -> LinkTimeline:
    return LinkTimeline(LINK, slot_times=(10 * MS, 10 * MS, 10 * MS),
                        policy=BudgetPolicy(margin_fraction=0.1), **kw)


def test_story_the_window_slides_and_commitments_shrink_later_budgets():
    tl = timeline()
    # t=0: mb0 leaves. Its next turn starts after mb1 and mb2: 0 + 10 + 10 = 20 ms.
    # Link free now: window [0, 20] ms, minus 10% -> 18 ms -> 180 MB.
    b0 = tl.budget(0, now=0.0)
    assert b0.turn_start == pytest.approx(20 * MS)
    assert b0.nbytes == pytest.approx(180 * MB, abs=2) and b0.held_s == 0.0
    # commit 120 MB for mb0 -> link busy [0, 12] ms
    tl = tl.commit(0, 120 * MB, now=0.0)
    assert tl.link_free_at == pytest.approx(12 * MS)

    # t=10: mb1 leaves. Next turn after mb2, mb0: 10 + 20 = 30 ms.
    # Link free only at 12 ms: window [12, 30] = 18 ms, minus 10% -> 16.2 ms -> 162 MB
    # (it would be 180 MB without mb0's prefetch: earlier commitments hold the link).
    b1 = tl.budget(1, now=10 * MS)
    assert b1.link_start == pytest.approx(12 * MS) and b1.held_s == pytest.approx(2 * MS)
    assert b1.nbytes == pytest.approx(162 * MB, abs=2)
    # commit all 162 MB for mb1 -> link busy [12, 28.2] ms, which lands before 30 ms
    tl = tl.commit(1, b1.nbytes, now=10 * MS)
    assert tl.link_free_at == pytest.approx(28.2 * MS) and tl.link_free_at < b1.turn_start

    # t=20: mb2 leaves, next turn at 40 ms. Link free at 28.2: window 11.8 ms, minus
    # 10% -> 10.62 ms -> 106.2 MB. mb1's big prefetch squeezed mb2.
    b2 = tl.budget(2, now=20 * MS)
    assert b2.nbytes == pytest.approx(106.2 * MB, abs=2)
    # mb2 takes nothing this time.
    tl = tl.commit(2, 0, now=20 * MS)

    # t=30: mb0 leaves again (its prefetch landed at 12 ms, before its 20 ms turn).
    # The link went idle at 28.2 ms: the window has slid past every commitment, and
    # mb0's budget is back to the full 180 MB.
    b0 = tl.budget(0, now=30 * MS)
    assert b0.link_start == pytest.approx(30 * MS)
    assert b0.nbytes == pytest.approx(180 * MB, abs=2)
    # commit 10 MB -> the two landed commitments drop out of the record
    tl = tl.commit(0, 10 * MB, now=30 * MS)
    assert [c.mb for c in tl.commitments] == [0]
    assert tl.commitments[0].end == pytest.approx(31 * MS)


def test_story_latency_margin_bytes_and_a_slow_slot():
    slow = TransferModel(latency_s=1 * MS, h2d_bytes_per_s=10e9, d2h_bytes_per_s=10e9)
    tl = LinkTimeline(slow, slot_times=(10 * MS, 10 * MS, 10 * MS),
                      policy=BudgetPolicy(margin_fraction=0.1, margin_bytes=5 * MB))
    # window 20 ms -> 18 ms after the fraction -> 17 ms after latency -> 170 MB -> minus 5 MB
    assert tl.budget(0, now=0.0).nbytes == pytest.approx(165 * MB, abs=2)
    # The cost model now predicts mb2's slot at 30 ms: mb0's window grows to 40 ms.
    tl = tl.with_slot_time(2, 30 * MS)
    assert tl.budget(0, now=0.0).turn_start == pytest.approx(40 * MS)
    assert tl.budget(0, now=0.0).nbytes == pytest.approx(345 * MB, abs=2)   # 36-1 ms -> 350 - 5
    # The transfer engine reports the link busy until 39 ms: nothing fits before 40 ms.
    assert tl.with_link_free_at(39 * MS).budget(0, now=0.0).nbytes == 0
    # A commitment larger than the budget is recorded as is: it will land late.
    late = tl.with_link_free_at(39 * MS).commit(0, 100 * MB, now=0.0)
    assert late.link_free_at == pytest.approx(39 * MS + 1 * MS + 10 * MS)


def test_single_microbatch_has_no_window():
    tl = LinkTimeline(LINK, slot_times=(10 * MS,))
    assert tl.budget(0, now=0.0).nbytes == 0       # next turn is immediately after


def test_story_multi_stage_the_binding_stage_decides():
    # Two stages, same link and slots. Stage 1 holds 1.5x the layers: 150 B of KV a token
    # against 100 B on stage 0. mb0 leaves stage 0 at 0 ms and stage 1 at 10 ms.
    pb = PrefetchBudget((timeline(), timeline()), kv_bytes_per_token=(100, 150))
    nows = pipelined_nows(0.0, (10 * MS, 10 * MS))
    assert nows == (0.0, pytest.approx(10 * MS))
    b = pb.budget(0, nows)
    # both stages: 180 MB. In tokens: 1.8 M on stage 0, 1.2 M on stage 1 -> stage 1 binds.
    assert b.stage_bytes == (pytest.approx(180 * MB, abs=2),) * 2
    assert b.binding_stage == 1 and b.tokens == b.stage_tokens[1] == pytest.approx(1.2e6, abs=1)
    assert b.kv_bytes_per_token == 150 and b.selector_bytes == b.tokens * 150
    # Commit the full 1.2 M tokens: 120 MB on stage 0 (12 ms), 180 MB on stage 1 (18 ms,
    # from 10 ms: busy until 28 ms, in time for mb0's turn there at 30 ms).
    pb = pb.commit(0, b.tokens, nows)
    assert pb.stages[0].link_free_at == pytest.approx(12 * MS, abs=1e-9)
    assert pb.stages[1].link_free_at == pytest.approx(28 * MS, abs=1e-9)
    # mb1 leaves stage 0 at 10 ms, stage 1 at 20 ms. Stage 0 window [12, 30] -> 162 MB ->
    # 1.62 M tokens; stage 1 window [28, 40] -> 108 MB -> 0.72 M tokens: stage 1 binds.
    b1 = pb.budget(1, pipelined_nows(10 * MS, (10 * MS, 10 * MS)))
    assert b1.binding_stage == 1 and b1.tokens == pytest.approx(720_000, abs=1)
    with pytest.raises(ValueError):
        pb.budget(0, (0.0,))                        # one `now` per stage


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 20 * MS), st.floats(0.0, 1.5)), min_size=1, max_size=30),
       st.lists(st.floats(0.0, 30 * MS), min_size=2, max_size=6))
def test_budget_properties_over_random_scripts(script, slots):
    """Budgets are never negative; a commitment within budget lands before the turn;
    committing never enlarges any later budget."""
    tl = LinkTimeline(LINK, slot_times=tuple(slots), policy=BudgetPolicy(0.1, 1000))
    now, mb = 0.0, 0
    for advance, frac in script:
        now += advance
        b = tl.budget(mb, now)
        assert b.nbytes >= 0
        nbytes = int(b.nbytes * min(frac, 1.0))
        after = tl.commit(mb, nbytes, now)
        if nbytes:
            assert after.link_free_at <= b.turn_start + 1e-12
        for other in range(len(slots)):
            for later in (now, now + 5 * MS):
                assert after.budget(other, later).nbytes <= tl.budget(other, later).nbytes
        tl, mb = after, (mb + 1) % len(slots)
