"""KV-cache bytes per token, per pipeline stage, from a model config.

Every byte figure in the policy (prefetch budget, plan bytes, host capacity) is
tokens x k_s, where k_s is what one token's KV costs on stage s:

    k_s = 2 (K and V) x layers_s x kv_heads_per_rank x head_dim x dtype_bytes

layers_s follows SGLang 0.5.23's split (`sglang.srt.distributed.utils.get_pp_indices`):
num_layers // pp_size each, and the remainder goes one layer each to the LAST stages.
An explicit partition (SGLang's SGLANG_PP_LAYER_PARTITION) can be passed in; this module
reads no environment. With tensor parallelism each rank holds kv_heads // tp heads, and at
least one (SGLang's ModelConfig.get_num_kv_heads; it replicates KV heads when tp > kv_heads).

Not covered: MLA (DeepSeek-style latent KV) and sliding-window layers, whose per-token
cost differs per layer; give their k_s directly to the budget and selector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# torch_dtype strings found in Hugging Face configs -> bytes per element.
_DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of KV one token occupies over `num_layers` layers: 2 * layers * heads * dim * bytes."""
    for name, v in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads),
                    ("head_dim", head_dim), ("dtype_bytes", dtype_bytes)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    return 2 * int(num_layers) * int(num_kv_heads) * int(head_dim) * int(dtype_bytes)


def pp_layer_split(num_layers: int, pp_size: int,
                   partition: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Layers held by each pipeline stage, as SGLang assigns them.

    Default: base = L // P on every stage, the last (L % P) stages hold one more.
    Example: 30 layers, pp 4 -> (7, 7, 8, 8).
    """
    if pp_size < 1:
        raise ValueError(f"pp_size must be >= 1, got {pp_size}")
    if partition is not None:
        if len(partition) != pp_size or sum(partition) != num_layers or min(partition) < 0:
            raise ValueError(f"partition {partition} does not split {num_layers} layers "
                             f"over {pp_size} stages")
        return tuple(int(p) for p in partition)
    base, rem = divmod(num_layers, pp_size)
    return tuple(base + (1 if s >= pp_size - rem else 0) for s in range(pp_size))


@dataclass(frozen=True)
class ModelKVConfig:
    """The four numbers of a model that fix its KV footprint per token."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: int

    def __post_init__(self) -> None:
        kv_bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype_bytes)
        if min(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype_bytes) < 1:
            raise ValueError(f"every field of {self} must be >= 1")

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any],
                       kv_dtype: str | None = None) -> "ModelKVConfig":
        """Read a Hugging Face `config.json` dict. `kv_dtype` overrides the KV element type
        (SGLang's --kv-cache-dtype, e.g. "fp8_e4m3"); default: the model's torch_dtype."""
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
        dtype = kv_dtype or str(config.get("torch_dtype", "bfloat16"))
        dtype = dtype.removeprefix("torch.")
        if dtype not in _DTYPE_BYTES:
            raise ValueError(f"unknown KV dtype {dtype!r}; known: {sorted(_DTYPE_BYTES)}")
        return cls(layers, kv_heads, head_dim, _DTYPE_BYTES[dtype])

    @property
    def bytes_per_token(self) -> int:
        """Whole model, one rank holding every KV head."""
        return kv_bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim,
                                  self.dtype_bytes)


def stage_kv_bytes_per_token(model: ModelKVConfig, pp_size: int, tp_size: int = 1,
                             partition: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """k_s for every stage s (bytes per token on ONE GPU of that stage)."""
    if tp_size < 1:
        raise ValueError(f"tp_size must be >= 1, got {tp_size}")
    # As SGLang's ModelConfig.get_num_kv_heads: kv_heads // tp, one replicated head at least.
    heads_per_rank = max(1, model.num_kv_heads // tp_size)
    return tuple(kv_bytes_per_token(layers, heads_per_rank, model.head_dim, model.dtype_bytes)
                 for layers in pp_layer_split(model.num_layers, pp_size, partition))
