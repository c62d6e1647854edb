"""Step-cost model: recovers known coefficients through noise and outliers, never goes
negative, answers with the prior until min_samples, forgets outside its window."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipemax_sglang.core import (
    PROFILES,
    StepCost,
    StepCostModel,
    TransferModel,
    fit_step_cost,
    prior_step_cost,
)

TRUE = StepCost(a=0.020, b=1.0e-4, c=5.0e-8)     # 20 ms weights, 0.1 ms a row, 50 ns a token


def _feed(model, cost, n, rng, noise=0.02, outlier_frac=0.0, outlier_scale=5.0):
    samples = []
    for _ in range(n):
        rows = int(rng.integers(1, 256))
        ctx = int(rows * rng.integers(64, 4096))
        t = cost.predict(rows, ctx) * (1.0 + noise * rng.standard_normal())
        if rng.random() < outlier_frac:
            t *= outlier_scale                            # a GC pause, a late activation
        model.observe(rows, ctx, t)
        samples.append((rows, ctx, t))
    return samples


def test_recovers_known_coefficients_from_noisy_data_with_outliers():
    rng = np.random.default_rng(7)
    prior = StepCost(0.005, 1e-3, 1e-6)                   # deliberately far off
    model = StepCostModel(prior, window=400, min_samples=16)
    samples = _feed(model, TRUE, 400, rng, noise=0.02, outlier_frac=0.10)
    fit = model.current()
    assert fit.a == pytest.approx(TRUE.a, rel=0.03)
    assert fit.b == pytest.approx(TRUE.b, rel=0.05)
    assert fit.c == pytest.approx(TRUE.c, rel=0.03)
    typical = (64, 64 * 1024)
    assert fit.predict(*typical) == pytest.approx(TRUE.predict(*typical), rel=0.01)
    # Plain least squares on the same samples is dragged off by the 10% outliers
    # (b doubles, a typical step is over-predicted by ~30%): robustness is doing the work.
    x = np.array([[1.0, r, c] for r, c, _ in samples])
    ls = np.linalg.lstsq(x, np.array([t for *_, t in samples]), rcond=None)[0]
    assert abs(ls @ [1.0, *typical] / TRUE.predict(*typical) - 1.0) > 0.15


def test_uses_prior_until_min_samples():
    prior = StepCost(0.01, 2e-4, 1e-7)
    model = StepCostModel(prior, window=64, min_samples=8)
    rng = np.random.default_rng(0)
    _feed(model, TRUE, 7, rng)
    assert model.current() == prior and model.samples_seen == 7
    model.observe(0, 0, 1.0)                              # empty step: ignored
    model.observe(4, 100, float("nan"))                   # failed timer: ignored
    assert model.current() == prior
    _feed(model, TRUE, 1, rng)
    assert model.current() != prior


def test_never_negative_even_when_data_pull_a_coefficient_below_zero():
    # Time DEcreasing with context: least squares would give c < 0.
    model = StepCostModel(StepCost(0.01, 1e-4, 1e-7), window=64, min_samples=4)
    for rows, ctx in [(8, 1000), (8, 5000), (8, 9000), (16, 2000), (16, 8000), (32, 4000)]:
        model.observe(rows, ctx, 0.05 + 0.001 * rows - 1e-6 * ctx)
    fit = model.current()
    assert fit.c == 0.0 and fit.a >= 0.0 and fit.b > 0.0


def test_window_forgets_the_old_regime_and_fit_is_deterministic():
    rng = np.random.default_rng(3)
    model = StepCostModel(TRUE, window=100, min_samples=10)
    _feed(model, StepCost(0.05, 1e-3, 1e-6), 300, rng)    # old regime
    new = StepCost(0.010, 2e-4, 2e-8)
    samples = []
    for _ in range(100):
        rows, ctx = int(rng.integers(1, 128)), int(rng.integers(100, 100_000))
        samples.append((rows, ctx, new.predict(rows, ctx) * (1 + 0.01 * rng.standard_normal())))
        model.observe(*samples[-1])
    assert model.current().a == pytest.approx(new.a, rel=0.05)
    twin = StepCostModel(TRUE, window=100, min_samples=10)
    for s in samples:
        twin.observe(*s)
    assert twin.current() == model.current()              # same window -> bit-identical fit


def test_constant_row_count_falls_back_to_the_prior_split():
    # rows never vary: intercept and per-row slope are not separable; the ridge keeps
    # the prior's split instead of an arbitrary one, and predictions stay right.
    prior = StepCost(0.02, 1e-4, 5e-8)
    model = StepCostModel(prior, window=64, min_samples=8)
    rng = np.random.default_rng(5)
    for _ in range(64):
        ctx = int(rng.integers(1000, 100_000))
        model.observe(32, ctx, TRUE.predict(32, ctx))
    fit = model.current()
    assert fit.predict(32, 50_000) == pytest.approx(TRUE.predict(32, 50_000), rel=1e-3)
    assert fit.a == pytest.approx(prior.a, rel=0.05) and fit.b == pytest.approx(prior.b, rel=0.2)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 512), st.integers(0, 10**6),
                          st.floats(0.0, 10.0, allow_nan=False)), min_size=3, max_size=40))
def test_fit_is_finite_and_non_negative_for_any_data(samples):
    fit = fit_step_cost(tuple(samples), StepCost(0.01, 1e-4, 1e-7))
    for v in (fit.a, fit.b, fit.c):
        assert v >= 0.0 and math.isfinite(v)


def test_prior_from_profile_and_predict():
    p = PROFILES["l40"]
    cost = prior_step_cost(p, stage_weight_bytes=17.5e9, stage_params=8.75e9,
                           kv_bytes_per_token=40_960)
    assert cost.a == pytest.approx(17.5e9 / 864e9)        # weights read once a step
    assert cost.c == pytest.approx(40_960 / 864e9)        # each context token's KV read once
    assert cost.b == pytest.approx(2 * 8.75e9 / 181.05e12)
    assert cost.predict(0, 0) == 0.0                      # an empty micro-batch runs no step
    assert cost.predict(2, 100) == pytest.approx(cost.a + 2 * cost.b + 100 * cost.c)
    with pytest.raises(ValueError):
        StepCost(-1.0, 0.0, 0.0)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1e-3), st.floats(1e8, 1e11), st.integers(1, 10**10))
def test_transfer_model_bytes_in_inverts_time(latency, bw, nbytes):
    tm = TransferModel(latency, bw, bw / 2)
    t = tm.h2d_time(nbytes)
    assert t == pytest.approx(latency + nbytes / bw)
    assert tm.d2h_time(nbytes) > t - latency                  # the slower direction
    assert tm.h2d_bytes_in(t) <= nbytes                       # never promises more
    assert tm.h2d_bytes_in(t) >= nbytes - 2 - 1e-9 * nbytes   # ... nor much less
    assert tm.h2d_time(0) == 0.0 and tm.h2d_bytes_in(latency * 0.5) == 0


def test_transfer_model_from_profile():
    tm = TransferModel.from_profile(PROFILES["rtx4090"])
    assert tm.h2d_bytes_per_s == 25e9 and tm.latency_s == 10e-6
    assert tm.h2d_time(25_000_000) == pytest.approx(10e-6 + 1e-3)


def test_fit_is_refreshed_every_refit_every_samples_not_every_step():
    rng = np.random.default_rng(11)
    model = StepCostModel(TRUE, window=64, min_samples=8, refit_every=4)
    _feed(model, StepCost(0.05, 1e-3, 1e-6), 16, rng)
    first = model.current()
    _feed(model, StepCost(0.001, 1e-5, 1e-9), 3, rng)
    assert model.current() is first                       # 3 < refit_every: cached
    _feed(model, StepCost(0.001, 1e-5, 1e-9), 1, rng)
    assert model.current() != first                       # the 4th new sample refits
    with pytest.raises(ValueError):
        StepCostModel(TRUE, refit_every=0)


def test_prefix_reuse_pays_only_where_the_link_is_slower_than_the_match():
    from pipemax_sglang.core import PREFIX_MATCH_S, prefix_reuse_min_tokens

    # no link to spare (CPU: one memory): never relock
    assert prefix_reuse_min_tokens(None, 2048) is None
    # 1 GB/s, 2 KiB a token: the match's 100 us carries 48.8 tokens, so 49 is the first
    # prompt that takes longer to load than to relock
    n = prefix_reuse_min_tokens(1e9, 2048)
    assert n == 49
    assert (n - 1) * 2048 / 1e9 < PREFIX_MATCH_S <= n * 2048 / 1e9
    # a PCIe 4 GPU stage of a 70B model (40 KB a token): a few dozen tokens already pay
    assert prefix_reuse_min_tokens(25e9, 40 * 1024) == 62
    # a faster link makes loading cheaper, so reuse needs longer prompts
    assert prefix_reuse_min_tokens(50e9, 40 * 1024) > prefix_reuse_min_tokens(25e9, 40 * 1024)


def _nnls_by_enumeration(x, y, w, prior, mu):
    """Reference: the ridge objective minimised over every support (rest held at zero),
    the best feasible one, without nnls_ridge's early exit."""
    import itertools
    scale = np.sqrt(np.mean(x * x, axis=0))
    scale[scale == 0.0] = 1.0
    z, phi_prior, p = x / scale, prior * scale, x.shape[1]
    best, best_phi = np.inf, np.zeros(p)
    for k in range(p, -1, -1):
        for sup in itertools.combinations(range(p), k):
            phi = np.zeros(p)
            if sup:
                i = list(sup)
                a = (z[:, i] * w[:, None]).T @ z[:, i] + mu * np.eye(k)
                phi[i] = np.linalg.solve(a, (z[:, i] * w[:, None]).T @ y + mu * phi_prior[i])
                if np.any(phi[i] < 0):
                    continue
            r = y - z @ phi
            obj = np.sum(w * r * r) + mu * np.sum((phi - phi_prior) ** 2)
            if obj < best * (1 - 1e-12):
                best, best_phi = obj, phi
    return best_phi / scale


