"""Calibration: the step model and the PCIe all-reduce, fitted to published measurements.

Data (copied into `data/published/`, with its license and sources in its README):
TD-Pipe's step times of one forward on an NVIDIA L20 (Llama-2-13B, Qwen2.5-32B, OPT-125m),
and published NCCL all-reduce times over PCIe. `benchmarks/calibrate.py` refits both and
prints every error; tests/sim/test_calibration.py checks that the constants below are what
the fits give.

**Step model with overlap.** A forward of n tokens reads the weights once and does
2 x params x n FLOPs. Decode kernels overlap the two (a GEMM streams its weights while its
tensor cores work), so the forward takes neither their sum (27-38% too slow between 128
and 256 tokens on the L20 profiles) nor their max (too fast where they are close), but a
p-norm of the two:

    t(n) = ( (W / (e_hbm(n) BW))^p + (F(n) / (e_tc FLOPS))^p )^(1/p)

    e_hbm(n)  HBM efficiency: `gemv_hbm` for n <= 16 rows, `gemm_hbm` above (cuBLAS switches
              from GEMV-like to tiled kernels there: both L20 profiles step up 18-20%
              between 16 and 17 tokens at equal weight bytes)
    e_tc      tensor-core efficiency against the dense fp16 datasheet figure
    p         how much the two overlap (1: not at all, the old linear sum; inf: perfectly)

Fitted on Qwen2.5-32B's profile, Llama-2-13B held out (and the reverse, printed). The fit
uses the plateau ends: the measured step is a staircase of 128-token GEMM tiles (t(129) is
25% above t(128), flat to 256), and the smooth model describes the value at each tile's end,
which is where the listed sizes (1, 64, 128, 256, ... 2048) sit. Not modelled: the
staircase inside a tile (up to 25% under just past a multiple of 128 rows, 0 at its end).
The efficiencies are fractions of the datasheet; the RTX 4090 and L40 are the same Ada
generation (AD102) as the L20 and take the same fractions: an assumption.

**All-reduce over PCIe.** NCCL's ring: 2(n - 1) steps, each a hop's latency, and
2(n - 1)/n of the message over each GPU's bus bandwidth (nccl-tests' busbw):

    t_ar(n, bytes) = 2 (n - 1) hop + 2 (n - 1) / n * bytes / busbw

fitted (relative least squares) to the 8-byte latency of 8x RTX 4090 and the 1, 4 and 64 MB
bandwidths of 4x RTX 4090 with a P2P driver. The 25.7 GB/s of issue 36 (4x RTX 4090D,
256 MB-2 GB messages, another machine) is printed, not fitted: decode all-reduces are
0.5-10 MB.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .model_shapes import PRESETS, ModelShape

DATA = Path(__file__).resolve().parent / "data" / "published"
L20_PROFILES = {"llama-2-13b": "L20-Llama-13B.csv", "qwen2.5-32b": "L20-Qwen2.5-32B.csv",
                "opt-125m": "L20-opt-125m.csv"}
LISTED_SIZES = (1, 64, 128, 256, 512, 1024, 2048)   # the sizes the acceptance names
# L20 datasheet (the profiles' GPU): GDDR6 864 GB/s, 119.5 TFLOP/s dense fp16.
L20_HBM_BYTES_PER_S = 864e9
L20_FLOPS = 119.5e12
GEMV_ROWS = 16
# OPT-125m (facebook/opt-125m config.json): 12 layers, hidden 768, 12 heads, FFN 3072.
OPT_125M = ModelShape("opt-125m", num_layers=12, hidden=768, heads=12, kv_heads=12,
                      head_dim=64, intermediate=3072, vocab=50272)


@dataclass(frozen=True)
class Kernels:
    """How close a forward gets to the datasheet, and how much its memory and compute
    overlap (module note). Shared by every GPU of a machine."""

    gemv_hbm: float       # HBM efficiency of GEMMs of <= GEMV_ROWS rows (and of KV reads)
    gemm_hbm: float       # HBM efficiency of larger GEMMs
    tensor: float         # tensor-core efficiency
    overlap_p: float      # p-norm exponent, >= 1

    def __post_init__(self) -> None:
        if not (self.gemv_hbm > 0 and self.gemm_hbm > 0 and self.tensor > 0
                and self.overlap_p >= 1.0):
            raise ValueError(f"invalid Kernels {self}")

    def forward_s(self, read_bytes: float, flops: float, rows: float, hbm_bytes_per_s: float,
                  flops_per_s: float) -> float:
        """Seconds of the GEMMs of one forward: `read_bytes` of weights, `flops` of work,
        `rows` rows (tokens) a GEMM."""
        e = self.gemv_hbm if rows <= GEMV_ROWS else self.gemm_hbm
        tm = read_bytes / (e * hbm_bytes_per_s)
        tc = flops / (self.tensor * flops_per_s)
        p = self.overlap_p
        hi = max(tm, tc)
        if hi <= 0.0:
            return 0.0
        return hi * ((tm / hi) ** p + (tc / hi) ** p) ** (1.0 / p)

    def stream_s(self, nbytes: float, hbm_bytes_per_s: float) -> float:
        """A pure stream (attention reading KV): the GEMV efficiency."""
        return nbytes / (self.gemv_hbm * hbm_bytes_per_s)


@dataclass(frozen=True)
class AllReduceModel:
    hop_s: float              # latency of one ring step
    bus_bytes_per_s: float    # nccl-tests bus bandwidth

    def latency_s(self, gpus: int) -> float:
        return 2 * (gpus - 1) * self.hop_s if gpus > 1 else 0.0

    def s_per_byte(self, gpus: int) -> float:
        return 2 * (gpus - 1) / gpus / self.bus_bytes_per_s if gpus > 1 else 0.0

    def time(self, gpus: int, nbytes: float) -> float:
        if gpus <= 1 or nbytes <= 0:
            return 0.0
        return self.latency_s(gpus) + nbytes * self.s_per_byte(gpus)


# Fitted constants (fit_kernels on TD-Pipe's L20 Qwen2.5-32B profile; fit_allreduce on the
# fitted rows of allreduce-pcie.csv). benchmarks/calibrate.py refits and prints them; a test
# checks they agree with the refit.
L20_KERNELS = Kernels(gemv_hbm=0.8341, gemm_hbm=0.6958, tensor=0.8913, overlap_p=3.68)
PCIE_ALLREDUCE = AllReduceModel(hop_s=3.054e-6, bus_bytes_per_s=12.50e9)
# The old model, for comparison and for devices no profile describes (a CPU): weight read
# plus compute at the datasheet rates, no overlap.
NO_OVERLAP = Kernels(gemv_hbm=1.0, gemm_hbm=1.0, tensor=1.0, overlap_p=1.0)


# ---- data ------------------------------------------------------------------------------
def load_l20(model: str) -> dict[int, float]:
    """TD-Pipe's L20 profile of `model`: tokens of one forward -> seconds."""
    with open(DATA / L20_PROFILES[model], newline="") as f:
        return {int(r["Total Length"]): float(r["Execute Time"]) / 1e3 for r in csv.DictReader(f)}


