"""pipemax_sglang.Engine: SGLang's offline Engine with PipeMax's options as keyword arguments.

    engine = pipemax_sglang.Engine(model_path=..., pp_size=2, pipemax_selector="greedy")
    outputs = engine.generate(prompts, sampling_params)
    engine.pipemax_status()       # what every PP stage received and reports

Everything that is not `pipemax_*` / `disable_pipemax` goes to sglang.Engine unchanged. The
PipeMax options are validated (alone and against SGLang's arguments) before any process starts.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from pipemax_sglang.sglang.version import check_sglang_version

check_sglang_version()

from sglang.srt.entrypoints.engine import Engine as SGLangEngine

from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.runtime.status import StatusBoard
from pipemax_sglang.sglang import platform


class Engine(SGLangEngine):
    def __init__(self, **kwargs: Any) -> None:
        config, sgl_kwargs = PipeMaxConfig.from_kwargs(kwargs)
        server_view = sgl_kwargs.get("server_args") or SimpleNamespace(**sgl_kwargs)
        config.check_server_args(server_view)
        platform.check_platform(config)
        if "server_args" not in sgl_kwargs:
            sgl_kwargs = platform.cpu_server_defaults(sgl_kwargs)
            sgl_kwargs.update(config.sglang_overrides(sgl_kwargs))
        owned_dir = None
        if config.status_dir is None:
            owned_dir = tempfile.mkdtemp(prefix="pipemax-status-")
            config = config.with_status_dir(owned_dir)
        self.pipemax_config = config
        self._pipemax_owned_dir = owned_dir
        ranks = platform.local_rank_count(
            getattr(server_view, "pp_size", 1) or 1,
            getattr(server_view, "tp_size", 1) or 1,
            getattr(server_view, "dp_size", 1) or 1,
            getattr(server_view, "nnodes", 1) or 1,
        )
        try:
            with platform.launch_environment(config, ranks):
                super().__init__(**sgl_kwargs)
        except BaseException:
            self._pipemax_cleanup()
            raise

    def pipemax_status(self, wait_idle_s: float = 10.0) -> dict[str, Any]:
        """The config as given, and each scheduler process's report (one per PP/TP rank).

        A scheduler reports as soon as work arrives and once more when it goes idle, so after
        a batch this waits up to `wait_idle_s` for every stage's idle (final) report."""
        deadline = time.monotonic() + wait_idle_s
        while True:
            stages = StatusBoard.read(self.pipemax_config.status_dir)
            fresh = stages and all(s.get("idle") for s in stages)
            if fresh or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return {
            "enabled": self.pipemax_config.enabled,
            "config": self.pipemax_config.public_dict(),
            "stages": stages,
        }

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self._pipemax_cleanup()

    def _pipemax_cleanup(self) -> None:
        if self._pipemax_owned_dir:
            shutil.rmtree(self._pipemax_owned_dir, ignore_errors=True)
            self._pipemax_owned_dir = None
