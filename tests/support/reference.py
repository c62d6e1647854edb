"""The token reference: Hugging Face transformers' greedy generate on the same checkpoint."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=4)
def _model(model_path: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    # ignore_eos in SGLang: keep generating through EOS. HF stops at eos_token_id unless unset.
    model.generation_config.eos_token_id = None
    return model


def hf_greedy(model_path: str, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation token ids for each prompt (one at a time: no padding effects)."""
    import torch

    model = _model(model_path)
    outs = []
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids], dtype=torch.long)
            y = model.generate(
                x, attention_mask=torch.ones_like(x), do_sample=False,
                max_new_tokens=max_new_tokens, min_new_tokens=0, pad_token_id=0,
            )
            outs.append(y[0, len(ids):].tolist())
    return outs
