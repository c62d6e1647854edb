"""PipeMax's figures in SGLang's Prometheus /metrics (with --enable-metrics).

Scheduler processes write prometheus_client gauges in multiprocess mode (SGLang sets
PROMETHEUS_MULTIPROC_DIR before spawning them, and its HTTP server collects every process's
files), labelled by pipeline stage and TP rank. Values mirror runtime/stats.py.
"""

from __future__ import annotations

GAUGES = {
    "h2d_bytes": "KV bytes loaded back host->device for rejoining requests",
    "d2h_bytes": "KV bytes newly written device->host when parking",
    "reused_prefix_tokens": "Rejoining requests' prompt tokens reused from the device tree (not loaded)",
    "link_returned_bytes": "Planned prefetch bytes not loaded (relocked prompts, deferred rejoins), returned to the link budget",
    "prefetch_stall_s": "Seconds turns waited for their prefetch to land",
    "budget_utilisation": "Planned prefetch bytes over budget bytes",
    "parked_now": "Requests parked in host memory now",
    "parked_peak": "Most requests parked at once",
    "effective_batch_mean": "Mean decode batch (resident plus rejoined) per turn",
    "imbalance": "(max - min) / mean of the micro-batches' last decode sizes",
    "recomputes": "Requests SGLang retracted for recompute",
    "parks": "Requests parked",
    "rejoins": "Requests rejoined without recompute",
    "over_budget_plans": "Plans whose bytes exceeded their budget",
    "kv_move_ms": "Scheduler milliseconds per park or rejoin",
    "copy_wait_s": "Seconds moves waited for a copy (to free device room, or to finish writing host slots a load reads)",
    "late_park_copies": "Park copies a load had to wait for (must stay 0: the turn order orders them)",
}


class PipeMaxMetrics:
    def __init__(self, pp_rank: int, tp_rank: int) -> None:
        from prometheus_client import Gauge

        self.labels = {"pp_rank": str(pp_rank), "tp_rank": str(tp_rank)}
        self.gauges = {
            name: Gauge(f"pipemax:{name}", doc, labelnames=list(self.labels), multiprocess_mode="mostrecent")
            for name, doc in GAUGES.items()
        }

    def update(self, stats: dict) -> None:
        for name, gauge in self.gauges.items():
            gauge.labels(**self.labels).set(float(stats.get(name, 0)))
