"""Every environment variable pipemax_sglang reads or sets, in one place.

PIPEMAX_CONFIG      JSON of the PipeMaxConfig, set by the entry points so that the spawned
                    SGLang scheduler processes receive it (spawn copies os.environ).
PIPEMAX_HOME        where built artefacts (the tiny model) are cached; default ~/.cache/pipemax_sglang.
PIPEMAX_DEBUG       1: log every PipeMax plan and rejoin (scheduler processes), for debugging.
SGLANG_USE_CPU_ENGINE, SGLANG_CPU_OMP_THREADS_BIND
                    SGLang's own CPU switches; set by pipemax_sglang.sglang.platform when no GPU.
"""

from __future__ import annotations

import os

CONFIG_VAR = "PIPEMAX_CONFIG"
HOME_VAR = "PIPEMAX_HOME"
DEBUG_VAR = "PIPEMAX_DEBUG"
CPU_ENGINE_VAR = "SGLANG_USE_CPU_ENGINE"
CPU_BIND_VAR = "SGLANG_CPU_OMP_THREADS_BIND"


def home() -> str:
    return os.environ.get(HOME_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "pipemax_sglang")


def config_json() -> str | None:
    return os.environ.get(CONFIG_VAR)


def debug() -> bool:
    return os.environ.get(DEBUG_VAR) == "1"
