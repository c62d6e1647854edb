"""What a launch needs from the machine: CPU mode, CPU defaults, thread binding, environment.

Applied by every entry point (Engine, launch_server) before SGLang starts a process, so a user
sets nothing by hand (measured requirements: docs/sglang-on-cpu.md):

- No CUDA in torch -> CPU mode. The CPU environment's interpreter shim (cpu_shim/, installed by
  `make venv`, never by the GPU install) has already set SGLANG_USE_CPU_ENGINE and provides the
  sgl_kernel stand-in and the torchvision fix in every process; we check it is there.
- CPU defaults: without --max-total-tokens SGLang sizes the KV pool at 0.716 of RAM (15.6 GB,
  31 s of start-up here); we default it to CPU_DEFAULT_MAX_TOTAL_TOKENS unless the user set it
  or a memory fraction.
- dtype: SGLang's "auto" runs a float32 checkpoint in bfloat16. On our AVX2 CPUs bfloat16 has
  no hardware support, and its rounding ties near-equal logits (greedy then picks by index), so
  a float32 checkpoint runs in float32 on CPU unless the user chose a dtype.
- Thread binding: with more SGLang ranks on this node than NUMA nodes, SGLang's CPU path asserts
  (srt/utils/numa_utils.py:463) unless SGLANG_CPU_OMP_THREADS_BIND splits the cores; we split
  them (a value the user set is kept).
- The launch environment: PIPEMAX_CONFIG (the config each scheduler process reads) and the
  SGLANG_PLUGINS whitelist, if the user set one, extended with our plugin.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from typing import Any, Iterator

from pipemax_sglang import env
from pipemax_sglang.config import PipeMaxConfig

CPU_DEFAULT_MAX_TOTAL_TOKENS = 16384
PLUGIN_NAME = "pipemax"


class PlatformError(RuntimeError):
    pass


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def serial_ops() -> Iterator[None]:
    """On a CPU, the torch ops inside run on the calling thread alone (intra-op threads 1),
    then the scheduler's own setting comes back for the forward.

    Why: SGLang binds each rank's OpenMP threads to its own cores only with its AMX kernels;
    elsewhere every scheduler process keeps one intra-op thread per core, and some ops
    (repeat_interleave, advanced indexing) open a parallel region even for a few thousand
    elements. With the cores busy (the other stages' forwards, the copier threads) such an
    op waited for a thread that was not running: measured on our 2-core hosts, 8-13 ms for
    a repeat_interleave that takes 16 us on one thread, and a KV move's bookkeeping (index
    tensors of a few thousand entries) cost milliseconds. Nothing PipeMax computes per move
    is large enough to gain from threads. Toggling costs ~0.5 us. Does nothing on a GPU
    (the tables live on the device) or with one thread."""
    import torch

    n = torch.get_num_threads()
    if n <= 1 or on_gpu():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
def on_gpu() -> bool:
    """has_cuda(), asked once a process (torch asks the driver each time: per move here)."""
    return has_cuda()


def cpu_load_intervals() -> list[tuple[float, float]]:
    """(start, end) of the CPU H2D copier's jobs finished since the last call; none on a GPU
    (HiCache's CUDA stream is not timed here)."""
    from pipemax_sglang.sglang.cpu_backend import Links

    return Links.h2d.take_intervals() if Links.h2d is not None else []


def cpu_h2d_stats():
    """The CPU H2D copier's counters (busy and stalled seconds), or None (a GPU)."""
    from pipemax_sglang.sglang.cpu_backend import Links

    return Links.h2d.stats() if Links.h2d is not None else None


def check_link_emulation(config: PipeMaxConfig) -> None:
    """--pipemax-emulate-link-gbps throttles the CPU copier threads (cpu_backend.py); on a
    GPU, HiCache's copies run on CUDA streams that nothing here can throttle: refuse."""
    if config.emulate_link_gbps and has_cuda():
        from pipemax_sglang.config import ConfigError

        raise ConfigError("--pipemax-emulate-link-gbps emulates a link on CPU machines only; on a GPU "
                          "the real PCIe link runs the copies (drop the flag)")


def check_platform(config: PipeMaxConfig) -> None:
    """What the machine must offer the config (before any process starts)."""
    check_cpu_ready()
    check_link_emulation(config)


def check_cpu_ready() -> None:
    """On a machine without CUDA, the CPU shim must be active in this interpreter."""
    if has_cuda():
        return
    try:
        import pipemax_sglang_cpu  # noqa: F401  (installed with its .pth by `make venv`)
    except ImportError:
        raise PlatformError(
            "no CUDA GPU and the CPU shim (pipemax-sglang-cpu) is not installed: "
            "create the CPU environment with `make venv`"
        ) from None
    if os.environ.get(env.CPU_ENGINE_VAR) != "1":
        raise PlatformError(f"no CUDA GPU but {env.CPU_ENGINE_VAR} is not 1: CPU mode was switched off")


def checkpoint_dtype(model_path: str | None) -> str | None:
    """The dtype a local Hugging Face checkpoint declares in config.json, if any."""
    if not model_path:
        return None
    path = os.path.join(model_path, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    return cfg.get("torch_dtype") or cfg.get("dtype")


def cpu_server_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """SGLang keyword arguments with the CPU defaults filled in (no-op with CUDA)."""
    if has_cuda():
        return kwargs
    out = dict(kwargs)
    if out.get("max_total_tokens") is None and out.get("mem_fraction_static") is None:
        out["max_total_tokens"] = CPU_DEFAULT_MAX_TOTAL_TOKENS
    if out.get("dtype") in (None, "auto") and checkpoint_dtype(out.get("model_path")) == "float32":
        out["dtype"] = "float32"
    return out


def cpu_cli_defaults(argv: list[str]) -> list[str]:
    """The same defaults for an argv destined for SGLang's parser."""
    if has_cuda():
        return argv
    flags = _cli_flags(argv)
    out = list(argv)
    if not flags.keys() & {"--max-total-tokens", "--mem-fraction-static"}:
        out += ["--max-total-tokens", str(CPU_DEFAULT_MAX_TOTAL_TOKENS)]
    model = flags.get("--model-path") or flags.get("--model")
    if flags.get("--dtype", "auto") == "auto" and checkpoint_dtype(model) == "float32":
        out += ["--dtype", "float32"]
    return out


_TYPES = {"pp_size": int, "max_total_tokens": int, "page_size": int, "hicache_size": int,
          "hicache_ratio": float}
_BOOL_FLAGS = {"enable_hierarchical_cache", "disable_overlap_schedule", "disable_radix_cache"}


def argv_values(argv: list[str]) -> dict[str, Any]:
    """SGLang flags given in argv as {name: value} (name with underscores), for checks."""
    out: dict[str, Any] = {}
    for flag, value in _cli_flags(argv).items():
        name = flag[2:].replace("-", "_")
        if name in _BOOL_FLAGS:
            out[name] = True
        elif value is not None:
            out[name] = _TYPES.get(name, str)(value)
    return out




def _cli_flags(argv: list[str]) -> dict[str, str | None]:
    """{--flag: value} for `--flag value` and `--flag=value` forms (value None if absent)."""
    flags: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        if "=" in arg:
            name, value = arg.split("=", 1)
        else:
            name = arg
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            value = nxt if nxt is not None and not nxt.startswith("--") else None
        flags[name] = value
    return flags


def omp_binding(local_ranks: int, cores: list[int]) -> str:
    """SGLANG_CPU_OMP_THREADS_BIND value giving each local rank its own cores.

    >>> omp_binding(2, [0, 1])
    '0|1'
    >>> omp_binding(2, [0, 1, 2, 3, 4])
    '0-1|2-4'
    >>> omp_binding(4, [0, 1])        # more ranks than cores: share round-robin
    '0|1|0|1'
    """
    if local_ranks <= len(cores):
        bounds = [round(i * len(cores) / local_ranks) for i in range(local_ranks + 1)]
        parts = []
        for lo, hi in zip(bounds, bounds[1:]):
            chunk = cores[lo:hi]
            parts.append(str(chunk[0]) if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}")
        # contiguous ranges assume contiguous core ids; fall back to lists otherwise
        if all(c2 - c1 == 1 for c1, c2 in zip(cores, cores[1:])):
            return "|".join(parts)
        return "|".join(",".join(map(str, cores[lo:hi])) for lo, hi in zip(bounds, bounds[1:]))
    return "|".join(str(cores[i % len(cores)]) for i in range(local_ranks))


@contextlib.contextmanager
def launch_environment(config: PipeMaxConfig, local_ranks: int) -> Iterator[None]:
    """Environment for SGLang's spawned processes (spawn copies os.environ at start).

    Restored on exit, so an Engine created later in the same process gets its own.
    """
    saved = dict(os.environ)
    try:
        os.environ[env.CONFIG_VAR] = config.to_json()
        plugins = os.environ.get("SGLANG_PLUGINS")
        if plugins and PLUGIN_NAME not in plugins.split(","):
            os.environ["SGLANG_PLUGINS"] = f"{plugins},{PLUGIN_NAME}"
        if not has_cuda() and local_ranks > 1 and env.CPU_BIND_VAR not in os.environ:
            os.environ[env.CPU_BIND_VAR] = omp_binding(local_ranks, sorted(os.sched_getaffinity(0)))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def local_rank_count(pp_size: int, tp_size: int, dp_size: int = 1, nnodes: int = 1) -> int:
    return max(1, (pp_size * tp_size * dp_size) // max(1, nnodes))