class AllReducePoint(NamedTuple):
    gpus: int
    nbytes: int
    seconds: float
    fitted: bool
    source: str


def load_allreduce() -> list[AllReducePoint]:
    with open(DATA / "allreduce-pcie.csv", newline="") as f:
        return [AllReducePoint(int(r["gpus"]), int(r["bytes"]), float(r["seconds"]),
                               r["fitted"] == "yes", r["source"]) for r in csv.DictReader(f)]


def plateau_sizes(top: int = 2048) -> list[int]:
    """Powers of two to 128, then every tile end (multiple of 128) to `top`."""
    return [1, 2, 4, 8, 16, 32, 64, 128] + list(range(256, top + 1, 128))


def forward_terms(model: ModelShape, tokens: int) -> tuple[float, float]:
    """(weight bytes read, FLOPs) of one forward of `tokens` tokens of one sequence, the whole
    model on one GPU: every layer and the LM head read once (the embedding is a gather),
    GEMMs over every token, logits for the last one, causal attention (2 n^2 d a head a
    layer)."""
    read = (model.num_layers * model.layer_params + model.head_params) * model.dtype_bytes
    flops = (2.0 * model.num_layers * model.layer_params * tokens + 2.0 * model.head_params
             + 2.0 * model.num_layers * model.heads * model.head_dim * tokens * tokens)
    return float(read), flops


