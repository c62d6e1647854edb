"""Every access to SGLang 0.5.23 internals that has no public API, in one place beside the pin.

When the pin moves (version.py), this module and the scheduler subclass's overridden method
names are what to re-read against the new source. Paths below are those of 0.5.23.
"""

from __future__ import annotations

from typing import NamedTuple

from sglang.srt.runtime_context import get_memory, get_parallel

# HookRegistry targets (dotted paths resolved by sglang.srt.plugins.hook_registry).
SCHEDULER_CLASS = "sglang.srt.managers.scheduler.Scheduler"


class StageRanks(NamedTuple):
    pp_rank: int
    pp_size: int
    tp_rank: int
    tp_size: int
    pp_async_batch_depth: int


def stage_ranks() -> StageRanks:
    """This scheduler process's place in the pipeline (srt/runtime_context.py:1285)."""
    p = get_parallel()
    return StageRanks(p.pp_rank, p.pp_size, p.tp_rank, p.tp_size, p.pp_async_batch_depth)


def hierarchical_cache_enabled() -> bool:
    return bool(get_memory().enable_hierarchical_cache)
