"""CPU mode, made automatic: defaults, thread binding, and the launch environment."""

from __future__ import annotations

import json
import os

import pytest

from pipemax_sglang import env
from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.sglang import platform


@pytest.mark.parametrize("ranks, cores, want", [
    (2, [0, 1], "0|1"),
    (2, [0, 1, 2, 3], "0-1|2-3"),
    (3, [0, 1, 2, 3, 4, 5, 6], "0-1|2-4|5-6"),
    (4, [0, 1], "0|1|0|1"),
    (2, [0, 2, 4, 6], "0,2|4,6"),
])
def test_omp_binding_gives_each_rank_its_cores(ranks, cores, want):
    assert platform.omp_binding(ranks, cores) == want
    assert len(want.split("|")) == ranks


def test_cpu_defaults_fill_only_what_is_missing(tiny_model):
    if platform.has_cuda():
        pytest.skip("CPU defaults apply without CUDA only")
    out = platform.cpu_server_defaults({"model_path": tiny_model})
    assert out["max_total_tokens"] == platform.CPU_DEFAULT_MAX_TOTAL_TOKENS
    assert out["dtype"] == "float32"  # the tiny checkpoint is float32
    kept = platform.cpu_server_defaults({"model_path": tiny_model, "max_total_tokens": 100, "dtype": "bfloat16"})
    assert kept["max_total_tokens"] == 100 and kept["dtype"] == "bfloat16"
    argv = platform.cpu_cli_defaults(["--model-path", tiny_model])
    assert argv[-4:] == ["--max-total-tokens", str(platform.CPU_DEFAULT_MAX_TOTAL_TOKENS), "--dtype", "float32"]
    assert platform.cpu_cli_defaults(["--model-path", tiny_model, "--dtype=bfloat16", "--max-total-tokens=64"]) == [
        "--model-path", tiny_model, "--dtype=bfloat16", "--max-total-tokens=64"]


def test_launch_environment_sets_and_restores(monkeypatch):
    monkeypatch.delenv(env.CONFIG_VAR, raising=False)
    monkeypatch.setenv("SGLANG_PLUGINS", "other")
    monkeypatch.delenv(env.CPU_BIND_VAR, raising=False)
    cfg = PipeMaxConfig(selector="fcfs", status_dir="run/status")
    with platform.launch_environment(cfg, local_ranks=2):
        assert PipeMaxConfig.from_json(os.environ[env.CONFIG_VAR]) == cfg
        assert json.loads(os.environ[env.CONFIG_VAR])["status_dir"] == "run/status"
        assert os.environ["SGLANG_PLUGINS"] == "other,pipemax"
        if not platform.has_cuda():
            assert len(os.environ[env.CPU_BIND_VAR].split("|")) == 2
    assert env.CONFIG_VAR not in os.environ
    assert os.environ["SGLANG_PLUGINS"] == "other"
    assert env.CPU_BIND_VAR not in os.environ


def test_user_binding_is_kept(monkeypatch):
    monkeypatch.setenv(env.CPU_BIND_VAR, "0-1|0-1")
    with platform.launch_environment(PipeMaxConfig(), local_ranks=2):
        assert os.environ[env.CPU_BIND_VAR] == "0-1|0-1"


def test_cpu_shim_is_active_in_this_interpreter():
    if platform.has_cuda():
        pytest.skip("the shim is for CPU environments")
    platform.check_cpu_ready()  # raises if the shim or the CPU switch is missing
    import sgl_kernel

    assert getattr(sgl_kernel, "PIPEMAX_STANDIN", False)
    with pytest.raises(NotImplementedError, match="not available on CPU"):
        sgl_kernel.some_cuda_kernel()
    with pytest.raises(ImportError):  # submodules stay missing, so SGLang's fallbacks apply
        import sgl_kernel.scalar_type  # noqa: F401
    import torchvision  # the CUDA torchvision wheel imports beside CPU torch

    assert torchvision.__version__


def test_link_emulation_is_refused_where_a_gpu_runs_the_copies(monkeypatch):
    from pipemax_sglang.config import ConfigError, PipeMaxConfig
    from pipemax_sglang.sglang import platform

    monkeypatch.setattr(platform, "has_cuda", lambda: True)
    with pytest.raises(ConfigError, match="emulate-link-gbps"):
        platform.check_link_emulation(PipeMaxConfig(emulate_link_gbps=1.0))
    platform.check_link_emulation(PipeMaxConfig())            # no flag: nothing to refuse
    monkeypatch.setattr(platform, "has_cuda", lambda: False)
    platform.check_link_emulation(PipeMaxConfig(emulate_link_gbps=1.0))   # CPU: the copier throttles


def test_serial_ops_runs_the_moves_on_one_thread_and_gives_the_forward_its_threads_back():
    import pytest
    import torch

    from pipemax_sglang.sglang import platform

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with platform.serial_ops():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with platform.serial_ops():
                raise KeyError("a move failed")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
