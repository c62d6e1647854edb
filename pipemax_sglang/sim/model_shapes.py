"""Model shapes: what the simulator needs to know about a transformer, and where it lives.

A `ModelShape` is read from a Hugging Face `config.json` (dict or path) or taken from a
named preset. From it follow, per pipeline stage (SGLang's layer split, core/kv.py):

    params_s        parameters held on stage s: its layers, plus the embedding on stage 0
                    and the LM head on the last stage (untied there: each stage needs its
                    own copy under PP, so a tied head costs its bytes on the last stage)
    read_params_s   parameters read by every decode step: the layers and the LM head
                    (the embedding is a gather of `rows` rows, not a full read)
    k_s             KV bytes per token on stage s (core.stage_kv_bytes_per_token)

Parameter count of one layer (Llama / Qwen2 family: GQA attention, gated MLP):

    q, o      2 * hidden * (heads * head_dim)
    k, v      2 * hidden * (kv_heads * head_dim)     (+ their biases when qkv_bias)
    mlp       3 * hidden * intermediate
    norms     2 * hidden

Presets (configs as published on the Hugging Face hub; parameter counts computed by the
formula above: 13.0 B, 32.8 B, 70.6 B, matching the model cards' 13 B, 32.5 B, 70 B):
Llama-2-13B (meta-llama/Llama-2-13b-hf), Qwen2.5-32B (Qwen/Qwen2.5-32B-Instruct),
Llama-3-70B (meta-llama/Meta-Llama-3-70B).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from pipemax_sglang.core import ModelKVConfig, pp_layer_split, stage_kv_bytes_per_token


@dataclass(frozen=True)
class ModelShape:
    name: str
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype_bytes: int = 2          # weights and KV (bf16/fp16)
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        for f in ("num_layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate",
                  "vocab", "dtype_bytes"):
            if getattr(self, f) < 1:
                raise ValueError(f"ModelShape.{f} must be >= 1, got {getattr(self, f)}")

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str = "custom") -> "ModelShape":
        kv = ModelKVConfig.from_hf_config(config)
        heads = int(config["num_attention_heads"])
        return cls(
            name=name,
            num_layers=kv.num_layers,
            hidden=int(config["hidden_size"]),
            heads=heads,
            kv_heads=kv.num_kv_heads,
            head_dim=kv.head_dim,
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            dtype_bytes=kv.dtype_bytes,
            qkv_bias=bool(config.get("attention_bias", False))
            or config.get("model_type") == "qwen2",
        )

    @property
    def kv(self) -> ModelKVConfig:
        return ModelKVConfig(self.num_layers, self.kv_heads, self.head_dim, self.dtype_bytes)

    @property
    def kv_bytes_per_token(self) -> int:
        """Whole model (all layers, all KV heads): the kv_tok of performance-model.md."""
        return self.kv.bytes_per_token

    @cached_property
    def layer_params(self) -> int:
        q = self.heads * self.head_dim
        kvd = self.kv_heads * self.head_dim
        attn = 2 * self.hidden * q + 2 * self.hidden * kvd
        bias = (q + 2 * kvd) if self.qkv_bias else 0
        return attn + bias + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def head_params(self) -> int:
        """LM head (vocab x hidden) plus the final norm."""
        return self.vocab * self.hidden + self.hidden

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.num_layers * self.layer_params + self.embed_params + self.head_params

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    # ---- per pipeline stage -------------------------------------------------------------
    def layers(self, pp: int) -> tuple[int, ...]:
        return pp_layer_split(self.num_layers, pp)

    def stage_params(self, pp: int) -> tuple[int, ...]:
        """Parameters held by each stage (memory)."""
        out = []
        for s, n in enumerate(self.layers(pp)):
            p = n * self.layer_params
            p += self.embed_params if s == 0 else 0
            p += self.head_params if s == pp - 1 else 0
            out.append(p)
        return tuple(out)

    def stage_read_params(self, pp: int) -> tuple[int, ...]:
        """Parameters every decode step reads and multiplies (no embedding gather)."""
        return tuple(n * self.layer_params + (self.head_params if s == pp - 1 else 0)
                     for s, n in enumerate(self.layers(pp)))

    def stage_kv(self, pp: int, tp: int = 1) -> tuple[int, ...]:
        return stage_kv_bytes_per_token(self.kv, pp, tp)


_PRESETS: dict[str, dict[str, Any]] = {
    "llama-2-13b": dict(num_hidden_layers=40, hidden_size=5120, num_attention_heads=40,
                        num_key_value_heads=40, intermediate_size=13824, vocab_size=32000,
                        torch_dtype="float16", model_type="llama"),
    "qwen2.5-32b": dict(num_hidden_layers=64, hidden_size=5120, num_attention_heads=40,
                        num_key_value_heads=8, intermediate_size=27648, vocab_size=152064,
                        torch_dtype="bfloat16", model_type="qwen2"),
    "llama-3-70b": dict(num_hidden_layers=80, hidden_size=8192, num_attention_heads=64,
                        num_key_value_heads=8, intermediate_size=28672, vocab_size=128256,
                        torch_dtype="bfloat16", model_type="llama"),
}
PRESETS: dict[str, ModelShape] = {k: ModelShape.from_hf_config(v, k) for k, v in _PRESETS.items()}
_ALIASES = {"llama2-13b": "llama-2-13b", "qwen2.5-32b-instruct": "qwen2.5-32b",
            "llama3-70b": "llama-3-70b", "meta-llama-3-70b": "llama-3-70b"}


def load_model(spec: str) -> ModelShape:
    """A preset name (case-insensitive), or a path to a config.json or to a folder with one."""
    key = spec.lower()
    key = _ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"unknown model {spec!r}: not a preset ({', '.join(PRESETS)}) "
                         f"and no config.json there")
    return ModelShape.from_hf_config(json.loads(path.read_text()), name=path.parent.name or spec)