def test_nnls_ridge_equals_the_minimum_over_every_support_where_it_exits_early_and_where_not():
    """nnls_ridge returns the first support's solution (largest first) that meets the KKT
    conditions (the whole support's as soon as it is feasible) rather than enumerating all
    of them. Problems where the whole support is feasible and where it is clipped both
    occur below, and both agree with the exhaustive reference."""
    from pipemax_sglang.core.fitting import nnls_ridge
    rng = np.random.default_rng(7)
    kinds = {"feasible": 0, "clipped": 0}
    for trial in range(200):
        n = int(rng.integers(5, 60))
        x = np.column_stack([np.ones(n), rng.integers(1, 64, n), rng.integers(10, 5000, n)]).astype(float)
        theta = np.array([2e-3, 2e-4, 2e-7]) * rng.choice([1.0, -1.0], 3, p=[0.7, 0.3])
        y = x @ theta * (1 + 0.05 * rng.standard_normal(n)) + 1e-3
        w = rng.uniform(0.5, 1.5, n)
        prior = np.array([2e-3, 2e-4, 2e-7])
        mu = 1e-6 * w.sum()
        got = nnls_ridge(x, y, w, prior, mu)
        want = _nnls_by_enumeration(x, y, w, prior, mu)
        assert np.all(got >= 0)
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-15)
        scale = np.sqrt(np.mean(x * x, 0))
        z = x / scale
        whole = np.linalg.solve((z * w[:, None]).T @ z + mu * np.eye(3),
                                (z * w[:, None]).T @ y + mu * prior * scale)
        kinds["feasible" if np.all(whole >= 0) else "clipped"] += 1
    assert kinds["feasible"] >= 20 and kinds["clipped"] >= 20, kinds


def test_the_fits_median_is_numpys_bit_for_bit():
    """The robust scale's median (a partition, not np.median's dispatch) must give the same
    float as np.median for odd and even lengths, ties and wide ranges: a fit is a function
    of its window, and every stage's fits must agree with the recorded ones on replay."""
    from pipemax_sglang.core.fitting import _median
    rng = np.random.default_rng(11)
    for n in range(1, 200):
        for a in (rng.standard_normal(n) * 1e-6, rng.standard_normal(n) * 1e6,
                  rng.integers(0, 3, n).astype(float), np.full(n, 0.1)):
            assert _median(a) == float(np.median(a)), (n, a)
