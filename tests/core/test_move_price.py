"""The price of KV moves: a share per turn that moves plus one per move, fitted per turn."""

from __future__ import annotations

import random

import pytest

from pipemax_sglang.core.move_price import MovePrice, MovePriceFit, fit_move_price


def test_a_turn_that_moves_nothing_costs_nothing_and_one_that_moves_pays_its_share_once():
    price = MovePrice(turn_s=2e-3, move_s=25e-6)
    assert price.seconds(0) == 0.0
    assert price.seconds(1) == pytest.approx(2.025e-3)
    assert price.seconds(64) == pytest.approx(2e-3 + 64 * 25e-6)
    assert MovePrice.per_move(0.5e-3).seconds(10) == pytest.approx(5e-3)
    with pytest.raises(ValueError):
        MovePrice(-1e-3, 0.0)
    with pytest.raises(ValueError):
        MovePrice(0.0, float("nan"))


def test_turns_of_different_sizes_separate_the_two_prices():
    samples = tuple((n, 4.5e-3 + 21e-6 * n) for n in (8, 16, 32, 64) * 8)
    price = fit_move_price(samples, turn_share_moves=200.0)    # about the true shape
    assert price.turn_s == pytest.approx(4.5e-3, rel=0.02)
    assert price.move_s == pytest.approx(21e-6, rel=0.05)
    # an anchor far off (10 moves: 1.5 ms a turn and 147 us a move through the medians):
    # the spread of the turns pulls the fit most of the way to what they say
    off = fit_move_price(samples, turn_share_moves=10.0)
    assert off.turn_s == pytest.approx(4.5e-3, rel=0.1)
    assert abs(off.move_s - 21e-6) < 0.1 * abs(5.004e-3 / 34 - 21e-6)


def test_turns_of_nearly_one_size_do_not_swing_the_split():
    # 30-33 moves a turn with 20% noise say little about the split: a free fit swung from
    # no price a move to all of it; the anchor keeps each of these within a third of the truth
    for seed in range(6):
        rng = random.Random(seed)
        samples = tuple((n, (4e-3 + 47e-6 * n) * rng.uniform(0.9, 1.1))
                        for n in (rng.choice((30, 31, 32, 33)) for _ in range(12)))
        price = fit_move_price(samples)
        assert price.turn_s == pytest.approx(4e-3, rel=0.33), seed
        assert price.move_s == pytest.approx(47e-6, rel=0.33), seed


def test_noisy_turns_with_an_outlier_still_give_the_prices():
    rng = random.Random(3)
    samples = [(n, (3e-3 + 30e-6 * n) * (1 + 0.1 * (rng.random() - 0.5))) for n in (4, 16, 48) * 20]
    samples[5] = (16, 0.2)                                     # a turn that hit a collection
    price = fit_move_price(tuple(samples))
    assert price.turn_s == pytest.approx(3e-3, rel=0.15)
    assert price.move_s == pytest.approx(30e-6, rel=0.15)


def test_turns_all_of_one_size_keep_their_mean_and_split_it_by_the_anchor():
    samples = tuple((32, 6e-3) for _ in range(20))
    price = fit_move_price(samples, turn_share_moves=100.0)
    assert price.seconds(32) == pytest.approx(6e-3, rel=1e-3)  # what was measured
    assert price.turn_s / price.move_s == pytest.approx(100.0, rel=0.05)
    # with no turn share in the anchor it is the flat average, as a single price says
    flat = fit_move_price(samples, turn_share_moves=0.0)
    assert flat.turn_s == pytest.approx(0.0, abs=1e-9) and flat.move_s == pytest.approx(6e-3 / 32)


def test_no_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one"):
        fit_move_price(())


def test_the_fit_answers_only_once_enough_moves_were_timed():
    fit = MovePriceFit(min_moves=32)
    fit.observe(0, 1e-3)                                       # no move: not a sample
    fit.observe(5, float("nan"))                               # a failed timer: not a sample
    for _ in range(3):
        fit.observe(10, 3e-3)
    assert fit.current() is None                               # 30 moves
    fit.observe(10, 3e-3)
    assert fit.current() is not None and fit.current().seconds(10) == pytest.approx(3e-3, rel=1e-3)
    with pytest.raises(ValueError):
        MovePriceFit(window=0)


def test_equal_samples_give_equal_prices():
    def run():
        fit = MovePriceFit(refit_every=4)
        rng = random.Random(7)
        out = []
        for _ in range(64):
            n = rng.choice((2, 8, 30))
            fit.observe(n, 1e-3 + 40e-6 * n * rng.uniform(0.8, 1.2))
            out.append(fit.current())
        return out
    assert run() == run()