def predict_l20(kernels: Kernels, model: ModelShape, tokens: int) -> float:
    read, flops = forward_terms(model, tokens)
    return kernels.forward_s(read, flops, tokens, L20_HBM_BYTES_PER_S, L20_FLOPS)


# ---- fits ------------------------------------------------------------------------------
def fit_kernels(samples: list[tuple[ModelShape, int, float]], hbm_bytes_per_s: float = L20_HBM_BYTES_PER_S,
                flops_per_s: float = L20_FLOPS) -> Kernels:
    """Least squares on relative error. For a given p the model is linear in
    (e_gemv^-p, e_gemm^-p, e_tc^-p) once raised to the p-th power, so: a grid over p (step
    0.01), a linear solve for each, keep the p with the smallest relative error in t."""
    terms = np.array([forward_terms(m, n) for m, n, _ in samples])            # [S, 2]
    tm = terms[:, 0] / hbm_bytes_per_s
    tc = terms[:, 1] / flops_per_s
    y = np.array([s for _, _, s in samples])
    small = np.array([n <= GEMV_ROWS for _, n, _ in samples])
    best: tuple[float, Kernels] | None = None
    for p in np.round(np.arange(1.0, 8.0 + 1e-9, 0.01), 2):
        a = np.column_stack([np.where(small, (tm / y) ** p, 0.0),
                             np.where(small, 0.0, (tm / y) ** p), (tc / y) ** p])
        u, *_ = np.linalg.lstsq(a, np.ones(len(y)), rcond=None)
        if (u <= 0).any():
            continue
        eff = u ** (-1.0 / p)
        k = Kernels(float(eff[0]), float(eff[1]), float(eff[2]), float(p))
        pred = np.array([k.forward_s(r, f, n, hbm_bytes_per_s, flops_per_s)
                         for (r, f), (_, n, _) in zip(terms, samples)])
        err = float(np.sum((pred / y - 1.0) ** 2))
        if best is None or err < best[0]:
            best = (err, k)
    if best is None:
        raise ValueError("no p in [1, 8] gives positive efficiencies")
    return best[1]


def fit_l20(model: str) -> Kernels:
    prof = load_l20(model)
    shape = _preset(model)
    return fit_kernels([(shape, n, prof[n]) for n in plateau_sizes() if n in prof])


def fit_allreduce(points: list[AllReducePoint]) -> AllReduceModel:
    """Relative least squares of t = 2(n-1) hop + 2(n-1)/n bytes / busbw over the points
    marked fitted (linear in hop and 1/busbw)."""
    pts = [p for p in points if p.fitted]
    a = np.array([[2.0 * (p.gpus - 1), 2.0 * (p.gpus - 1) / p.gpus * p.nbytes] for p in pts])
    y = np.array([p.seconds for p in pts])
    (hop, inv_bw), *_ = np.linalg.lstsq(a / y[:, None], np.ones(len(y)), rcond=None)
    if hop < 0 or inv_bw <= 0:
        raise ValueError(f"all-reduce fit out of range: hop {hop}, 1/bw {inv_bw}")
    return AllReduceModel(float(hop), float(1.0 / inv_bw))


def _preset(model: str) -> ModelShape:
    return OPT_125M if model == "opt-125m" else PRESETS[model]


def l20_errors(kernels: Kernels, model: str, sizes=LISTED_SIZES) -> dict[int, float]:
    """Relative error (predicted / measured - 1) at each size of TD-Pipe's L20 profile."""
    prof = load_l20(model)
    shape = _preset(model)
    return {n: predict_l20(kernels, shape, n) / prof[n] - 1.0 for n in sizes}


def linear_sum_errors(model: str, sizes=LISTED_SIZES) -> dict[int, float]:
    """The old model's error: weight read plus compute, datasheet rates, no overlap."""
    prof = load_l20(model)
    shape = _preset(model)
    out = {}
    for n in sizes:
        read, flops = forward_terms(shape, n)
        out[n] = (read / L20_HBM_BYTES_PER_S + flops / L20_FLOPS) / prof[n] - 1.0
    return out
