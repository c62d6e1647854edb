"""Hardware profiles: the figures the cost model starts from, as frozen data.

A profile is what the policy needs to know about one GPU and its host link before it has
measured anything: the H2D and D2H bandwidth of the link (two independent directions),
the per-transfer latency, HBM bandwidth and size, and dense fp16/bf16 tensor FLOP/s.

Units: bandwidths in GB/s with GB = 1e9 bytes (the `*_gbps` names mean gigaBYTES per
second), hbm_gb in 1e9 bytes, flops in FLOP/s, latency in seconds.

Two sources, always marked:
- "datasheet": vendor figures. The host link is an ASSUMPTION on top of the datasheet:
  pinned-memory copies reach about 25 GB/s per direction on PCIe Gen4 x16 (32 GB/s raw)
  and about 50 GB/s on Gen5 x16 (64 GB/s raw), with ~10 us per-transfer latency. Consumer
  boards, risers and PCIe switches shared by several GPUs do worse: measure, then fit.
- "fitted": built by `fit_profile` from measured samples (robust, non-negative fits).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .fitting import robust_nnls

GB = 1e9
_GEN4_EFFECTIVE_GBPS = 25.0
_GEN5_EFFECTIVE_GBPS = 50.0
_LINK_LATENCY_S = 10e-6


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    h2d_gbps: float          # effective host->device GB/s (1e9 B/s)
    d2h_gbps: float          # effective device->host GB/s, an independent link direction
    link_latency_s: float    # fixed cost of one transfer (launch + DMA setup)
    hbm_gbps: float          # device memory bandwidth, GB/s
    hbm_gb: float            # device memory size, 1e9 bytes
    flops: float             # dense fp16/bf16 tensor FLOP/s (no sparsity)
    source: str              # "datasheet" or "fitted"
    note: str = ""           # what was assumed or measured

    def __post_init__(self) -> None:
        if self.source not in ("datasheet", "fitted"):
            raise ValueError(f"source must be 'datasheet' or 'fitted', got {self.source!r}")
        for field in ("h2d_gbps", "d2h_gbps", "hbm_gbps", "hbm_gb", "flops"):
            v = getattr(self, field)
            if not (v > 0 and np.isfinite(v)):
                raise ValueError(f"{field} must be positive and finite, got {v!r}")
        if not (self.link_latency_s >= 0 and np.isfinite(self.link_latency_s)):
            raise ValueError(f"link_latency_s must be >= 0, got {self.link_latency_s!r}")

    @property
    def h2d_bytes_per_s(self) -> float:
        return self.h2d_gbps * GB

    @property
    def d2h_bytes_per_s(self) -> float:
        return self.d2h_gbps * GB

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_gbps * GB


def _datasheet(name: str, gen: int, hbm_gbps: float, hbm_gb: float, tflops: float,
               card: str) -> HardwareProfile:
    link = _GEN4_EFFECTIVE_GBPS if gen == 4 else _GEN5_EFFECTIVE_GBPS
    note = (f"{card}: datasheet HBM/FLOPs; host link PCIe Gen{gen} x16 assumed "
            f"{link:g} GB/s effective per direction, {_LINK_LATENCY_S * 1e6:g} us latency")
    return HardwareProfile(name, link, link, _LINK_LATENCY_S, hbm_gbps, hbm_gb,
                           tflops * 1e12, "datasheet", note)


# Dense bf16/fp16 tensor throughput (FP32 accumulate), memory size and bandwidth from the
# vendor datasheets. H200 is the SXM part (its host link is still PCIe Gen5 x16).
PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        _datasheet("rtx4090", 4, 1008.0, 24.0, 165.2, "GeForce RTX 4090"),
        _datasheet("l20", 4, 864.0, 48.0, 119.5, "L20"),
        _datasheet("l40", 4, 864.0, 48.0, 181.05, "L40"),
        _datasheet("l40s", 4, 864.0, 48.0, 362.05, "L40S"),
        _datasheet("a100-pcie", 4, 1935.0, 80.0, 312.0, "A100 80GB PCIe"),
        _datasheet("h100-pcie", 5, 2000.0, 80.0, 756.0, "H100 PCIe"),
        _datasheet("h200", 5, 4800.0, 141.0, 989.5, "H200 SXM"),
    )
}


class TransferSample(NamedTuple):
    """One timed copy: `nbytes` moved in `seconds`."""

    nbytes: int
    seconds: float


class StepSample(NamedTuple):
    """One timed decode step of a stage: `rows` requests, their contexts summing to
    `sum_context` tokens, in `seconds`."""

    rows: int
    sum_context: int
    seconds: float


class LinkFit(NamedTuple):
    latency_s: float
    bytes_per_s: float


@dataclass(frozen=True)
class Measurements:
    """What `fit_profile` reads. Every group is optional; what is missing comes from `base`.

    Step samples only say something about the hardware if the stage's weight bytes and
    parameter count are known: a ~ weight_bytes / HBM bandwidth (decode re-reads the
    weights every step), b ~ 2 * params / FLOP/s.
    """

    name: str
    base: HardwareProfile
    h2d: tuple[TransferSample, ...] = ()
    d2h: tuple[TransferSample, ...] = ()
    steps: tuple[StepSample, ...] = ()
    stage_weight_bytes: int = 0
    stage_params: int = 0


def fit_link(samples: tuple[TransferSample, ...]) -> LinkFit:
    """Robust fit of seconds = latency + nbytes / bandwidth, both non-negative.

    Needs at least two distinct sizes; a zero slope (no size dependence) is rejected."""
    sizes = {s.nbytes for s in samples}
    if len(sizes) < 2:
        raise ValueError("fit_link needs samples of at least two distinct sizes")
    x = np.array([[1.0, float(s.nbytes)] for s in samples])
    y = np.array([float(s.seconds) for s in samples])
    lat, inv_bw = robust_nnls(x, y, prior=np.zeros(2), prior_strength=1e-9)
    if inv_bw <= 0.0:
        raise ValueError("transfer time does not grow with size: cannot fit a bandwidth")
    return LinkFit(float(lat), float(1.0 / inv_bw))


def fit_profile(m: Measurements) -> HardwareProfile:
    """A profile from measurements (source="fitted"); unmeasured fields from `m.base`."""
    p = m.base
    notes = []
    fields: dict[str, float] = {}
    if m.h2d:
        h2d = fit_link(m.h2d)
        fields["h2d_gbps"] = h2d.bytes_per_s / GB
        fields["link_latency_s"] = h2d.latency_s
        notes.append(f"h2d {len(m.h2d)} samples")
    if m.d2h:
        fields["d2h_gbps"] = fit_link(m.d2h).bytes_per_s / GB
        notes.append(f"d2h {len(m.d2h)} samples")
    if m.steps:
        x = np.array([[1.0, float(s.rows), float(s.sum_context)] for s in m.steps])
        y = np.array([float(s.seconds) for s in m.steps])
        a, b, _c = robust_nnls(x, y, prior=np.zeros(3))
        if m.stage_weight_bytes > 0 and a > 0:
            fields["hbm_gbps"] = m.stage_weight_bytes / a / GB
        if m.stage_params > 0 and b > 0:
            fields["flops"] = 2.0 * m.stage_params / b
        notes.append(f"steps {len(m.steps)} samples")
    note = f"fitted from {', '.join(notes) or 'nothing'}; rest from {p.name} ({p.source})"
    return replace(p, name=m.name, source="fitted", note=note, **fields)
