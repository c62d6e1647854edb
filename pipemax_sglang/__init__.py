"""PipeMax on SGLang: pipeline parallelism with CPU offloading of inactive micro-batches' KV.

    from pipemax_sglang import Engine, PipeMaxConfig

`Engine` is imported lazily: `pipemax_sglang.core` (the pure policy) must stay importable
without torch or sglang.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Engine", "PipeMaxConfig", "ConfigError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from pipemax_sglang.sglang.engine import Engine

        return Engine
    if name in ("PipeMaxConfig", "ConfigError"):
        from pipemax_sglang import config

        return getattr(config, name)
    raise AttributeError(f"module 'pipemax_sglang' has no attribute {name!r}")
