"""`python -m pipemax_sglang.launch_server` for real: SGLang's HTTP server, tokenizer manager,
two PP scheduler processes with PipeMaxScheduler, detokenizer; answers checked against HF."""

from __future__ import annotations

import json

import psutil
import pytest
import requests

from tests.conftest import random_prompts
from tests.support.reference import hf_greedy
from tests.support.server_process import ServerProcess

PP = 2


@pytest.fixture(scope="module")
def server(tiny_model):
    srv = ServerProcess([
        "--model-path", tiny_model, "--pp-size", str(PP), "--max-total-tokens", "4096",
        "--enable-metrics", "--log-level", "warning",
        "--pipemax-selector", "oldest", "--pipemax-budget-margin", "0.2",
    ])
    yield srv
    alive = srv.stop()
    assert not alive, f"children still alive after SIGTERM: {alive}"


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _post(server, path, body, **kw):
    return requests.post(server.url + path, json=body, timeout=120, **kw)


def test_generate_input_ids_equal_hf(server, tiny_model):
    prompts = random_prompts(4, 5, 40, seed=11)
    r = _post(server, "/generate", {"input_ids": prompts, "sampling_params": {
        "temperature": 0, "max_new_tokens": 12, "ignore_eos": True}})
    assert r.status_code == 200, r.text
    assert [o["output_ids"] for o in r.json()] == hf_greedy(tiny_model, prompts, 12)


def test_completions_stream_and_not(server, tiny_model, tok):
    prompt = "import os\nimport sys\n\ndef main("
    ref = tok.decode(hf_greedy(tiny_model, [tok(prompt)["input_ids"]], 10)[0])
    body = {"model": tiny_model, "prompt": prompt, "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    r = _post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == ref
    assert r.json()["usage"]["completion_tokens"] == 10

    chunks = _stream(server, "/v1/completions", body)
    assert "".join(c["choices"][0].get("text", "") for c in chunks if c["choices"]) == ref


def test_chat_completions_stream_and_not(server, tiny_model, tok):
    messages = [{"role": "system", "content": "You write Python."},
                {"role": "user", "content": "Open a file."}]
    ids = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
              add_special_tokens=False)["input_ids"]
    ref = tok.decode(hf_greedy(tiny_model, [ids], 10)[0])
    body = {"model": tiny_model, "messages": messages, "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    r = _post(server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == ref

    chunks = _stream(server, "/v1/chat/completions", body)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == ref


def _stream(server, path, body) -> list[dict]:
    r = _post(server, path, {**body, "stream": True}, stream=True)
    assert r.status_code == 200, r.text
    chunks = []
    for line in r.iter_lines(decode_unicode=True):
        if line and line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[len("data: "):]))
    assert chunks, "no stream chunks"
    return chunks


def test_pipemax_status_shows_config_on_every_stage(server):
    status = requests.get(server.url + "/pipemax/status", timeout=30).json()
    assert status["enabled"] is True
    assert status["config"]["selector"] == "oldest"
    assert status["config"]["budget_margin"] == 0.2
    assert [s["pp_rank"] for s in status["stages"]] == list(range(PP))
    for s in status["stages"]:
        assert s["scheduler"] == "PipeMaxScheduler"
        assert s["config"] == status["config"]
        assert psutil.pid_exists(s["pid"])


def test_metrics_endpoint_serves_prometheus_text(server):
    r = requests.get(server.url + "/metrics", timeout=30)
    assert r.status_code == 200
    assert "sglang:" in r.text


@pytest.mark.parametrize("bad", [
    ("/generate", "this is not json"),
    ("/generate", {"input_ids": [5, 6, 99999], "sampling_params": {"max_new_tokens": 4}}),
    ("/generate", {"input_ids": [5, -3], "sampling_params": {"max_new_tokens": 4}}),
    ("/v1/completions", {"model": "x", "prompt": "hi", "max_tokens": -5}),
    ("/v1/chat/completions", {"model": "x", "messages": "not a list"}),
], ids=["not-json", "id-over-vocab", "negative-id", "negative-max-tokens", "bad-messages"])
def test_malformed_request_gets_4xx_and_server_keeps_serving(server, tiny_model, bad):
    path, body = bad
    if isinstance(body, str):
        r = requests.post(server.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    else:
        r = _post(server, path, body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    ok = _post(server, "/generate", {"input_ids": [5, 6, 7], "sampling_params": {
        "temperature": 0, "max_new_tokens": 4, "ignore_eos": True}})
    assert ok.status_code == 200
    assert ok.json()["output_ids"] == hf_greedy(tiny_model, [[5, 6, 7]], 4)[0]


# ---- SGLang's frontend language against the server (sgl.RuntimeEndpoint) ------------------

def _ref_text(tiny_model, tok, prefix: str, n: int) -> str:
    """HF's greedy continuation of `prefix`, as text (the frontend sends text, not ids)."""
    ids = tok(prefix, add_special_tokens=False)["input_ids"]
    return tok.decode(hf_greedy(tiny_model, [ids], n)[0])


def _program():
    import sglang as sgl

    @sgl.function
    def review(s, module):
        s += f"# Review of {module}\n"
        s += "def first(" + sgl.gen("first", max_tokens=6, temperature=0, ignore_eos=True)
        s += "\nclass Second:" + sgl.gen("second", max_tokens=6, temperature=0, ignore_eos=True)
        s += "\n# verdict: " + sgl.select("verdict", choices=["keep", "rewrite", "delete"])
        s += "\nreturn " + sgl.gen("last", max_tokens=5, temperature=0, ignore_eos=True)

    return review


def _check_review_state(state, module, tiny_model, tok):
    text = state.text()
    prefix = f"# Review of {module}\ndef first("
    assert state["first"] == _ref_text(tiny_model, tok, prefix, 6)
    prefix += state["first"] + "\nclass Second:"
    assert state["second"] == _ref_text(tiny_model, tok, prefix, 6)
    assert state["verdict"] in ("keep", "rewrite", "delete")
    prefix += state["second"] + "\n# verdict: " + state["verdict"] + "\nreturn "
    assert state["last"] == _ref_text(tiny_model, tok, prefix, 5)
    assert text == prefix + state["last"]


def test_frontend_program_with_gens_and_select(server, tiny_model, tok):
    import sglang as sgl

    backend = sgl.RuntimeEndpoint(server.url)
    state = _program().run(module="os.path", backend=backend)
    _check_review_state(state, "os.path", tiny_model, tok)


def test_frontend_run_batch(server, tiny_model, tok):
    import sglang as sgl

    backend = sgl.RuntimeEndpoint(server.url)
    modules = ["json", "shutil", "typing"]
    states = _program().run_batch([{"module": m} for m in modules], backend=backend, num_threads=3)
    for m, state in zip(modules, states):
        _check_review_state(state, m, tiny_model, tok)


def test_frontend_roles(server, tiny_model, tok):
    import sglang as sgl

    @sgl.function
    def chat(s, question):
        s += sgl.system("You answer in Python.")
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=8, temperature=0, ignore_eos=True))

    state = chat.run(question="How do I read a file?", backend=sgl.RuntimeEndpoint(server.url))
    answer = state["answer"]
    msgs = state.messages()
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[-1]["content"].strip() == answer.strip()  # messages() strips the turn
    text = state.text()
    prefix = text[: text.rindex(answer)] if answer else text
    assert answer == _ref_text(tiny_model, tok, prefix, 8)
