"""PipeMaxScheduler: SGLang's Scheduler with PipeMax inside, one per (pp_rank, tp_rank) process.

Installed by the plugin (scheduler_install.py) in place of SGLang's Scheduler, in each spawned
scheduler process, when a PipeMax config is present. Thin on purpose (STYLE.md: SGLang's
Scheduler has six mixins; PipeMax's logic lives in its own objects): it holds the frozen
config, owns the stage's StatusBoard, and publishes what this stage received.

Caveat from SGLang's HookRegistry: `_propagate_patch` rebinds module-level `Scheduler` names
to this subclass, so methods here call `super()`, never `Scheduler.method(self)`.
"""

from __future__ import annotations

import os
import time

from sglang.srt.managers.scheduler import Scheduler

from pipemax_sglang import env
from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.runtime.status import StatusBoard
from pipemax_sglang.sglang import compat


class PipeMaxScheduler(Scheduler):
    def __init__(self, server_args, port_args):
        super().__init__(server_args, port_args)
        self.pipemax_config = PipeMaxConfig.from_json(env.config_json() or "{}")
        self.pipemax_ranks = compat.stage_ranks()
        self.pipemax_board = (
            StatusBoard(self.pipemax_config.status_dir, self.pipemax_ranks.pp_rank, self.pipemax_ranks.tp_rank)
            if self.pipemax_config.status_dir
            else None
        )
        self.pipemax_publish()

    def pipemax_status(self) -> dict:
        r = self.pipemax_ranks
        return {
            "pp_rank": r.pp_rank,
            "pp_size": r.pp_size,
            "tp_rank": r.tp_rank,
            "tp_size": r.tp_size,
            "micro_batches": r.pp_size + r.pp_async_batch_depth if r.pp_size > 1 else 1,
            "pid": os.getpid(),
            "scheduler": type(self).__name__,
            "config": self.pipemax_config.public_dict(),
            "device_kv_tokens": int(self.max_total_num_tokens),
            "hierarchical_cache": compat.hierarchical_cache_enabled(),
            "updated_at": time.time(),
        }

    def pipemax_publish(self) -> None:
        if self.pipemax_board is not None:
            self.pipemax_board.publish(self.pipemax_status())
