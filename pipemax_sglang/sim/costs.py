"""Step times and memory of each stage, from a model shape and a machine (performance-model.md).

A layout is `pp` stages of `tp` GPUs each (tp = 1: plain pipeline; pp = 1: tensor parallel;
both > 1: a hybrid). Per GPU of stage s, with the stage's layers split `tp` ways:

Decode of `rows` requests whose contexts sum to `ctx` tokens (calibration.py's step model:
weight reads and GEMMs overlap, attention's KV read and the all-reduces do not):

    t_s = overhead + K(W_s, 2 N_s rows; rows) + kv_s * ctx / (e_gemv BW) + comm_s(rows)
        K(W, F; n)   = ((W / (e_hbm(n) BW))^p + (F / (e_tc FLOPS))^p)^(1/p)
        W_s, N_s     weight bytes and parameters read a step (the layers, the LM head on the
                     last stage; the embedding is a gather)

Prefill of n prompt tokens in `rows` requests with prompt lengths l_i: the same K with
F = 2 layer_params_s n + 2 head_s rows + 2 layers_s heads head_dim sum(l_i^2) (logits only
for each request's last token; causal attention) and GEMMs of n rows.

Tensor parallel (tp > 1): two ring all-reduces a layer of rows x hidden x dtype bytes
(tokens x ... in prefill), and on the last stage the logits' all-gather of rows x vocab x
dtype bytes (SGLang's LogitsProcessor gathers vocab-parallel logits):

    comm_s(rows) = 2 layers_s t_ar(tp, rows h db) + t_ag(tp, rows V db)
    t_ar(n, B)   = 2 (n-1) hop + 2 (n-1)/n B / busbw        (calibration.PCIE_ALLREDUCE)
    t_ag(n, B)   = (n-1) hop + (n-1)/n B / busbw            (half a ring all-reduce)

The policy predicts with a linear StepCost a + b rows + c ctx (the core's form, what the live
stack fits online); `StageCost.step` is that line fitted to the stage's own step over
8-256 rows, so the selector predicts the simulated step to within a few per cent.

Device KV capacity of a stage: (HBM - weights_s - reserve) / k_s tokens a GPU. Every stage
holds the same requests, so the pipeline's capacity is the smallest stage's (SGLang takes
the minimum over ranks too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipemax_sglang.core import StepCost

from .calibration import Kernels
from .machine import Machine
from .model_shapes import ModelShape

_LINEARISE_ROWS = np.array([8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256], dtype=np.float64)


@dataclass(frozen=True)
class Forward:
    """One GPU of a stage: what a forward reads, multiplies and communicates."""

    read_bytes: float        # weights read every step
    row_flops: float         # decode FLOPs a row (2 x parameters read)
    token_flops: float       # prefill FLOPs a prompt token (layers)
    head_flops: float        # prefill FLOPs a request (LM head, its last token)
    attn_flops: float        # prefill FLOPs a squared prompt length
    kv_s_per_token: float    # decode: seconds to read one context token's KV
    hbm: float               # bytes/s
    flops: float             # FLOP/s
    kernels: Kernels
    fixed_s: float           # overhead + all-reduce latencies
    comm_s_per_row: float    # all-reduce bandwidth a row (decode) or a prompt token (prefill)
    gather_s_per_row: float  # logits all-gather a row (TP, last stage)

    def decode(self, rows: int, ctx: int) -> float:
        if rows <= 0:
            return 0.0
        k = self.kernels.forward_s(self.read_bytes, self.row_flops * rows, rows, self.hbm, self.flops)
        return (self.fixed_s + k + self.kv_s_per_token * ctx
                + (self.comm_s_per_row + self.gather_s_per_row) * rows)

    def prefill(self, tokens: int, rows: int, sum_sq: int) -> float:
        if rows <= 0:
            return 0.0
        f = self.token_flops * tokens + self.head_flops * rows + self.attn_flops * sum_sq
        k = self.kernels.forward_s(self.read_bytes, f, tokens, self.hbm, self.flops)
        return self.fixed_s + k + self.comm_s_per_row * tokens + self.gather_s_per_row * rows

    def linearised(self) -> StepCost:
        """a + b rows + c ctx: least squares on relative error over 8-256 rows (c exact)."""
        r = _LINEARISE_ROWS
        y = np.array([self.decode(int(n), 0) for n in r])
        x = np.column_stack([np.ones_like(r), r]) / y[:, None]
        (a, b), *_ = np.linalg.lstsq(x, np.ones_like(r), rcond=None)
        if b < 0:                       # flat: all memory bound
            a, b = float(np.mean(y)), 0.0
        if a < 0:
            a, b = 0.0, float(np.sum(y * r) / np.sum(r * r))
        return StepCost(float(a), float(b), self.kv_s_per_token)


@dataclass(frozen=True)
class StageCost:
    step: StepCost          # the policy's linear model (and the step, when forward is None)
    prefill_b: float        # linear form only: seconds per prompt token
    head_b: float           # linear form only: seconds per request for its logits
    attn: float             # linear form only: seconds per squared prompt length
    kv_bytes: int           # k_s: KV bytes per token on one GPU of this stage
    weight_bytes: int       # held on one GPU of this stage
    capacity_tokens: int    # device KV tokens
    forward: Forward | None = None    # the calibrated step; None: the linear form above

    def decode_time(self, rows: int, sum_ctx: int) -> float:
        if self.forward is not None:
            return self.forward.decode(rows, sum_ctx)
        return self.step.predict(rows, sum_ctx)

    def prefill_time(self, tokens: int, rows: int, sum_sq: int) -> float:
        if rows <= 0:
            return 0.0
        if self.forward is not None:
            return self.forward.prefill(tokens, rows, sum_sq)
        return self.step.a + self.prefill_b * tokens + self.head_b * rows + self.attn * sum_sq


@dataclass(frozen=True)
class Layout:
    """How the model sits on the GPUs: `pp` stages of `tp` GPUs each."""

    kind: str                          # "pp" or "tp" (pp == 1)
    stages: tuple[StageCost, ...]
    hop_latency_s: float               # activation hand-off between stages: fixed part
    hop_s_per_token: float             # ... and per row (decode) / prompt token (prefill)
    tp: int = 1

    @property
    def pp(self) -> int:
        return len(self.stages)

    @property
    def capacity_tokens(self) -> int:
        return min(s.capacity_tokens for s in self.stages)

    @property
    def kv_bytes(self) -> tuple[int, ...]:
        return tuple(s.kv_bytes for s in self.stages)

    def decode_times(self, rows: int, sum_ctx: int) -> tuple[float, ...]:
        return tuple(s.decode_time(rows, sum_ctx) for s in self.stages)

    def prefill_times(self, tokens: int, rows: int, sum_sq: int) -> tuple[float, ...]:
        return tuple(s.prefill_time(tokens, rows, sum_sq) for s in self.stages)


class DoesNotFit(ValueError):
    """The weights leave no room for KV on some GPU."""


def _capacity(machine: Machine, weight_bytes: float, kv_bytes: int, where: str) -> int:
    free = machine.profile.hbm_gb * 1e9 - weight_bytes - machine.reserve_gb * 1e9
    tokens = int(free // kv_bytes) if free > 0 else 0
    if tokens < 1:
        raise DoesNotFit(f"{where}: {weight_bytes / 1e9:.1f} GB of weights + "
                         f"{machine.reserve_gb:g} GB reserve exceed {machine.profile.hbm_gb:g} GB")
    return tokens


def layout(model: ModelShape, machine: Machine, tp: int = 1, pp: int = 1) -> Layout:
    """`pp` stages of `tp` GPUs (module note)."""
    if tp < 1 or pp < 1:
        raise ValueError("tp and pp must be >= 1")
    if pp > model.num_layers:
        raise DoesNotFit(f"{model.name}: {pp} stages for {model.num_layers} layers")
    prof = machine.profile
    hbm, flops = prof.hbm_bytes_per_s, prof.flops
    db = model.dtype_bytes
    ar = machine.allreduce
    kern = machine.kernels
    stages = []
    for s, (layers, held, read, k) in enumerate(zip(model.layers(pp), model.stage_params(pp),
                                                    model.stage_read_params(pp),
                                                    model.stage_kv(pp, tp), strict=True)):
        last = s == pp - 1
        head = model.head_params if last else 0
        n_ar = 2 * layers if tp > 1 else 0
        fixed = machine.step_overhead_s + n_ar * ar.latency_s(tp)
        comm = n_ar * model.hidden * db * ar.s_per_byte(tp)
        gather = 0.0
        if tp > 1 and last:                 # half a ring all-reduce of the logits
            fixed += 0.5 * ar.latency_s(tp)
            gather = 0.5 * model.vocab * db * ar.s_per_byte(tp)
        fwd = Forward(read_bytes=read * db / tp, row_flops=2.0 * read / tp,
                      token_flops=2.0 * layers * model.layer_params / tp,
                      head_flops=2.0 * head / tp,
                      attn_flops=2.0 * layers * model.heads * model.head_dim / tp,
                      kv_s_per_token=kern.stream_s(k, hbm), hbm=hbm, flops=flops, kernels=kern,
                      fixed_s=fixed, comm_s_per_row=comm, gather_s_per_row=gather)
        stages.append(StageCost(
            step=fwd.linearised(), prefill_b=fwd.token_flops / flops, head_b=fwd.head_flops / flops,
            attn=fwd.attn_flops / flops, kv_bytes=k, weight_bytes=int(held * db / tp),
            capacity_tokens=_capacity(machine, held * db / tp, k,
                                      f"{model.name} tp{tp} pp{pp} stage {s}"),
            forward=fwd))
    h2d = machine.link_rates()[0]
    kind = "tp" if pp == 1 and tp > 1 else "pp"
    hop = (prof.link_latency_s, model.hidden * db / h2d) if pp > 1 else (0.0, 0.0)
    return Layout(kind, tuple(stages), hop[0], hop[1], tp)


def pp_layout(model: ModelShape, machine: Machine, pp: int) -> Layout:
    return layout(model, machine, 1, pp)


def tp_layout(model: ModelShape, machine: Machine, tp: int) -> Layout:
    return layout(model, machine, tp, 1)


def pcie_ceiling(gpus: int, pcie_bytes_per_s: float, mean_context: float,
                 kv_bytes_per_token: int) -> float:
    """dT_max = G * BW_pcie / (L * kv_tok) tokens/s (performance-model.md): the most decode
    tokens a second that prefetching can add, if every rejoin brings a whole context of L
    tokens (kv_tok bytes each over the whole model, 1/G of it over each GPU's link) for
    one token of output."""
    if mean_context <= 0:
        return 0.0
    return gpus * pcie_bytes_per_s / (mean_context * kv_bytes_per_token)
