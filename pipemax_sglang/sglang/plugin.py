"""PipeMax's SGLang plugin: the one function SGLang calls in each of its processes.

Registered as entry point `sglang.srt.plugins: pipemax` (pyproject.toml). SGLang's
`load_plugins()` runs it in the launcher, the Engine, every scheduler process and the
detokenizer (processes start with `spawn`, so hooks must be registered in each child; this
is the seam SGLang provides for it, docs/sglang-internals.md section 1).

What it installs, and when:
- always -> the out-of-vocabulary prompt guard (request_guard.py): a bad request gets a 400
  instead of taking the server down;
- no CUDA in torch -> the CPU transfer path of HiCache (cpu_backend.py);
- a PipeMax config in the environment (set by pipemax_sglang's entry points) that does not
  disable PipeMax -> PipeMaxScheduler in place of SGLang's Scheduler;
- a child of the batch runner (env.children_ignore_sigint) -> SIGINT ignored in this process:
  Ctrl-C reaches the whole process group, and the runner, not each child, decides what stops.
Plain SGLang usage in the same environment (no PIPEMAX_CONFIG) gets no PipeMax behaviour.
"""

from __future__ import annotations

from pipemax_sglang.sglang.version import check_sglang_version

check_sglang_version()

import signal
import threading

import torch

from pipemax_sglang import env


def register() -> None:
    if env.children_ignore_sigint() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pipemax_sglang.sglang import request_guard

    request_guard.register_hooks()
    if not torch.cuda.is_available():
        from pipemax_sglang.sglang import cpu_backend

        cpu_backend.register_hooks()
    from pipemax_sglang.sglang import scheduler_install

    scheduler_install.register_if_configured()
