"""Installs PipeMax in an SGLang process that has a PipeMax config (scheduler processes).

Called from the plugin in every SGLang process. The config arrives in PIPEMAX_CONFIG (set by
pipemax_sglang's entry points before SGLang spawns its processes); without it, or with
--disable-pipemax, SGLang runs untouched. Two hooks:
- REPLACE SGLang's Scheduler class with PipeMaxScheduler;
- AROUND release_kv_cache: a parked request that finishes (its in-flight step hit a stop)
  holds no device KV of its own any more; PipeMax cleans it up instead of SGLang
  re-inserting it into the tree with a stale row. A request that was parked and runs again
  gives back its host tail (kv_moves.HostTail) after SGLang's own release.
"""

from __future__ import annotations

from pipemax_sglang import env
from pipemax_sglang.config import PipeMaxConfig


def configured() -> PipeMaxConfig | None:
    text = env.config_json()
    return PipeMaxConfig.from_json(text) if text else None


def release_kv_cache_around(original, req, tree_cache, *args, **kwargs):
    parked = getattr(req, "pipemax_parked", None)
    if parked is not None:
        return parked.owner.on_release(req)
    out = original(req, tree_cache, *args, **kwargs)
    if getattr(req, "pipemax_ring", None) is not None:
        # a request that was parked once and is running again keeps its host tail (a second
        # park copies only what it decoded since): it finished or was retracted, so give it back
        from pipemax_sglang.sglang import kv_moves

        kv_moves.release_ring(req, tree_cache)
    return out


def register_if_configured() -> bool:
    config = configured()
    if config is None or not config.enabled:
        return False
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from pipemax_sglang.sglang import compat
    from pipemax_sglang.sglang.scheduler import PipeMaxScheduler

    HookRegistry.register(compat.SCHEDULER_CLASS, PipeMaxScheduler, HookType.REPLACE)
    HookRegistry.register(compat.RELEASE_KV_CACHE, release_kv_cache_around, HookType.AROUND)
    return True
