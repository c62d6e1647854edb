"""Installs PipeMaxScheduler in place of SGLang's Scheduler when this process has a PipeMax config.

Called from the plugin in every SGLang process. The config arrives in PIPEMAX_CONFIG (set by
pipemax_sglang's entry points before SGLang spawns its processes); without it, or with
--disable-pipemax, SGLang's own Scheduler runs untouched.
"""

from __future__ import annotations

from pipemax_sglang import env
from pipemax_sglang.config import PipeMaxConfig


def configured() -> PipeMaxConfig | None:
    text = env.config_json()
    return PipeMaxConfig.from_json(text) if text else None


def register_if_configured() -> bool:
    config = configured()
    if config is None or not config.enabled:
        return False
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from pipemax_sglang.sglang import compat
    from pipemax_sglang.sglang.scheduler import PipeMaxScheduler

    HookRegistry.register(compat.SCHEDULER_CLASS, PipeMaxScheduler, HookType.REPLACE)
    return True
