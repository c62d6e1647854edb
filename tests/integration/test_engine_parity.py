"""pipemax_sglang.Engine runs SGLang's real processes and returns Hugging Face's greedy tokens.

One engine per PP size (module-scoped): SGLang's tokenizer manager, scheduler process(es) with
PipeMaxScheduler installed, detokenizer, model runner on CPU.
"""

from __future__ import annotations

import pytest

from tests.conftest import GREEDY, random_prompts
from tests.support.engine_process import EngineProcess
from tests.support.reference import hf_greedy

NEW_TOKENS = 16
PROMPTS = random_prompts(8, 5, 60, seed=1)


@pytest.fixture(scope="module", params=[1, 2], ids=["pp1", "pp2"])
def engine(request, tiny_model):
    with EngineProcess(
        model_path=tiny_model, pp_size=request.param, max_total_tokens=4096,
        log_level="error", pipemax_selector="fcfs",
    ) as eng:
        yield request.param, eng


def test_greedy_tokens_equal_hf(engine, tiny_model):
    pp, eng = engine
    outs = eng.generate(input_ids=PROMPTS, sampling_params={**GREEDY, "max_new_tokens": NEW_TOKENS})
    got = [o["output_ids"] for o in outs]
    assert got == hf_greedy(tiny_model, PROMPTS, NEW_TOKENS), f"pp_size={pp}"


def test_text_prompt_through_tokenizer(engine, tiny_model):
    """A text prompt goes through SGLang's TokenizerManager and DetokenizerManager."""
    from transformers import AutoTokenizer

    _, eng = engine
    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = "def fibonacci(n):\n    return"
    out = eng.generate(prompt=prompt, sampling_params={**GREEDY, "max_new_tokens": 8})[0]
    ids = tok(prompt)["input_ids"]
    assert out["output_ids"] == hf_greedy(tiny_model, [ids], 8)[0]
    assert out["text"] == tok.decode(out["output_ids"])


def test_every_stage_runs_pipemax_scheduler_with_the_config(engine):
    pp, eng = engine
    status = eng.status()
    assert status["enabled"] is True
    assert [s["pp_rank"] for s in status["stages"]] == list(range(pp))
    for stage in status["stages"]:
        assert stage["scheduler"] == "PipeMaxScheduler"
        assert stage["config"] == status["config"]
        assert stage["config"]["selector"] == "fcfs"
        assert stage["pp_size"] == pp
