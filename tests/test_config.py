"""PipeMaxConfig: every way in gives the same frozen object; bad input is one clear line."""

from __future__ import annotations

import dataclasses

import pytest

from pipemax_sglang.config import SELECTORS, ConfigError, PipeMaxConfig


def test_cli_takes_pipemax_flags_and_leaves_sglang_flags():
    cfg, rest = PipeMaxConfig.from_cli([
        "--model-path", "m", "--pipemax-selector", "fcfs", "--pp-size", "2",
        "--pipemax-budget-margin=0.25", "--pipemax-host-kv-gb", "8", "--pipemax-emulate-link-gbps", "2.5",
    ])
    assert rest == ["--model-path", "m", "--pp-size", "2"]
    assert cfg == PipeMaxConfig(selector="fcfs", budget_margin=0.25, host_kv_gb=8.0, emulate_link_gbps=2.5)


def test_kwargs_and_cli_agree():
    cli, _ = PipeMaxConfig.from_cli(["--pipemax-selector", "oldest", "--pipemax-host-kv-tokens", "5000"])
    kw, rest = PipeMaxConfig.from_kwargs({"pipemax_selector": "oldest", "pipemax_host_kv_tokens": 5000, "pp_size": 2})
    assert cli == kw
    assert rest == {"pp_size": 2}


def test_engine_kwargs_rebuild_the_config():
    for cfg in (PipeMaxConfig(selector="fcfs", host_kv_tokens=4096, stream="never", status_dir="status-s"),
                PipeMaxConfig(enabled=False, emulate_link_gbps=2.0)):
        back, rest = PipeMaxConfig.from_kwargs(cfg.engine_kwargs())
        assert back == cfg and back.status_dir == cfg.status_dir
        assert rest == {}


def test_disable_flag_and_kwarg():
    assert PipeMaxConfig.from_cli(["--disable-pipemax"])[0].enabled is False
    assert PipeMaxConfig.from_kwargs({"disable_pipemax": True})[0].enabled is False
    # the emulated link is the machine's, so stock runs may share it
    stock, _ = PipeMaxConfig.from_cli(["--disable-pipemax", "--pipemax-emulate-link-gbps", "4"])
    assert stock.emulate_link_gbps == 4.0


def test_json_round_trip_keeps_every_field():
    cfg = PipeMaxConfig(selector="shortest", budget_margin=0.3, host_kv_gb=1.5, record_batches=True,
                        status_dir="run/status")
    back = PipeMaxConfig.from_json(cfg.to_json())
    assert back == cfg and back.status_dir == "run/status"


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PipeMaxConfig().selector = "fcfs"  # type: ignore[misc]


@pytest.mark.parametrize("argv, needle", [
    (["--pipemax-selector", "magic"], "--pipemax-selector must be one of"),
    (["--pipemax-stream", "sometimes"], "--pipemax-stream must be one of auto, always, never"),
    (["--pipemax-budget-margin", "1.0"], "--pipemax-budget-margin must be in [0, 1)"),
    (["--pipemax-budget-margin", "-0.1"], "--pipemax-budget-margin must be in [0, 1)"),
    (["--pipemax-budget-margin", "lots"], "invalid float value"),
    (["--pipemax-host-kv-gb", "0"], "--pipemax-host-kv-gb must be a positive"),
    (["--pipemax-host-kv-gb", "nan"], "--pipemax-host-kv-gb must be a positive"),
    (["--pipemax-host-kv-tokens", "-4"], "--pipemax-host-kv-tokens must be a positive"),
    (["--pipemax-host-kv-gb", "1", "--pipemax-host-kv-tokens", "10"], "exclusive"),
    (["--pipemax-emulate-link-gbps", "0"], "--pipemax-emulate-link-gbps must be a positive"),
    (["--disable-pipemax", "--pipemax-selector", "fcfs"], "no effect with --disable-pipemax"),
    (["--pipemax-selectr", "fcfs"], "unknown PipeMax flag --pipemax-selectr"),
])
def test_bad_values_raise_one_line(argv, needle):
    with pytest.raises(ConfigError) as e:
        PipeMaxConfig.from_cli(argv)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_kwarg_is_rejected():
    with pytest.raises(ConfigError, match="unknown PipeMax option pipemax_selectr"):
        PipeMaxConfig.from_kwargs({"pipemax_selectr": "fcfs"})


def test_combination_with_sglang_args():
    class Args:
        disable_radix_cache = True

    with pytest.raises(ConfigError, match="--disable-radix-cache"):
        PipeMaxConfig().check_server_args(Args())
    PipeMaxConfig(enabled=False).check_server_args(Args())  # stock SGLang may do as it likes


def test_stream_modes_parse_from_cli_and_kwargs():
    cli, _ = PipeMaxConfig.from_cli(["--pipemax-stream", "never"])
    kw, _ = PipeMaxConfig.from_kwargs({"pipemax_stream": "never"})
    assert cli == kw == PipeMaxConfig(stream="never")
    assert PipeMaxConfig().stream == "auto"


def test_every_selector_name_is_accepted():
    for name in SELECTORS:
        assert PipeMaxConfig(selector=name).selector == name
