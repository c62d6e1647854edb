"""The capacity optimum (core/capacity.py): the most context a micro-batch holds a turn,
worked by hand on round numbers, then its contract on random inputs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipemax_sglang.core import StepCost
from pipemax_sglang.core.capacity import turn_optimum
from pipemax_sglang.core.move_price import MovePrice

MS = 1e-3


def test_a_fixed_turn_streams_what_the_link_carries_in_a_slot():
    # D = 100k tokens, M = 8, a 10 ms turn whatever its size, 1M tokens/s over the link:
    # C = 10k a slot; X = D/M + (1 - 2/M) C = 12.5k + 7.5k = 20k, R = 10k.
    # Check: M R + 2 C = 80k + 20k = D.
    opt = turn_optimum(100_000, 8, 100, 1e6, StepCost(10 * MS, 0.0, 0.0), growth_per_row=0)
    assert opt.context == pytest.approx(20_000, rel=1e-6)
    assert opt.streamed == pytest.approx(10_000, rel=1e-6)
    assert opt.resident == pytest.approx(10_000, rel=1e-6)
    assert opt.rows == pytest.approx(200, rel=1e-6) and opt.bound == "link"
    assert 8 * opt.resident + 2 * opt.streamed == pytest.approx(100_000, rel=1e-6)


def test_a_bigger_batch_lengthens_the_turn_and_so_the_stream_a_fixed_point():
    # t = 10 ms + 0.2 us a context token: C = 10k + 0.2 X, so
    # X = 12.5k + 0.75 (10k + 0.2 X) = 20k + 0.15 X  ->  X = 20k / 0.85 = 23,529.4
    opt = turn_optimum(100_000, 8, 100, 1e6, StepCost(10 * MS, 0.0, 0.2e-6), growth_per_row=0)
    assert opt.context == pytest.approx(20_000 / 0.85, rel=1e-6)
    assert opt.streamed == pytest.approx(10_000 + 0.2 * 20_000 / 0.85, rel=1e-6)
    assert opt.turn_s == pytest.approx(10 * MS + 0.2e-6 * 20_000 / 0.85)


def test_the_row_cap_the_device_and_a_short_pipeline_bound_it():
    step = StepCost(10 * MS, 0.0, 0.0)
    capped = turn_optimum(100_000, 8, 100, 1e6, step, row_cap=150, growth_per_row=0)
    assert capped.context == pytest.approx(15_000) and capped.bound == "row cap"
    # a link that brings a whole turn in a slot: everything streams, X = D/2, R = 0
    fast = turn_optimum(100_000, 8, 100, 1e9, step, growth_per_row=0)
    assert fast.context == pytest.approx(50_000) and fast.bound == "device"
    assert fast.resident == pytest.approx(0.0)
    # no link: stock PP's share D/M; and M <= 2 gains nothing from streaming
    assert turn_optimum(100_000, 8, 100, 0.0, step, growth_per_row=0).context == pytest.approx(12_500)
    assert turn_optimum(100_000, 2, 100, 1e9, step, growth_per_row=0).context == pytest.approx(50_000)
    assert turn_optimum(100_000, 1, 100, 1e9, step, growth_per_row=0).bound == "no stream"


def test_the_reserve_growth_and_margin_come_off_before_the_split():
    # (100k - 20k) / (1 + 1/99) = 79,200 tokens of context; margin 0.5 halves C to 5k:
    # X = 79.2k / 8 + 0.75 * 5k = 9,900 + 3,750
    opt = turn_optimum(100_000, 8, 99, 1e6, StepCost(10 * MS, 0.0, 0.0), reserve_tokens=20_000,
                       margin=0.5)
    assert opt.context == pytest.approx(9_900 + 3_750, rel=1e-6)


def test_the_cpu_time_of_the_moves_is_reported_beside_the_turn():
    # 10k tokens streamed in rows of 100: 100 rejoins and 100 parks at 0.5 ms = 100 ms, ten
    # times the 10 ms turn: that optimum is not reachable at that price of a move
    step = StepCost(10 * MS, 0.0, 0.0)
    opt = turn_optimum(100_000, 8, 100, 1e6, step, growth_per_row=0,
                       move_price=MovePrice.per_move(0.5 * MS))
    assert opt.cpu_s == pytest.approx(0.1)
    # batched at 4 ms a turn plus 20 us a move: 4 + 200 x 0.02 = 8 ms, inside the turn
    opt = turn_optimum(100_000, 8, 100, 1e6, step, growth_per_row=0,
                       move_price=MovePrice(4 * MS, 20e-6))
    assert opt.cpu_s == pytest.approx(8 * MS)
    assert turn_optimum(100_000, 8, 100, 1e6, step, growth_per_row=0).cpu_s == 0.0


@settings(max_examples=200, deadline=None)
@given(d=st.integers(1_000, 2_000_000), m=st.integers(1, 24), L=st.floats(10, 2000),
       rate=st.floats(0, 1e8), a=st.floats(1e-4, 0.1), b=st.floats(0, 1e-3), c=st.floats(0, 1e-6),
       cap=st.one_of(st.just(float("inf")), st.integers(1, 2000)), margin=st.floats(0, 0.5))
def test_the_optimum_is_feasible_and_nothing_larger_is(d, m, L, rate, a, b, c, cap, margin):
    step = StepCost(a, b, c)
    opt = turn_optimum(d, m, L, rate, step, row_cap=cap, margin=margin, growth_per_row=0)
    x = opt.context
    assert 0 <= x <= min(d, cap * L) + 1e-6
    link = min(x, (1 - margin) * rate * step.predict(x / L, x)) if m > 2 else 0.0
    assert opt.streamed <= link + 1e-6
    assert m * opt.resident + 2 * opt.streamed <= d * (1 + 1e-9) + 1e-6 or m <= 2
    if opt.bound == "link":                 # 0.1% more does not fit
        y = x * 1.001 + 1e-3
        cy = min(y, (1 - margin) * rate * step.predict(y / L, y))
        assert y > d / m + (1 - 2 / m) * cy
    more = turn_optimum(d * 2, m, L, rate, step, row_cap=cap, margin=margin, growth_per_row=0)
    assert more.context >= x - 1e-6         # more device never holds less
