"""The calibrated constants are what the fits give, and the fits meet their tolerances on
the published data (sim/data/published): the step model within 10% of the held-out model's
L20 profile at every listed size, the all-reduce within 15% of every fitted point."""

import pytest

from pipemax_sglang.sim import calibration as cal


def test_the_step_constants_are_the_fit_on_qwen():
    k = cal.fit_l20("qwen2.5-32b")
    c = cal.L20_KERNELS
    for name in ("gemv_hbm", "gemm_hbm", "tensor", "overlap_p"):
        assert getattr(c, name) == pytest.approx(getattr(k, name), rel=2e-3), name


def test_the_held_out_model_is_within_ten_percent_at_every_listed_size():
    # fitted on Qwen2.5-32B, Llama-2-13B held out; and the other way round
    errs = cal.l20_errors(cal.L20_KERNELS, "llama-2-13b")
    assert set(errs) == set(cal.LISTED_SIZES)
    assert max(abs(e) for e in errs.values()) < 0.10
    reverse = cal.l20_errors(cal.fit_l20("llama-2-13b"), "qwen2.5-32b")
    assert max(abs(e) for e in reverse.values()) < 0.10


def test_the_old_linear_sum_misses_the_middle_by_a_fifth_or_more():
    # weight read + compute at datasheet rates: what the issue measured, 20-34% too slow at
    # 128-256 tokens, which is why the step model overlaps them
    for model in ("llama-2-13b", "qwen2.5-32b"):
        errs = cal.linear_sum_errors(model)
        assert errs[128] > 0.19 and errs[256] > 0.2


def test_overlap_lies_between_the_max_and_the_sum():
    k = cal.L20_KERNELS
    for read, flops, rows in ((26e9, 1e12, 8), (26e9, 1e13, 64), (26e9, 2e14, 2048)):
        t = k.forward_s(read, flops, rows, 864e9, 119.5e12)
        e = k.gemv_hbm if rows <= cal.GEMV_ROWS else k.gemm_hbm
        tm, tc = read / (e * 864e9), flops / (k.tensor * 119.5e12)
        assert max(tm, tc) <= t <= tm + tc
    assert cal.NO_OVERLAP.forward_s(26e9, 1e13, 64, 864e9, 119.5e12) == pytest.approx(
        26e9 / 864e9 + 1e13 / 119.5e12)


def test_the_all_reduce_fit_is_within_fifteen_percent_of_every_fitted_point():
    pts = cal.load_allreduce()
    fit = cal.fit_allreduce(pts)
    assert fit.hop_s == pytest.approx(cal.PCIE_ALLREDUCE.hop_s, rel=2e-3)
    assert fit.bus_bytes_per_s == pytest.approx(cal.PCIE_ALLREDUCE.bus_bytes_per_s, rel=2e-3)
    fitted = [p for p in pts if p.fitted]
    assert len(fitted) == 4 and all(p.source for p in pts)
    for p in fitted:
        assert abs(cal.PCIE_ALLREDUCE.time(p.gpus, p.nbytes) / p.seconds - 1) < 0.15
    # ~12.5 GB/s bus bandwidth and ~42 us for 8 GPUs: half the 25 GB/s the baseline used to get
    assert 10e9 < cal.PCIE_ALLREDUCE.bus_bytes_per_s < 13e9
    assert cal.PCIE_ALLREDUCE.time(8, 8) == pytest.approx(42.5e-6, rel=0.05)
