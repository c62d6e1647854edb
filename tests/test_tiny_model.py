"""The built-in model is deterministic and is an ordinary Hugging Face checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipemax_sglang.models import TINY_MODEL_RECIPE, ensure_tiny_model


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


def test_two_builds_are_byte_identical(tiny_model, tmp_path):
    again = Path(ensure_tiny_model(tmp_path / "tiny"))
    assert _digest(again) == _digest(Path(tiny_model))


def test_current_build_is_reused(tiny_model):
    stamp = Path(tiny_model) / "pipemax_tiny_model.json"
    before = stamp.stat().st_mtime_ns
    assert ensure_tiny_model(tiny_model) == tiny_model
    assert stamp.stat().st_mtime_ns == before


def test_checkpoint_is_a_llama_with_the_recipe_shape(tiny_model):
    cfg = json.loads((Path(tiny_model) / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_key_value_heads"):
        assert cfg[key] == TINY_MODEL_RECIPE[key]
    assert (Path(tiny_model) / "model.safetensors").exists()


def test_tokenizer_round_trips_text_and_has_a_chat_template(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = "def main():\n    return {'a': 1}\n"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert max(ids) < TINY_MODEL_RECIPE["vocab_size"]
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|assistant|>\n") and "hi" in chat
