"""PipeMaxScheduler: SGLang's Scheduler with PipeMax inside, one per (pp_rank, tp_rank) process.

Installed by the plugin (scheduler_install.py) in place of SGLang's Scheduler, in each spawned
scheduler process, when a PipeMax config is present. Thin on purpose (docs/design.md section 6: SGLang's
Scheduler has six mixins): every override hands over to PipeMaxStage (stage.py) at one of the
points where SGLang's PP loop and its normal loop meet:

    ingest_requests        plans relayed by stage 0 arrive; parks applied, overdue prefetches
    get_next_batch_to_run  rejoins merged before SGLang builds the batch; decision after
    run_batch              the next turn's prefetches issued before the forward; step time
                           measured (stage 0's cost model)
    _pp_process_batch_result  parked requests whose last result came in release their rows
    abort_request, is_fully_idle, _should_defer_prefill, update_running_batch
                           parked requests are visible to aborts, idleness, admission and
                           the recompute count

Caveat from SGLang's HookRegistry: `_propagate_patch` rebinds module-level `Scheduler` names
to this subclass, so methods here call `super()`, never `Scheduler.method(self)`.
"""

from __future__ import annotations

import os
import time

from sglang.srt.managers.scheduler import Scheduler
from sglang.utils import TypeBasedDispatcher

from pipemax_sglang import env
from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.runtime.status import StatusBoard
from pipemax_sglang.sglang import compat
from pipemax_sglang.sglang.messages import PipeMaxPlan
from pipemax_sglang.sglang.metrics import PipeMaxMetrics
from pipemax_sglang.sglang.stage import PipeMaxStage

STATUS_EVERY_S = 2.0    # a busy report costs ~1.7 ms (py-spy/own_s); Prometheus scrapes every 15 s
IDLE_SETTLE_S = 0.1


