"""Reject prompts with token ids outside the vocabulary before they reach a scheduler.

Stock SGLang 0.5.23 forwards such ids to the model, whose embedding lookup raises IndexError
in the scheduler process, and the whole server goes down (seen on CPU; see
docs/sglang-on-cpu.md, "Quirks"). One bad request must cost a 4xx, not the server:
this BEFORE hook on TokenizerManager._validate_one_request (which already rejects over-long
prompts with ValueError -> HTTP 400) adds the range check there.
"""

from __future__ import annotations

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

_TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request"


def check_input_ids(self, obj, input_ids, *args, **kwargs):
    if input_ids:
        vocab = self.model_config.vocab_size
        lo, hi = min(input_ids), max(input_ids)
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise ValueError(f"input_ids contains token id {bad} outside the vocabulary [0, {vocab})")
    return None


def register_hooks() -> None:
    HookRegistry.register(_TARGET, check_input_ids, HookType.BEFORE)
