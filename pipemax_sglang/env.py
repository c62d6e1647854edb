"""Every environment variable pipemax_sglang reads or sets, in one place.

PIPEMAX_CONFIG      JSON of the PipeMaxConfig, set by the entry points so that the spawned
                    SGLang scheduler processes receive it (spawn copies os.environ).
PIPEMAX_HOME        where built artefacts (the tiny model) are cached; default ~/.cache/pipemax_sglang.
PIPEMAX_DEBUG       1: log every PipeMax plan and rejoin (scheduler processes), for debugging.
PIPEMAX_CHILDREN_IGNORE_SIGINT
                    the pid of a batch runner (run_batch), set before it starts SGLang: the SGLang
                    processes it spawns ignore SIGINT (a terminal's Ctrl-C reaches the whole
                    process group; the runner stops them itself, after writing what is done).
PYTHONWARNINGS      Python's own; run_batch sets "ignore" (unless set, or --log-level debug) so
                    SGLang's and torch's import-time warnings stay off the user's console, in
                    every process it spawns too.
SGLANG_USE_CPU_ENGINE, SGLANG_CPU_OMP_THREADS_BIND
                    SGLang's own CPU switches; set by pipemax_sglang.sglang.platform when no GPU.
"""

from __future__ import annotations

import os
import warnings

CONFIG_VAR = "PIPEMAX_CONFIG"
HOME_VAR = "PIPEMAX_HOME"
DEBUG_VAR = "PIPEMAX_DEBUG"
CHILD_SIGINT_VAR = "PIPEMAX_CHILDREN_IGNORE_SIGINT"
WARNINGS_VAR = "PYTHONWARNINGS"
CPU_ENGINE_VAR = "SGLANG_USE_CPU_ENGINE"
CPU_BIND_VAR = "SGLANG_CPU_OMP_THREADS_BIND"


def home() -> str:
    return os.environ.get(HOME_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "pipemax_sglang")


def config_json() -> str | None:
    return os.environ.get(CONFIG_VAR)


def debug() -> bool:
    return os.environ.get(DEBUG_VAR) == "1"


def children_ignore_sigint() -> bool:
    """True in a process that run_batch's engine spawned (the variable holds the runner's pid;
    the runner itself, which sets it, keeps its own Ctrl-C handling)."""
    value = os.environ.get(CHILD_SIGINT_VAR)
    return bool(value) and value != str(os.getpid())


def silence_python_warnings() -> None:
    """Python warnings off in this process and, through the environment, in every process it
    spawns; a PYTHONWARNINGS the user set is theirs and is left alone."""
    if WARNINGS_VAR in os.environ:
        return
    os.environ[WARNINGS_VAR] = "ignore"
    warnings.simplefilter("ignore")
