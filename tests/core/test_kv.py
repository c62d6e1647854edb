"""KV bytes per token per stage, against hand-computed figures and SGLang's layer split."""

import pytest

from pipemax_sglang.core import (
    ModelKVConfig,
    kv_bytes_per_token,
    pp_layer_split,
    stage_kv_bytes_per_token,
)

LLAMA3_70B = {"num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
              "hidden_size": 8192, "torch_dtype": "bfloat16"}


def test_kv_bytes_per_token_formula():
    # 2 (K, V) x 80 layers x 8 heads x 128 dim x 2 bytes = 327,680 B = 320 KiB
    assert kv_bytes_per_token(80, 8, 128, 2) == 327_680
    assert kv_bytes_per_token(0, 8, 128, 2) == 0
    with pytest.raises(ValueError):
        kv_bytes_per_token(-1, 8, 128, 2)


def test_layer_split_follows_sglang_get_pp_indices():
    # SGLang gives the remainder to the LAST stages.
    assert pp_layer_split(30, 4) == (7, 7, 8, 8)
    assert pp_layer_split(80, 8) == (10,) * 8
    assert pp_layer_split(5, 1) == (5,)
    assert pp_layer_split(10, 3, partition=(2, 4, 4)) == (2, 4, 4)
    with pytest.raises(ValueError):
        pp_layer_split(10, 3, partition=(2, 4, 5))


def test_from_hf_config_and_per_stage_bytes():
    cfg = ModelKVConfig.from_hf_config(LLAMA3_70B)
    assert cfg == ModelKVConfig(80, 8, 128, 2)          # head_dim = 8192 / 64
    assert cfg.bytes_per_token == 327_680
    # PP 8: 10 layers a stage -> 40,960 B per token per GPU
    assert stage_kv_bytes_per_token(cfg, pp_size=8) == (40_960,) * 8
    # TP 2 halves the heads per GPU; TP 16 > 8 heads keeps one replicated head
    assert stage_kv_bytes_per_token(cfg, pp_size=8, tp_size=2) == (20_480,) * 8
    assert stage_kv_bytes_per_token(cfg, pp_size=8, tp_size=16) == (5_120,) * 8
    # fp8 KV halves it; uneven split: 30 layers over 4 -> (7, 7, 8, 8) layers
    fp8 = ModelKVConfig.from_hf_config(LLAMA3_70B, kv_dtype="fp8_e4m3")
    assert fp8.bytes_per_token == 163_840
    odd = ModelKVConfig(30, 8, 128, 2)
    assert stage_kv_bytes_per_token(odd, 4) == tuple(2 * n * 8 * 128 * 2 for n in (7, 7, 8, 8))


def test_from_hf_config_defaults_and_errors():
    cfg = ModelKVConfig.from_hf_config({"num_hidden_layers": 2, "num_attention_heads": 4,
                                        "hidden_size": 256, "torch_dtype": "float32"})
    assert cfg == ModelKVConfig(2, 4, 64, 4)              # MHA: kv heads = heads
    with pytest.raises(ValueError):
        ModelKVConfig.from_hf_config(LLAMA3_70B, kv_dtype="int3")
