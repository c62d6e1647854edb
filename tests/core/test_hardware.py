"""Hardware profiles: datasheet data marked as such; a profile fitted from measurements."""

import dataclasses

import numpy as np
import pytest

from pipemax_sglang.core import (
    PROFILES,
    HardwareProfile,
    Measurements,
    StepSample,
    TransferSample,
    fit_link,
    fit_profile,
)


def test_profiles_cover_the_target_gpus_and_are_marked_datasheet():
    assert set(PROFILES) == {"rtx4090", "l20", "l40", "l40s", "a100-pcie", "h100-pcie", "h200"}
    for name, p in PROFILES.items():
        assert p.name == name and p.source == "datasheet"
        assert "assumed" in p.note                       # the link figure is an assumption
        assert p.h2d_gbps == p.d2h_gbps
    # PCIe Gen4 x16 ~ 25 GB/s effective, Gen5 ~ 50
    assert PROFILES["l40"].h2d_gbps == 25.0 and PROFILES["h100-pcie"].h2d_gbps == 50.0
    assert PROFILES["rtx4090"].hbm_gb == 24.0 and PROFILES["h200"].hbm_gbps == 4800.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["l40"].h2d_gbps = 1.0


def test_profile_validation():
    with pytest.raises(ValueError):
        dataclasses.replace(PROFILES["l40"], source="guess")
    with pytest.raises(ValueError):
        dataclasses.replace(PROFILES["l40"], h2d_gbps=0.0)


def _link_samples(rng, latency, bw, n=60, outliers=6):
    sizes = rng.integers(1 << 16, 1 << 28, n)
    secs = (latency + sizes / bw) * (1 + 0.02 * rng.standard_normal(n))
    secs[:outliers] *= 4.0                               # a few copies stalled
    return tuple(TransferSample(int(b), float(s)) for b, s in zip(sizes, secs, strict=True))


def test_fit_link_recovers_latency_and_bandwidth_despite_outliers():
    rng = np.random.default_rng(0)
    fit = fit_link(_link_samples(rng, 15e-6, 22e9))
    assert fit.bytes_per_s == pytest.approx(22e9, rel=0.03)
    assert 0.0 <= fit.latency_s < 1e-3
    with pytest.raises(ValueError):
        fit_link((TransferSample(100, 1.0), TransferSample(100, 1.1)))   # one size only


def test_fit_profile_measured_fields_replace_the_base():
    rng = np.random.default_rng(1)
    base = PROFILES["l40"]
    # steps of a stage with 17.5 GB of weights, 8.75e9 params: a = W / 800 GB/s, b = 2P / 150 TF
    w, params = 17.5e9, 8.75e9
    a, b, c = w / 800e9, 2 * params / 150e12, 5e-8
    steps = []
    for _ in range(80):
        rows, ctx = int(rng.integers(1, 128)), int(rng.integers(100, 200_000))
        noise = 1 + 0.01 * rng.standard_normal()
        steps.append(StepSample(rows, ctx, (a + b * rows + c * ctx) * noise))
    m = Measurements("my-l40", base, h2d=_link_samples(rng, 10e-6, 20e9),
                     d2h=_link_samples(rng, 10e-6, 18e9), steps=tuple(steps),
                     stage_weight_bytes=int(w), stage_params=int(params))
    p = fit_profile(m)
    assert isinstance(p, HardwareProfile) and p.source == "fitted" and p.name == "my-l40"
    assert p.h2d_gbps == pytest.approx(20.0, rel=0.03)
    assert p.d2h_gbps == pytest.approx(18.0, rel=0.03)
    assert p.hbm_gbps == pytest.approx(800.0, rel=0.03)
    assert p.flops == pytest.approx(150e12, rel=0.1)
    assert p.hbm_gb == base.hbm_gb                         # not measured: from the base
    only_link = fit_profile(Measurements("x", base, h2d=_link_samples(rng, 1e-5, 30e9)))
    assert only_link.d2h_gbps == base.d2h_gbps and only_link.hbm_gbps == base.hbm_gbps