class PipeMaxScheduler(Scheduler):
    def __init__(self, server_args, port_args):
        self.pipemax = None  # dispatcher and hooks may run during super().__init__
        self.pipemax_launch_events = {}
        super().__init__(server_args, port_args)
        self.pipemax_config = PipeMaxConfig.from_json(env.config_json() or "{}")
        self.pipemax_ranks = compat.stage_ranks()
        self.pipemax = PipeMaxStage(self, self.pipemax_config, self.pipemax_ranks)
        self.pipemax_board = (
            StatusBoard(self.pipemax_config.status_dir, self.pipemax_ranks.pp_rank, self.pipemax_ranks.tp_rank)
            if self.pipemax_config.status_dir
            else None
        )
        self._pipemax_published = (0.0, -1, False)   # (when, turn, idle) of the last report
        self._pipemax_idle_since: float | None = None
        self.pipemax_metrics = compat.metrics_enabled() and PipeMaxMetrics(
            self.pipemax_ranks.pp_rank, self.pipemax_ranks.tp_rank)
        self._pipemax_publish_now(idle=True)

    # ---- status --------------------------------------------------------------------------
    def pipemax_status(self, idle: bool = False) -> dict:
        r = self.pipemax_ranks
        return {
            "pp_rank": r.pp_rank,
            "pp_size": r.pp_size,
            "tp_rank": r.tp_rank,
            "tp_size": r.tp_size,
            "micro_batches": self.pipemax.M if self.pipemax else None,
            "pid": os.getpid(),
            "scheduler": type(self).__name__,
            "config": self.pipemax_config.public_dict(),
            "device_kv_tokens": int(self.max_total_num_tokens),
            "kv_bytes_per_token": compat.kv_bytes_per_token(self),
            "hierarchical_cache": compat.hierarchical_cache_enabled(),
            "pipemax": self.pipemax.status(samples=idle) if self.pipemax else {},
            "pools": compat.pool_usage(self),
            "idle": idle,
            "updated_at": time.time(),
        }

    def pipemax_publish(self, idle: bool = False) -> None:
        """Report at most every STATUS_EVERY_S while busy, and once on going idle (so a
        reader after a batch sees the final figures without the idle loop rewriting them),
        once the scheduler has stayed idle for IDLE_SETTLE_S: within a batch a stage is
        "fully idle" for moments between micro-batches (its own queue empty while the
        others compute), and publishing there, each time with the step samples, cost a
        pp 2 stage ~3% of its time (py-spy) where PipeMax moved nothing. SGLang's loop
        polls while idle, so the settled report follows within a poll."""
        now = time.monotonic()
        last, last_turn, last_idle = self._pipemax_published
        turn = self.pipemax.turn if self.pipemax else 0
        if idle:
            if self._pipemax_idle_since is None:
                self._pipemax_idle_since = now
            due = ((turn != last_turn or not last_idle)
                   and now - self._pipemax_idle_since >= IDLE_SETTLE_S)
        else:
            self._pipemax_idle_since = None
            due = last_idle or now - last >= STATUS_EVERY_S
        if not due:
            return
        self._pipemax_publish_now(idle, now, turn)

    def _pipemax_publish_now(self, idle: bool, now: float | None = None, turn: int = 0) -> None:
        self._pipemax_published = (time.monotonic() if now is None else now, turn, idle)
        status = self.pipemax_status(idle)
        if self.pipemax_board is not None:
            self.pipemax_board.publish(status)
        if self.pipemax_metrics:
            self.pipemax_metrics.update(status["pipemax"])

    # ---- the relay of stage 0's decisions -------------------------------------------------
    def init_request_dispatcher(self):
        super().init_request_dispatcher()
        self._request_dispatcher += TypeBasedDispatcher([(PipeMaxPlan, self._pipemax_on_plan)])

    def _pipemax_on_plan(self, msg: PipeMaxPlan):
        t0 = time.perf_counter()
        self.pipemax.on_plan(msg)
        self._pipemax_own(t0)

    def _poll_timeout_aborts(self):
        out = super()._poll_timeout_aborts()
        if self.pipemax is not None:
            t0 = time.perf_counter()
            out = list(out) + self.pipemax.drain_outbox()
            self._pipemax_own(t0)
        return out

    def ingest_requests(self, *args, **kwargs):
        recv = super().ingest_requests(*args, **kwargs)
        if self.pipemax is not None:
            t0 = time.perf_counter()
            for req in self.pipemax.reap_aborted():
                compat.send_abort(self, req, None)
            self.pipemax.issue_prefetches()
            self._pipemax_own(t0)
        return recv

    def _pipemax_own(self, since: float) -> None:
        """Charge the time since `since` to PipeMax's own scheduler time (stats.own_s: the
        do-no-harm meter, moves included)."""
        self.pipemax.stats.own_s += time.perf_counter() - since

    # ---- the turn ------------------------------------------------------------------------
    def get_next_batch_to_run(self, running_batch, last_batch):
        stage = self.pipemax
        t0 = time.perf_counter()
        mb = stage.turn % stage.M
        running_batch = stage.before_turn(running_batch)
        t1 = time.perf_counter()
        plan = super().get_next_batch_to_run(running_batch=running_batch, last_batch=last_batch)
        t2 = time.perf_counter()
        stage.after_turn(mb, plan)
        if plan.batch_to_run is not None or stage.busy():
            self.pipemax_publish()
        self._pipemax_own(t0 + (t2 - t1))
        return plan

    def run_batch(self, batch, *args, **kwargs):
        t0 = time.perf_counter()
        self.pipemax.issue_prefetches(at_launch=True)
        start = time.perf_counter()
        result = super().run_batch(batch, *args, **kwargs)
        end = time.perf_counter()
        self.pipemax.observe_step(batch, start, end - start)
        self._pipemax_own(t0 + (end - start))
        return result

    def _pp_launch_batch(self, mb_id, *args, **kwargs):
        result, event = super()._pp_launch_batch(mb_id, *args, **kwargs)
        self.pipemax_launch_events[mb_id] = event   # parks order their D2H after it (GPU)
        return result, event

    def _pp_process_batch_result(self, batch, output_result):
        super()._pp_process_batch_result(batch, output_result)
        t0 = time.perf_counter()
        self.pipemax.after_result(batch)
        compat.settle_snapshot(batch)
        self._pipemax_own(t0)

    def update_running_batch(self, batch):
        t0 = time.perf_counter()
        self.pipemax.make_decode_room(batch)
        self._pipemax_own(t0)
        before = len(self.waiting_queue)
        out = super().update_running_batch(batch)
        # retract_decode puts requests back in the waiting queue: SGLang's recompute path
        self.pipemax.stats.recomputes += max(0, len(self.waiting_queue) - before)
        return out

    # ---- visibility of parked requests ---------------------------------------------------
    def _should_defer_prefill(self, running_batch) -> bool:
        if super()._should_defer_prefill(running_batch):
            return True
        t0 = time.perf_counter()
        defer = self.pipemax.defer_admission(running_batch)
        self._pipemax_own(t0)
        return defer

    def is_fully_idle(self, *args, **kwargs) -> bool:
        idle = super().is_fully_idle(*args, **kwargs)
        if idle and self.pipemax is not None and self.pipemax.busy():
            return False
        if idle and self.pipemax is not None:
            t0 = time.perf_counter()
            self.pipemax_publish(idle=True)
            self._pipemax_own(t0)
        return idle

    def abort_request(self, recv_req):
        for req in self.pipemax.abort(recv_req.rid, recv_req.abort_all):
            compat.send_abort(self, req, recv_req)
        return super().abort_request(recv_req)
