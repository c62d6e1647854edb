"""Model shapes, workloads and the planner's command line: the simulator's inputs."""

import json

import numpy as np
import pytest
from sim_cases import TINY_MODEL, tiny_machine

from pipemax_sglang.plan import launch_command, plan
from pipemax_sglang.sim import PRESETS, load_jsonl, load_model, sharegpt_like
from pipemax_sglang.sim.workload import Workload


@pytest.mark.parametrize("name,params_b,kv_kib", [("llama-2-13b", 13.0, 800),
                                                  ("qwen2.5-32b", 32.8, 256),
                                                  ("llama-3-70b", 70.6, 320)])
def test_presets_match_the_published_models(name, params_b, kv_kib):
    # KV a token = 2 * layers * kv_heads * head_dim * 2 B: 2*40*40*128*2, 2*64*8*128*2, 2*80*8*128*2
    m = PRESETS[name]
    assert m.params / 1e9 == pytest.approx(params_b, abs=0.05)
    assert m.kv_bytes_per_token == kv_kib * 1024


def test_a_config_json_path_loads_like_a_preset(tmp_path):
    cfg = {"num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64,
           "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256,
           "torch_dtype": "bfloat16"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = load_model(str(tmp_path))
    assert m.params == PRESETS["llama-3-70b"].params
    assert m.stage_kv(8) == (40960,) * 8
    with pytest.raises(ValueError):
        load_model(str(tmp_path / "missing"))


def test_stage_split_puts_embedding_first_and_head_last():
    held = TINY_MODEL.stage_params(8)
    assert held[0] - held[1] == TINY_MODEL.embed_params
    assert held[7] - held[1] == TINY_MODEL.head_params
    assert TINY_MODEL.stage_read_params(8)[0] == held[1]     # a gather, not a read


def test_sharegpt_like_is_seeded_and_filtered_as_vllm_samples_sharegpt():
    a, b, c = sharegpt_like(2000, seed=3), sharegpt_like(2000, seed=3), sharegpt_like(2000, seed=4)
    assert np.array_equal(a.prompt, b.prompt) and np.array_equal(a.output, b.output)
    assert not np.array_equal(a.prompt, c.prompt)
    assert a.prompt.min() >= 4 and a.output.min() >= 4
    assert a.prompt.max() <= 1024 and (a.prompt + a.output).max() <= 2048
    assert 180 < a.prompt.mean() < 300 and 150 < a.output.mean() < 260


def test_a_jsonl_trace_gives_its_lengths(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"prompt_len": 10, "output_len": 5}\n\n{"input_len": 7, "max_new_tokens": 2}\n')
    w = load_jsonl(p)
    assert w.prompt.tolist() == [10, 7] and w.output.tolist() == [5, 2]
    p.write_text('{"prompt": 10}\n')
    with pytest.raises(ValueError):
        load_jsonl(p)


def test_launch_command_spells_the_flags():
    cmd = launch_command("meta-llama/Meta-Llama-3-70B", 8, 12, 40, 61.44, 0.1)
    assert cmd == ("python -m pipemax_sglang.launch_server --model-path meta-llama/Meta-Llama-3-70B "
                   "--pp-size 8 --pp-async-batch-depth 4 --pp-max-micro-batch-size 40 "
                   "--pipemax-host-kv-gb 61.4 --pipemax-budget-margin 0.1 --pipemax-selector greedy")
    assert "--dp-size 2" in launch_command("m", 4, 6, 10, 1.0, 0.1, replicas=2)
    assert "--tp-size 2 --pp-size 4 --dp-size 1" not in launch_command("m", 4, 4, 10, 1.0, 0.1, tp=2)
    assert " --tp-size 2 --pp-size 4 " in launch_command("m", 4, 4, 10, 1.0, 0.1, tp=2)


def test_the_planner_searches_and_recommends_a_runnable_setting():
    rng = np.random.default_rng(0)
    work = Workload("small", rng.integers(50, 300, 40), rng.integers(5, 30, 40))
    pl = plan(TINY_MODEL, tiny_machine(host_gb=12.0), work, os_reserve_gb=8.0)
    b = pl.best
    pm = [c for c in pl.tried if c.family == "pipemax"]
    assert b.family == "pipemax" and b.micro_batches >= b.pp and pl.row_cap >= 1
    assert b.result.tok_s == max(c.result.tok_s for c in pm)
    assert {c.stage for c in pm} >= {"layout", "M", "margin", "cap"}
    assert {(c.tp, c.pp) for c in pm} >= {(1, 8), (2, 4), (4, 2)}   # pp 4 alone does not fit
    # where stock runs best as a hybrid at M = P = 2, PipeMax there is stock (nothing streams)
    pm42 = next(c for c in pm if (c.tp, c.pp, c.micro_batches) == (4, 2, 2))
    assert pm42.result.rejoined == 0
    # 4 GB left for KV, whole-model KV 16 KiB a token: 244,140 tokens; a stage holds 1/pp.
    assert pl.host_kv_tokens == int(4e9 / b.result.replicas // TINY_MODEL.kv_bytes_per_token)
    assert pl.host_kv_gb_per_stage == pytest.approx(
        pl.host_kv_tokens * max(TINY_MODEL.stage_kv(b.pp, b.tp)) / 1e9)
    # every baseline family at its best setting; the winner is the fastest of all
    assert set(pl.baselines) == {"tp", "tp4xpp2", "tp2xpp4", "pp", "td-pipe"}
    for name, c in pl.baselines.items():
        assert c.tok_s == max(x.tok_s for x in pl.tried if x.family == name)
    assert pl.winner.tok_s == max(c.tok_s for c in pl.tried)
    assert pl.best_baseline.tok_s == max(c.tok_s for c in pl.baselines.values())
    assert "best baseline" in pl.summary() and "stock pp" in pl.summary()
    assert pl.baselines["tp"].result.policy == "tp" and pl.baselines["tp2xpp4"].result.tp == 2


def test_the_cli_runs_one_configuration(capsys, tmp_path):
    from pathlib import Path

    from pipemax_sglang.sim.__main__ import main
    cfg = Path(__file__).parent / "fixtures" / "tiny_config"
    out = tmp_path / "r.json"
    assert main(["--model", str(cfg), "--gpu", "l40", "--gpus", "2", "--requests", "30", "--policy",
                 "pp,pipemax", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pipemax over pp:" in text and "of dT_max" in text
    res = json.loads(out.read_text())
    assert [r["policy"] for r in res] == ["pp", "pipemax"]
    assert all(r["output_tokens"] == res[0]["output_tokens"] for r in res)


def test_the_cli_takes_the_price_of_a_move():
    import argparse
    from pathlib import Path

    from pipemax_sglang.sim.__main__ import machine_from, main
    cfg = str(Path(__file__).parent / "fixtures" / "tiny_config")
    args = ["--model", cfg, "--gpu", "l40", "--gpus", "2", "--requests", "30", "--policy", "pipemax"]
    assert main(args + ["--move-us", "50"]) == 0
    ns = argparse.Namespace(gpu="l40", gpus=2, host_gb=64.0, gpus_per_switch=1, uplink_gbps=None,
                            move_us=50.0, move_turn_us=1500.0)
    price = machine_from(ns).move_price
    assert (price.turn_s, price.move_s) == (pytest.approx(1.5e-3), pytest.approx(50e-6))
    with pytest.raises(SystemExit):
        main(args + ["--move-us", "-1"])
    with pytest.raises(SystemExit):
        main(args + ["--move-turn-us", "-1"])


def test_the_cli_runs_a_hybrid_with_tp(tmp_path):
    from pathlib import Path

    from pipemax_sglang.sim.__main__ import main
    cfg = str(Path(__file__).parent / "fixtures" / "tiny_config")
    out = tmp_path / "r.json"
    assert main(["--model", cfg, "--gpu", "l40", "--gpus", "4", "--requests", "30", "--policy", "pp,pipemax",
                 "--tp", "2", "--pp", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [(r["policy"], r["tp"], r["pp"], r["replicas"]) for r in res] == [("pp", 2, 2, 1), ("pipemax", 2, 2, 1)]
