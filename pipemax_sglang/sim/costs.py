"""Step times and memory of each stage, from a model shape and a machine (performance-model.md).

Decode, per stage s, in the core's StepCost form (so the selector predicts with exactly the
model the simulator runs; the linear sum counts weight reads and compute one after the
other, which over-states large micro-batches a little: conservative for PipeMax):

    t_s(rows, sum_ctx) = a_s + b_s * rows + c_s * sum_ctx
        a_s = read_bytes_s / BW_hbm + overhead          the stage's weights, once a step
        b_s = 2 * read_params_s / FLOPS                 GEMMs, one row each
        c_s = k_s / BW_hbm                              every context token's KV read once

Prefill of n prompt tokens in `rows` requests with prompt lengths l_i:

    t_s = a_s + (2 * layer_params_s / FLOPS) * n + (2 * head_params / FLOPS) * rows
              + attn_s * sum(l_i^2),   attn_s = 2 * layers_s * heads * head_dim / FLOPS
    (logits only for each request's last token; causal attention: QK^T and AV, half each)

Tensor parallel over PCIe (the baseline) is one stage on P GPUs: weights, FLOPs and KV
heads split P ways, plus two ring all-reduces a layer of rows * hidden * dtype bytes,

    t_ar(bytes) = 2 (P-1) * hop_latency + 2 (P-1)/P * bytes / BW_ring

whose latency part joins a and whose bandwidth part joins b (per row; per token in prefill).

Device KV capacity of a stage: (HBM - weights_s - reserve) / k_s tokens. Every stage holds
the same requests, so the pipeline's capacity is the smallest stage's (SGLang takes the
minimum over PP ranks too).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipemax_sglang.core import StepCost

from .machine import Machine
from .model_shapes import ModelShape


@dataclass(frozen=True)
class StageCost:
    step: StepCost          # decode
    prefill_b: float        # seconds per prompt token (layers, and all-reduce under TP)
    head_b: float           # seconds per request for the logits of a prefill
    attn: float             # seconds per squared prompt length
    kv_bytes: int           # k_s: KV bytes per token on one GPU of this stage
    weight_bytes: int       # held on one GPU of this stage
    capacity_tokens: int    # device KV tokens

    def decode_time(self, rows: int, sum_ctx: int) -> float:
        return self.step.predict(rows, sum_ctx)

    def prefill_time(self, tokens: int, rows: int, sum_sq: int) -> float:
        if rows <= 0:
            return 0.0
        return self.step.a + self.prefill_b * tokens + self.head_b * rows + self.attn * sum_sq


@dataclass(frozen=True)
class Layout:
    """How the model sits on the GPUs: `pp` stages (tensor parallel: one stage of `tp` GPUs)."""

    kind: str                          # "pp" or "tp"
    stages: tuple[StageCost, ...]
    hop_latency_s: float               # activation hand-off between stages: fixed part
    hop_s_per_token: float             # ... and per row (decode) / prompt token (prefill)

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
        return tuple(s.step.predict(rows, sum_ctx) for s in self.stages)

    def prefill_times(self, tokens: int, rows: int, sum_sq: int) -> tuple[float, ...]:
        return tuple(s.prefill_time(tokens, rows, sum_sq) for s in self.stages)


class DoesNotFit(ValueError):
    """The weights leave no room for KV on some GPU."""


def _capacity(machine: Machine, weight_bytes: int, kv_bytes: int, where: str) -> int:
    free = machine.profile.hbm_gb * 1e9 - weight_bytes - machine.reserve_gb * 1e9
    tokens = int(free // kv_bytes) if free > 0 else 0
    if tokens < 1:
        raise DoesNotFit(f"{where}: {weight_bytes / 1e9:.1f} GB of weights + "
                         f"{machine.reserve_gb:g} GB reserve exceed {machine.profile.hbm_gb:g} GB")
    return tokens


def pp_layout(model: ModelShape, machine: Machine, pp: int) -> Layout:
    if pp > model.num_layers:
        raise DoesNotFit(f"{model.name}: {pp} stages for {model.num_layers} layers")
    prof = machine.profile
    hbm, flops = prof.hbm_bytes_per_s, prof.flops
    db = model.dtype_bytes
    stages = []
    for s, (layers, held, read, k) in enumerate(zip(model.layers(pp), model.stage_params(pp),
                                                    model.stage_read_params(pp),
                                                    model.stage_kv(pp), strict=True)):
        head = model.head_params if s == pp - 1 else 0
        step = StepCost(a=read * db / hbm + machine.step_overhead_s, b=2.0 * read / flops,
                        c=k / hbm)
        stages.append(StageCost(
            step=step, prefill_b=2.0 * layers * model.layer_params / flops,
            head_b=2.0 * head / flops, attn=2.0 * layers * model.heads * model.head_dim / flops,
            kv_bytes=k, weight_bytes=held * db,
            capacity_tokens=_capacity(machine, held * db, k, f"{model.name} pp{pp} stage {s}")))
    h2d = machine.link_rates()[0]
    return Layout("pp", tuple(stages), prof.link_latency_s, model.hidden * db / h2d)


def tp_layout(model: ModelShape, machine: Machine, tp: int) -> Layout:
    prof = machine.profile
    hbm, flops = prof.hbm_bytes_per_s, prof.flops
    db = model.dtype_bytes
    k = model.stage_kv(1, tp)[0]
    held = model.weight_bytes / tp
    read = (model.num_layers * model.layer_params + model.head_params) / tp
    # Two all-reduces a layer (after attention, after the MLP) of rows * hidden * db bytes.
    n_ar = 2 * model.num_layers if tp > 1 else 0
    ar_lat = n_ar * 2 * (tp - 1) * machine.allreduce_hop_s
    ar_per_row = n_ar * 2 * (tp - 1) / tp * model.hidden * db / machine.ring_bytes_per_s
    step = StepCost(a=read * db / hbm + machine.step_overhead_s + ar_lat,
                    b=2.0 * read / flops + ar_per_row, c=k / hbm)
    stage = StageCost(
        step=step, prefill_b=2.0 * model.num_layers * model.layer_params / tp / flops + ar_per_row,
        head_b=2.0 * model.head_params / tp / flops,
        attn=2.0 * model.num_layers * model.heads * model.head_dim / tp / flops,
        kv_bytes=k, weight_bytes=int(held),
        capacity_tokens=_capacity(machine, int(held), k, f"{model.name} tp{tp}"))
    return Layout("tp", (stage,), 0.0, 0.0)


def pcie_ceiling(pp: int, pcie_bytes_per_s: float, mean_context: float,
                 kv_bytes_per_token: int) -> float:
    """dT_max = P * BW_pcie / (L * kv_tok) tokens/s (performance-model.md): the most decode
    tokens a second that prefetching can add, if every rejoin brings a whole context of L
    tokens (kv_tok bytes each over the whole model, 1/P of it over each stage's link) for
    one token of output."""
    if mean_context <= 0:
        return 0.0
    return pp * pcie_bytes_per_s / (mean_context * kv_bytes_per_token)
