"""PipeMax's counters for one scheduler process, and their JSON form (status board, Engine,
/pipemax/status). Plain numbers: the Prometheus gauges mirror them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class PipeMaxStats:
    parks: int = 0                 # requests parked (KV copied to host, row released)
    rejoins: int = 0               # requests rejoined without recompute
    parked_now: int = 0
    parked_peak: int = 0
    h2d_bytes: int = 0             # KV loaded back host -> device for rejoins
    reused_prefix_tokens: int = 0  # rejoins' prompt tokens the tree still held on the device
    d2h_bytes: int = 0             # KV newly written device -> host when parking
    prefetch_stall_s: float = 0.0  # time a turn waited for its prefetch to land
    kv_move_s: float = 0.0         # scheduler time spent parking, issuing prefetches, rejoining
    kv_move_cpu_s: float = 0.0     # the CPU the scheduler's thread used in those moves
                                   # (kv_move_s less this: waiting for a core or the GIL)
    copy_wait_s: float = 0.0       # time moves waited for a copy (not in kv_move_s): a rejoin
                                   # needing the device slots a park's copy to host still reads
                                   # (or a load its host slots: late_park_copies)
    own_s: float = 0.0             # scheduler time in PipeMax's hooks, moves included (do no harm)
    move_phase_s: dict = field(default_factory=dict)   # kv_move_s by phase: park, issue, rejoin
    park_copies: int = 0           # copies to host that parks made (one per micro-batch
                                   # parked at once; a pressed step's parks, one per group)
    rejoin_batches: int = 0        # rejoins done together (one per turn that rejoins)
    moved_kv_tokens: int = 0       # context tokens of every request parked or rejoined
    prefetch_deferred: int = 0     # planned rejoins that could not be brought back in time
    late_park_copies: int = 0      # park copies a load had to wait for (the turn order leaves
                                   # none: kv_moves' invariants; the tests hold it at 0)
    recomputes: int = 0            # requests SGLang retracted (its recompute path)
    host_full_skips: int = 0       # parks skipped because host memory was full (fallback)
    aborted_parked: int = 0        # aborts served from the parked pool
    aborted_prefetching: int = 0   # aborts of requests whose prefetch was under way
    handed_back: int = 0           # parked requests the watchdog gave to SGLang's own path
    plans: int = 0
    budget_bytes_total: int = 0
    plan_bytes_total: int = 0
    link_returned_bytes: int = 0   # planned bytes the issue did not load (a prompt relocked, a
                                   # rejoin deferred), given back to the next plans (stage 0)
    over_budget_plans: int = 0     # plans whose bytes exceeded their budget (must stay 0)
    # each prefetch window's load, the bytes its copy moves (counted where it is submitted,
    # kv_moves.load_many), against the budgets of the plans it serves
    windows: int = 0
    window_bytes_total: int = 0
    window_budget_total: int = 0
    windows_over_budget: int = 0
    window_utilisation_max: float = 0.0
    turns: int = 0
    effective_batch_sum: int = 0   # sum over decode turns of the batch size (resident + rejoined)
    rejoined_in_batch_sum: int = 0
    decode_turns: int = 0
    mb_rows_last: list[int] = field(default_factory=list)  # last decode batch size per micro-batch

    def record_window(self, budget_bytes: int, copied_bytes: int) -> None:
        self.windows += 1
        self.window_bytes_total += copied_bytes
        self.window_budget_total += budget_bytes
        self.windows_over_budget += copied_bytes > budget_bytes
        if budget_bytes > 0:
            self.window_utilisation_max = max(self.window_utilisation_max, copied_bytes / budget_bytes)

    @property
    def budget_utilisation(self) -> float:
        return self.plan_bytes_total / self.budget_bytes_total if self.budget_bytes_total else 0.0

    @property
    def effective_batch_mean(self) -> float:
        return self.effective_batch_sum / self.decode_turns if self.decode_turns else 0.0

    @property
    def kv_move_ms(self) -> float:
        """Scheduler milliseconds per park or rejoin: the CPU price of moving a request, which
        the decode steps it enables must repay (copies on the copier thread not included)."""
        moves = self.parks + self.rejoins
        return 1e3 * self.kv_move_s / moves if moves else 0.0

    @property
    def imbalance(self) -> float:
        """(max - min) / mean of the micro-batches' last decode sizes: 0 is balanced."""
        rows = [r for r in self.mb_rows_last if r > 0]
        if len(rows) < 2:
            return 0.0
        mean = sum(rows) / len(rows)
        return (max(rows) - min(rows)) / mean

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(budget_utilisation=self.budget_utilisation,
                   effective_batch_mean=self.effective_batch_mean, imbalance=self.imbalance,
                   kv_move_ms=self.kv_move_ms)
        return out
